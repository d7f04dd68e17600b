"""The package's layers (docs/design.md, "Layers"): every module belongs to one layer, imports
only from its own layer or the layers below, the roles of one layer stay out of each other,
and no import cycle exists, counting function-local, ``TYPE_CHECKING`` and
``importlib.import_module`` imports.

The import graph is read from the source with :mod:`ast`; nothing is imported, so a cycle that
Python would tolerate (an import inside a function) is found all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "capsim"

#: Lowest first. A module may import from its own layer and from the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "primitives",
        (
            "capsim._version",
            "capsim.errors",
            "capsim._validate",
            "capsim._des",
            "capsim.crypto",
            "capsim.sm",
            "capsim.apdu",
            "capsim.tags",
            "capsim.tlv",
            "capsim.codelayout",
            "capsim.iad",
            "capsim.jsonlimits",
            "capsim.atomicfile",
            "capsim.issuerkeys",
            "capsim.transcript",
            "capsim.hexinput",
        ),
    ),
    ("emv", ("capsim.cap", "capsim.profiles")),
    ("roles", ("capsim.cards", "capsim.storage", "capsim.reader", "capsim.verifier")),
    ("transports", ("capsim.transports",)),
    (
        "applications",
        (
            "capsim.service",
            "capsim.client",
            "capsim.client_certs",
            "capsim._clientparts",
            "capsim.testing",
            "capsim.cli",
            "capsim.__main__",
            "capsim.analysis",
            "capsim.probe",
        ),
    ),
)

#: Roles of one layer that must not import each other (the card, the reader and the bank).
INDEPENDENT: tuple[tuple[str, ...], ...] = (
    ("capsim.cards", "capsim.storage"),
    ("capsim.reader",),
    ("capsim.verifier",),
)

#: The command line is the top: nothing else imports it.
TOP = ("capsim.cli", "capsim.__main__")

#: The package's own ``__init__`` only re-exports (lazily) for ``import capsim`` users.
FACADE = "capsim"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    """One import of a capsim module: who, what, where."""

    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every capsim import in ``path``: module level, in functions, under ``TYPE_CHECKING``, and
    module names given to ``importlib.import_module`` as string constants."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    dynamic = any(
        (isinstance(node, ast.Attribute) and node.attr == "import_module")
        or (isinstance(node, ast.Name) and node.id == "import_module")
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _within(alias.name, "capsim"):
                    yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if not _within(source, "capsim"):
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                yield Import(module, full if full in known else source, node.lineno)
        elif dynamic and isinstance(node, ast.Constant) and node.value in known:
            yield Import(module, node.value, node.lineno)


def _graph() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    known = set(modules)
    imports = [imp for name, path in modules.items() for imp in _imports_of(name, path, known)]
    return modules, imports


def _layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(_within(module, p) for p in prefixes):
            return index
    return None


def _role_of(module: str) -> int | None:
    for index, prefixes in enumerate(INDEPENDENT):
        if any(_within(module, p) for p in prefixes):
            return index
    return None


def layer_violations(imports: list[Import]) -> list[str]:
    """Imports that go up a layer, across roles, or into the command line."""
    problems = []
    for imp in imports:
        if imp.importer == FACADE:
            continue
        src, dst = _layer_of(imp.importer), _layer_of(imp.imported)
        if dst is None and imp.imported == FACADE:
            problems.append(f"{imp}: only users import the capsim facade")
            continue
        if src is None or dst is None:
            continue  # reported by test_every_module_has_a_layer
        if dst > src:
            problems.append(f"{imp}: {LAYERS[src][0]} may not import from {LAYERS[dst][0]}")
        src_role, dst_role = _role_of(imp.importer), _role_of(imp.imported)
        if src_role is not None and dst_role is not None and src_role != dst_role:
            problems.append(f"{imp}: the card, the reader and the verifier do not import each other")
        if any(_within(imp.imported, t) for t in TOP) and not any(_within(imp.importer, t) for t in TOP):
            problems.append(f"{imp}: nothing below the command line imports it")
    return problems


def import_cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module.

    Importing ``a.b.c`` runs ``a/b/__init__.py`` first, so an import from outside a package
    also counts as an import of the package itself (a module inside it gets its package for
    free: Python has started it already).
    """
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        if imp.imported not in edges or imp.imported == imp.importer:
            continue
        edges[imp.importer].add(imp.imported)
        parent = imp.imported.rpartition(".")[0]
        while parent and parent != FACADE:
            if parent in edges and not _within(imp.importer, parent):
                edges[imp.importer].add(parent)
            parent = parent.rpartition(".")[0]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's algorithm (the graph has ~150 nodes: recursion is fine)
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return found


# ------------------------------------------------------------------------------------ tests


def test_every_module_has_a_layer() -> None:
    modules, _ = _graph()
    unplaced = sorted(m for m in modules if m != FACADE and _layer_of(m) is None)
    assert unplaced == [], "add these modules to a layer in tests/test_layers.py and docs/design.md"


def test_no_import_goes_up_a_layer_or_across_roles() -> None:
    _, imports = _graph()
    assert layer_violations(imports) == []


def test_no_import_cycle() -> None:
    modules, imports = _graph()
    assert import_cycles(modules, imports) == []


def test_the_graph_sees_function_local_and_type_checking_imports() -> None:
    """The checker itself: the imports it must see are seen, a planted cycle and a planted
    violation are found."""
    modules, imports = _graph()
    pairs = {(i.importer, i.imported) for i in imports}
    # function-local: the registry imports its schemes' modules on first use
    assert ("capsim.transports", "capsim.transports.inprocess") in pairs
    # TYPE_CHECKING and import_module tables of the lazy facade
    assert ("capsim.verifier", "capsim.verifier.service") in pairs
    assert ("capsim", "capsim.reader") in pairs
    planted = [*imports, Import("capsim.tlv", "capsim.cap", 1), Import("capsim.cap", "capsim.tlv", 1)]
    assert any({"capsim.cap", "capsim.tlv"} <= set(c) for c in import_cycles(modules, planted))
    assert layer_violations([Import("capsim.tlv", "capsim.cap", 1)])
    assert layer_violations([Import("capsim.reader.session", "capsim.cards.base", 1)])
    assert layer_violations([Import("capsim.testing.model", "capsim.cli._common", 1)])
    # a module importing a package's submodule from outside also imports the package
    outside = [
        Import("capsim.cards.base", "capsim.storage", 1),
        Import("capsim.storage", "capsim.cards.state", 1),
    ]
    cycles = import_cycles(modules, [*imports, *outside])
    assert any({"capsim.cards", "capsim.storage"} <= set(c) for c in cycles)


@pytest.mark.parametrize(
    ("public", "name"),
    [
        ("capsim.storage", "read_card_file"),
        ("capsim.storage", "CardFile"),
        ("capsim.storage", "CardFileLock"),
        ("capsim.storage", "create_card_file"),
        ("capsim.storage", "IssuerKeys"),
        ("capsim.storage", "load_issuer_keys"),
        ("capsim.storage", "save_issuer_keys"),
        ("capsim.storage", "MAX_FILE_BYTES"),
        ("capsim.transports.replay", "write_transcript"),
        ("capsim.transports.replay", "read_transcript"),
        ("capsim.transports.replay", "RecordedSession"),
        ("capsim.transports.replay", "MAX_TRANSCRIPT_BYTES"),
        ("capsim.verifier.dburl", "redact_db_url"),
        ("capsim.verifier.dburl", "parse_db_url"),
        ("capsim.verifier.dburl", "open_store"),
    ],
)
def test_moved_names_keep_their_public_import_paths(public: str, name: str) -> None:
    import importlib

    assert getattr(importlib.import_module(public), name) is not None
