"""Coverage-guided fuzzing with atheris (optional extra ``capsim[fuzz]``).

Three targets, each a function of one ``bytes`` input that raises :class:`AssertionError`
(an atheris finding) when an invariant breaks, and nothing otherwise:

``apdu``
    :meth:`capsim.apdu.CommandApdu.from_bytes` and :meth:`capsim.apdu.ResponseApdu.from_bytes`
    raise only capsim errors, and what they accept encodes back to an equal value.
``tlv``
    :func:`capsim.tlv.decode` raises only :class:`~capsim.errors.ApduFormatError`; what it
    accepts re-encodes to bytes that decode to the same objects; :func:`capsim.tlv.parse_dol`
    likewise.
``card``
    The input is split into APDUs (each prefixed by its length byte) and sent to a fresh
    ``secur-acces`` card after SELECT; every answer must pass
    :class:`capsim.testing.model.CardModel`.

:func:`seed_corpus` writes the C-APDUs and R-APDUs of ``vectors/`` (transcripts and the hex
in the KEY = value files) into a corpus directory, so atheris starts from real traffic;
:func:`default_vectors` finds the checkout's ``vectors/`` whatever the current directory.

>>> check_tlv(bytes.fromhex("9F360200019000"))
>>> check_apdu(bytes.fromhex("00A4040007A000000004800200"))
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capsim.errors import CapsimError, ConfigError

__all__ = [
    "TARGETS",
    "check_apdu",
    "check_card",
    "check_tlv",
    "default_vectors",
    "run_atheris",
    "seed_corpus",
]


def _require(condition: bool, message: str) -> None:
    """An atheris finding when ``condition`` is false (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(message)


def check_apdu(data: bytes) -> None:
    """The ``apdu`` target (module docstring)."""
    from capsim.apdu import CommandApdu, ResponseApdu

    try:
        cmd = CommandApdu.from_bytes(data)
    except CapsimError:
        pass
    else:
        again = CommandApdu.from_bytes(cmd.to_bytes())
        _require(again == cmd, "CommandApdu does not round-trip")
    try:
        rsp = ResponseApdu.from_bytes(data)
    except CapsimError:
        return
    _require(ResponseApdu.from_bytes(rsp.to_bytes()) == rsp, "ResponseApdu does not round-trip")


def check_tlv(data: bytes) -> None:
    """The ``tlv`` target (module docstring)."""
    from capsim.tlv import decode, parse_dol

    try:
        objs = decode(data)
    except CapsimError:
        pass
    else:
        encoded = b"".join(o.to_bytes() for o in objs)
        _require(decode(encoded) == objs, "BER-TLV does not round-trip")
    try:
        entries = parse_dol(data)
    except CapsimError:
        return
    _require(all(e.length >= 0 for e in entries), "DOL entry with a negative length")


_CARD: list[Callable[[], object]] = []


def _card_factory() -> Callable[[], object]:
    if not _CARD:
        from capsim.cards import EmvCapCard, new_card
        from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, TEST_PIN

        first = new_card("secur-acces", pan=TEST_PAN, pin=TEST_PIN, imk_ac=TEST_IMK_AC, rng=bytes)
        profile, state = first.profile, first.state
        _CARD.append(lambda: EmvCapCard(profile, state, rng=bytes))
    return _CARD[0]


def check_card(data: bytes) -> None:
    """The ``card`` target (module docstring)."""
    from capsim.cards import EmvCapCard
    from capsim.testing.model import CardModel
    from capsim.transports.inprocess import TEST_PIN

    card = _card_factory()()
    if not isinstance(card, EmvCapCard):
        raise AssertionError("the card factory did not make an EmvCapCard")
    aid = card.profile.aid
    model = CardModel(aid=aid, pin=TEST_PIN, pin_try_limit=card.profile.pin_try_limit)
    apdus = [bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00", bytes.fromhex("80CA9F3600")]
    pos = 0
    while pos < len(data):
        n = data[pos]
        apdus.append(data[pos + 1 : pos + 1 + n])
        pos += 1 + n
    for apdu in apdus:
        answer = card.process(apdu)
        violation = model.observe(apdu, answer)
        _require(violation is None, f"{violation.invariant}: {violation.detail}" if violation else "")


#: Target name -> check function.
TARGETS: dict[str, Callable[[bytes], None]] = {"apdu": check_apdu, "tlv": check_tlv, "card": check_card}

_HEX_RUN = re.compile(r"(?:[0-9A-Fa-f]{2}\s?){4,}")


def default_vectors(package_dir: str | Path | None = None) -> Path:
    """The ``vectors/`` directory of the capsim checkout this package runs from, whatever the
    current directory (``package_dir``: the ``capsim`` package directory, for tests).

    Raises
    ------
    ConfigError
        When there is none (capsim installed from a wheel): pass ``--vectors DIR``.
    """
    package = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parents[1]
    candidate = package.parent / "vectors"
    if not candidate.is_dir():
        raise ConfigError(
            f"no seed vectors: {candidate} does not exist (capsim does not run from a source "
            "checkout); pass --vectors DIR, the vectors/ directory of a capsim checkout"
        )
    return candidate


def seed_corpus(vectors: str | Path, corpus: str | Path, *, target: str = "apdu") -> int:
    """Write seed inputs taken from ``vectors`` into ``corpus``; return how many.

    Transcript lines (``>``/``<``) and hex values of the vector files become one file each;
    for the ``card`` target, each transcript becomes one length-prefixed APDU sequence.
    """
    root = Path(vectors)
    out = Path(corpus)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    for path in sorted(root.rglob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        sequence = b""
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                continue
            if stripped.startswith(">") and target == "card":
                apdu = _hex(stripped[1:])
                if apdu is not None and len(apdu) < 256:
                    sequence += bytes((len(apdu),)) + apdu
                continue
            for match in _HEX_RUN.finditer(stripped.lstrip("<>@ ")):
                value = _hex(match.group(0))
                if value is not None:
                    seen.add(value)
        if sequence:
            seen.add(sequence)
    for n, value in enumerate(sorted(seen)):
        (out / f"seed-{n:05d}").write_bytes(value)
    return len(seen)


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        return None


def run_atheris(target: str, argv: list[str]) -> None:  # pragma: no cover - exits the process
    """Instrument capsim and hand ``TARGETS[target]`` to atheris (libFuzzer ``argv``).

    atheris ends the process when libFuzzer stops (exit status 0, or non-zero on a finding).
    """
    import atheris

    check = TARGETS[target]
    for name in _INSTRUMENTED[target]:
        _instrument_module(atheris, importlib.import_module(name))
    atheris.Setup(argv, check)
    atheris.Fuzz()


#: The modules whose code atheris instruments for each target (coverage feedback).
_INSTRUMENTED = {
    "apdu": ("capsim.apdu.command", "capsim.apdu.response"),
    "tlv": ("capsim.tlv.ber", "capsim.tlv.dol"),
    "card": ("capsim.cards.base", "capsim.cards.emv_cap", "capsim.iad", "capsim.cards.scripts"),
}


def _instrument_module(atheris: Any, module: Any) -> None:  # pragma: no cover - needs atheris
    """Instrument the functions and methods defined in ``module`` (not the whole process:
    ``instrument_all`` would also rewrite click, hypothesis and the rest, which is slow)."""
    for value in list(vars(module).values()):
        targets = []
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            targets.append(value)
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            targets.extend(
                v for v in vars(value).values() if inspect.isfunction(v) and v.__module__ == module.__name__
            )
        for func in targets:
            atheris.instrument_func(func)
