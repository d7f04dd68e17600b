"""Profiles and personalisation: validation, overrides, serialisation (cap-protocol.md §9.1)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cards import BUILTIN_PROFILES, CardProfile, builtin_profile, new_card
from capsim.crypto import CVN, KeyDerivation, derive_icc_mk_a, derive_icc_mk_b
from capsim.errors import StateFileError, ValidationError
from capsim.storage import read_card_file
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
@pytest.mark.parametrize("cvn", [None, *list(CVN)[:7]])
def test_round_trip_every_builtin_and_cvn(name: str, cvn: CVN | None) -> None:
    kw = {} if cvn is None else {"cvn": cvn}
    card = new_card(name, pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, **kw)
    p = card.profile
    assert CardProfile.from_dict(p.to_dict()) == p
    assert p.is_personalised
    if cvn is not None:
        assert p.cvn is cvn
        assert p.iad_template[2 if cvn in (CVN.VISA_10, CVN.VISA_18, CVN.VISA_22) else 1] == cvn
    assert p.mk_ac.hex().upper() not in repr(p)
    assert p.mk_ac.hex() not in repr(p)
    assert not builtin_profile(name).is_personalised


def test_keys_and_kcvs() -> None:
    p = new_card("visa-dpa", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C).profile
    # vectors.md CRY-KD-HSM: MK(BAB0) for IMK-A, MK(F010) for IMK-B, MK(B154) for IMK-C
    assert p.mk_ac == bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    assert p.mk_smi == bytes.fromhex("94F867167C64EF3EEAB0CB627A7A3480")
    assert p.mk_smc == bytes.fromhex("19296D4CD626859E8AADDF0B2AAB8FEA")
    assert (p.kcv_imk_ac.hex().upper(), p.kcv_imk_smi.hex().upper()) == ("08D7B4", "7B8358")
    long_pan = "12345678901234567"
    b = new_card("rabobank", pan=long_pan, psn="45", imk_ac=IMK_A).profile
    assert b.mk_ac == derive_icc_mk_b(IMK_A, long_pan, "45")
    a = new_card("rabobank", pan=long_pan, psn="45", imk_ac=IMK_A, key_derivation=KeyDerivation.OPTION_A)
    assert a.profile.mk_ac == derive_icc_mk_a(IMK_A, long_pan, "45")


def test_personalisation_rewrites_pan_and_psn_in_records() -> None:
    p = new_card("rabobank", pan="5412345678901234", psn="03", imk_ac=IMK_A).profile
    record = p.records[0].data
    assert bytes.fromhex("5A085412345678901234") in record
    assert bytes.fromhex("5F340103") in record
    assert p.cdol1 == builtin_profile("rabobank").cdol1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pan": "12345"}, "pan"),
        ({"pan": 1234567890123456}, "pan"),
        ({"pan": "１２３４５６７８９０１２３４５６"}, "pan"),  # full-width digits
        ({"psn": "1"}, "psn"),
        ({"pin": "12"}, "pin"),
        ({"pin": "1234567890123"}, "pin"),
        ({"imk_ac": b"short"}, "imk_ac"),
        ({"imk_smi": "00" * 16}, "imk_smi"),
        ({"profile": "nope"}, "unknown card profile"),
        ({"cvn": 0x99}, "cvn"),
        ({"cvn": "x"}, "cvn"),
        ({"response_format": 3}, "response_format"),
        ({"initial_atc": "7"}, "initial_atc"),
        ({"initial_atc": 70000}, "initial_atc"),
        ({"pin_try_limit": 0}, "pin_try_limit"),
        ({"mk_ac": bytes(16)}, "unknown profile field"),
        ({"colour": "red"}, "unknown profile field"),
    ],
)
def test_bad_arguments_raise_validation_error(
    kwargs: dict[str, object], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.json"
    args: dict[str, object] = {"profile": "secur-acces", "pan": PAN, "imk_ac": IMK_A, "path": path}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=message):
        new_card(**args)  # type: ignore[arg-type]
    assert not (tmp_path / "c.json").exists()


@given(st.data())
def test_mutated_card_files_load_or_raise_state_file_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.json"
        new_card("natwest", pan=PAN, imk_ac=IMK_A, path=path).close()
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(raw))
        with contextlib.suppress(StateFileError):  # anything else fails the test
            read_card_file(path)
