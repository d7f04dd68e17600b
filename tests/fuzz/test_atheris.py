"""Coverage-guided targets (capsim.testing.atheris_targets) and ``capsim fuzz atheris``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capsim.testing import atheris_targets as at
from tests.fuzz.planted import make_card

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name in at.TARGETS:
        directory = tmp_path_factory.mktemp(f"corpus-{name}")
        assert at.seed_corpus(VECTORS, directory, target=name) > 10
        out[name] = directory
    return out


def test_seed_corpus_holds_the_vector_apdus(corpora: dict[str, Path]) -> None:
    seeds = {p.read_bytes() for p in corpora["apdu"].iterdir()}
    assert bytes.fromhex("00A4040007A000000004800200") in seeds or any(
        s.startswith(b"\x00\xa4\x04\x00") for s in seeds
    )
    sequences = [p.read_bytes() for p in corpora["card"].iterdir()]
    assert any(len(s) > 50 for s in sequences)


@pytest.mark.parametrize("name", sorted(at.TARGETS))
def test_every_vector_seed_passes_its_target(name: str, corpora: dict[str, Path]) -> None:
    for path in sorted(corpora[name].iterdir()):
        at.TARGETS[name](path.read_bytes())


def test_card_target_flags_the_planted_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(at, "_CARD", [make_card])
    gpo = bytes.fromhex("80A8000002830000")
    wrong_long = bytes.fromhex("00200080082800000000FFFFFF")
    get_ptc = bytes.fromhex("80CA9F1700")
    data = b"".join(bytes((len(a),)) + a for a in (gpo, wrong_long, get_ptc))
    with pytest.raises(AssertionError, match="ptc"):
        at.check_card(data)


def test_tlv_target_flags_a_decoder_that_loses_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import capsim.tlv

    real = capsim.tlv.decode
    calls = {"n": 0}

    def lossy(data: bytes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        objs = real(data)
        return objs[:-1] if calls["n"] > 1 and len(objs) > 1 else objs

    monkeypatch.setattr(capsim.tlv, "decode", lossy)
    with pytest.raises(AssertionError, match="round-trip"):
        at.check_tlv(bytes.fromhex("9F36020001") + bytes.fromhex("9F170103"))


@pytest.mark.parametrize(("name", "runs"), [("apdu", 2000), ("tlv", 2000), ("card", 300)])
def test_capsim_fuzz_atheris_runs_clean(name: str, runs: int, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (the optional fuzz extra) is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "capsim", "fuzz", "atheris", "--target", name, "--runs", str(runs),
         "--vectors", str(VECTORS), "--corpus", str(tmp_path), "--seed", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Done {runs} runs" in result.stderr
    assert any(tmp_path.iterdir())
