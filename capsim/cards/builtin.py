"""Built-in card profile templates (cap-protocol.md §9.1, vectors.md §1).

``barclays``, ``natwest`` and ``rabobank`` reproduce the published SELECT / GET PROCESSING
OPTIONS / READ RECORD answers byte for byte (vectors.md CAP-BARCLAYS, CAP-NATWEST,
CAP-RABO-TDS); only the keys, and hence the cryptograms, are capsim's. ``secur-acces`` and
``visa-dpa`` are capsim designs. Every template lacks PAN, PSN, PIN and keys:
:func:`capsim.cards.new_card` personalises one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from capsim.cards.profile import CardProfile, Record, default_iad_template
from capsim.crypto import CVN, KeyDerivation
from capsim.errors import ValidationError
from capsim.tlv import encode

__all__ = ["BUILTIN_PROFILES", "DEFAULT_ATR", "builtin_profile"]


def _emv_t0_atr(historical: bytes) -> bytes:
    """EMV's basic ATR for T=0: TS 3B, T0 (TB1 and TC1 present, K historical bytes), TB1 00
    (no programming voltage), TC1 00 (no extra guard time), the historical bytes; no TD1, so
    T=0 only, and no TCK."""
    return bytes([0x3B, 0x60 | len(historical), 0x00, 0x00]) + historical


#: capsim's default ATR: T=0, as most EMV contact cards offer, historical bytes ``capsim``
#: (``3B66000063617073696D``). Earlier releases offered only T=1 (``3B860163617073696D82``).
DEFAULT_ATR = _emv_t0_atr(b"capsim")

_CDOL1_STD = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
_CDOL2_STD = bytes.fromhex("8A02") + _CDOL1_STD
_CVM_PLAIN_PIN = bytes.fromhex("00000000000000000100")

_BARCLAYS_RECORD = bytes.fromhex(
    "70688C159F02069F03069F1A0295055F2A029A039C019F37048D178A029F02069F03069F1A0295055F2A029A039C01"
    "9F37048E0A000000000000000001009F56128000FF000000000001FFFF000000000000009F5501A05A08465812345678"
    "90095F3401009F08020001"
)
_NATWEST_RECORD = bytes.fromhex(
    "70558E0A000000000000000001009F5501A09F561200001F00000000000FFFFF000000000080008C159F02069F0306"
    "9F1A0295055F2A029A039C019F37048D178A029F02069F03069F1A0295055F2A029A039C019F3704"
)
_RABOBANK_RECORD = bytes.fromhex(
    "70608C219F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F34038D0C910A8A0295059F37"
    "049F4C085A0A6733112233445566774F5F3401088E0A000000000000000001009F5501C09F560C0700007FFFFF0000"
    "00000000"
)


def _record(*parts: bytes) -> bytes:
    return encode(0x70, b"".join(parts))


_SECUR_ACCES_RECORD = _record(
    encode(0x8C, _CDOL1_STD),
    encode(0x8D, _CDOL2_STD),
    encode(0x5A, bytes(8)),
    encode(0x5F34, b"\x00"),
    encode(0x8E, _CVM_PLAIN_PIN),
    encode(0x9F55, b"\x80"),
    # ATC low 5 bits, AC bytes 6 (low nibble) to 8, CVR byte 4 b3 (last online not completed)
    encode(0x9F56, bytes.fromhex("00001F00000000000FFFFF000000000004")),
    encode(0x9F42, bytes.fromhex("0978")),
)
_VISA_DPA_RECORD = _record(
    encode(0x8C, _CDOL1_STD),
    encode(0x8D, _CDOL2_STD),
    encode(0x8E, _CVM_PLAIN_PIN),
    encode(0x9F56, bytes.fromhex("8000FF000000000001FFFF00000000000000")),
    encode(0x9F55, b"\xa0"),
    encode(0x5A, bytes(8)),
    encode(0x5F34, b"\x00"),
)

_AFL_ONE = bytes.fromhex("08010100")
_AIP = bytes.fromhex("1000")


def _template(
    name: str,
    *,
    reader_profile: str,
    aid: bytes,
    fci_proprietary: bytes,
    label: str,
    record: bytes,
    fmt: int,
    cvn: CVN,
    iad_template: bytes,
    atr: bytes = DEFAULT_ATR,
    key_derivation: KeyDerivation = KeyDerivation.AUTO,
    psn: str = "00",
) -> CardProfile:
    """A template with capsim's AIP, one record in SFI 1 and the same GPO and GENERATE AC format.

    ``reader_profile`` names the reader profile of the bank's terminal (:mod:`capsim.profiles`).
    """
    return CardProfile(
        name=name,
        reader_profile=reader_profile,
        aid=aid,
        fci_proprietary=fci_proprietary,
        label=label,
        aip=_AIP,
        afl=_AFL_ONE,
        records=(Record(sfi=1, number=1, data=record),),
        gpo_format=fmt,
        response_format=fmt,
        cvn=cvn,
        iad_template=iad_template,
        atr=atr,
        key_derivation=key_derivation,
        psn=psn,
    )


_PROFILES: dict[str, CardProfile] = {
    "secur-acces": _template(
        "secur-acces",
        reader_profile="mc-cap",
        aid=bytes.fromhex("A0000000048002"),
        fci_proprietary=encode(0x50, b"SecureCode Aut") + encode(0x87, b"\x01") + encode(0x5F2D, b"fren"),
        label="SecureCode Aut",
        record=_SECUR_ACCES_RECORD,
        fmt=2,
        cvn=CVN.MC_16,
        iad_template=default_iad_template(0x10, 0x01),
    ),
    "visa-dpa": _template(
        "visa-dpa",
        reader_profile="visa-dpa",
        aid=bytes.fromhex("A0000000038002"),
        fci_proprietary=encode(0x50, b"VisaRemAuthen") + encode(0x87, b"\x01") + encode(0x5F2D, b"en"),
        label="VisaRemAuthen",
        record=_VISA_DPA_RECORD,
        fmt=1,
        cvn=CVN.VISA_10,
        iad_template=default_iad_template(0x0A, 0x01),
    ),
    "barclays": _template(
        "barclays",
        reader_profile="visa-dpa",
        aid=bytes.fromhex("A0000000038002"),
        fci_proprietary=encode(0x50, b"BARCLAYS") + encode(0x87, b"\x01") + encode(0x5F2D, b"en"),
        label="BARCLAYS",
        record=_BARCLAYS_RECORD,
        fmt=1,
        cvn=CVN.VISA_10,
        iad_template=bytes.fromhex("060A0A03000000"),
    ),
    "natwest": _template(
        "natwest",
        reader_profile="mc-cap",
        aid=bytes.fromhex("A0000000048002"),
        fci_proprietary=encode(0x5F2D, b"en"),
        label="NatWest CAP",
        record=_NATWEST_RECORD,
        fmt=1,
        cvn=CVN.VISA_10,
        iad_template=bytes.fromhex("06770A03000000"),
    ),
    "rabobank": _template(
        "rabobank",
        reader_profile="mc-cap",
        aid=bytes.fromhex("A0000000048002"),
        fci_proprietary=encode(0x50, b"SecureCode Aut") + encode(0x87, b"\x00") + encode(0x5F2D, b"nlen"),
        label="SecureCode Aut",
        record=_RABOBANK_RECORD,
        fmt=2,
        cvn=CVN.MC_16,
        iad_template=bytes.fromhex("0C10000000000000000000000000000000FF"),
        atr=bytes.fromhex("3B6700002920006F789000"),
        key_derivation=KeyDerivation.AUTO,
        psn="08",
    ),
}

#: Name → template. Read-only.
BUILTIN_PROFILES: Mapping[str, CardProfile] = MappingProxyType(_PROFILES)


def builtin_profile(name: str) -> CardProfile:
    """The built-in template called ``name``.

    Raises
    ------
    ValidationError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> p = builtin_profile("natwest")
    >>> p.aid.hex().upper(), p.iaf.hex().upper(), p.response_format
    ('A0000000048002', 'A0', 1)
    """
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValidationError(
            f"profile: unknown card profile {name!r}; expected one of {', '.join(sorted(_PROFILES))}"
        ) from None
