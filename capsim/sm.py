"""Issuer-script secure messaging: command MAC, PIN blocks, PIN encipherment (emv-crypto.md §7).

Pure functions on ``bytes``. Script commands use CLA ``84``; the MAC is ISO/IEC 9797-1 MAC
algorithm 3 with padding 2 under SK-SMI over header ‖ [ATC ‖ ARQC] ‖ data (the bracket is
absent for Interac CVN 133); PIN blocks are enciphered under SK-SMC with one of three
:class:`Encipherment` variants. Bad arguments raise :class:`capsim.errors.ValidationError`.

>>> pin_block_iso2("9999").hex().upper()
'249999FFFFFFFFFF'
"""

from __future__ import annotations

import hmac
import logging
from typing import Final, Literal

from capsim import _des
from capsim._validate import as_bytes as _as_bytes
from capsim._validate import digits, enum_member
from capsim._validate import fixed_bytes as _fixed
from capsim.apdu.ins import INS
from capsim.apdu.pinblock import parse_pin_block_iso2, pin_block_iso2
from capsim.crypto import (
    CVN,
    Encipherment,
    _csk,
    _cvn,
    _key16,
    _pad,
    cvn_spec,
    derive_visa_sm_sk,
)
from capsim.errors import ValidationError

__all__ = [
    "PIN_CHANGE_INS",
    "SCRIPT_CLA",
    "BlockFormat",
    "Encipherment",
    "build_pin_change",
    "build_script_command",
    "decipher_pin_block",
    "default_pin_block_format",
    "encipher_pin_block",
    "parse_pin_block_iso2",
    "parse_pin_block_vis",
    "pin_block_iso2",
    "pin_block_vis",
    "script_mac",
    "sm_session_keys",
    "verify_script_mac",
]

_log = logging.getLogger(__name__)

SCRIPT_CLA: Final = 0x84
"""CLA of every secure-messaging script command (emv-crypto.md §7.1)."""
PIN_CHANGE_INS: Final = INS.PIN_CHANGE_UNBLOCK
"""INS of PIN CHANGE/UNBLOCK (``24``, from :class:`capsim.apdu.ins.INS`)."""

BlockFormat = Literal["iso2", "vis"]


# --------------------------------------------------------------------------------------------------
# PIN blocks (§7.4): format 2 is plain data, in capsim.apdu.pinblock (re-exported here)
# --------------------------------------------------------------------------------------------------


def _pin(name: str, pin: object) -> str:
    return digits(name, pin, 4, 12)


def _iso2(name: str, pin: object) -> bytes:
    return pin_block_iso2(_pin(name, pin))  # ``name`` in the error message


def _vis_a(mk_ac: bytes) -> int:
    return int.from_bytes(_key16("mk_ac", mk_ac)[4:8], "big")


def _current_mask(current_pin: str | None) -> int:
    if current_pin is None:
        return 0
    return int(_pin("current_pin", current_pin).ljust(16, "0"), 16)


def pin_block_vis(new_pin: str, mk_ac: bytes, current_pin: str | None = None) -> bytes:
    """VIS PIN block for PIN change (emv-crypto.md §7.4).

    A = 00×4 ‖ MK-AC bytes 5–8; B = PIN length (1 byte) ‖ digits ‖ ``F`` fill; block = A ⊕ B,
    and with ``current_pin`` also ⊕ the current PIN's digits right-padded with ``0``.

    >>> mk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> pin_block_vis("1234", mk).hex().upper()
    '041234FF76543210'
    """
    p = _pin("new_pin", new_pin)
    b = int(f"{len(p):02X}{p}".ljust(16, "F"), 16)
    return (b ^ _vis_a(mk_ac) ^ _current_mask(current_pin)).to_bytes(8, "big")


def parse_pin_block_vis(block: bytes, mk_ac: bytes, current_pin: str | None = None) -> str:
    """The new PIN of a VIS PIN block; strict inverse of :func:`pin_block_vis`.

    >>> mk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> parse_pin_block_vis(bytes.fromhex("041234FF76543210"), mk)
    '1234'
    """
    b = int.from_bytes(_fixed("block", block, 8), "big")
    h = f"{b ^ _vis_a(mk_ac) ^ _current_mask(current_pin):016X}"
    if h[0] != "0" or not 4 <= int(h[:2], 16) <= 12:
        raise ValidationError("block: VIS PIN length byte outside 4-12 (wrong key or current PIN?)")
    n = int(h[:2], 16)
    digits, fill = h[2 : 2 + n], h[2 + n :]
    if not digits.isdigit() or fill != "F" * len(fill):
        raise ValidationError("block: VIS PIN digits not decimal or fill not F (wrong key or current PIN?)")
    return digits


# --------------------------------------------------------------------------------------------------
# encipherment (§7.3)
# --------------------------------------------------------------------------------------------------


def _variant(variant: object) -> Encipherment:
    return enum_member("variant", Encipherment, variant)


def encipher_pin_block(variant: Encipherment | str, sk_smc: bytes, block: bytes) -> bytes:
    """Encipher a PIN block (or other script data) under SK-SMC (emv-crypto.md §7.3).

    * ``VISA_ECB``: length byte ‖ data, padding 2 always, TDES-ECB (8 bytes → 16);
    * ``MASTERCARD_CBC``: TDES-CBC, IV 0, padding 2 only when not a multiple of 8 (8 → 8);
    * ``CCD_CBC``: TDES-CBC, IV 0, padding 2 always (8 → 16).

    >>> k = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> encipher_pin_block(Encipherment.MASTERCARD_CBC, k, bytes.fromhex("241234FFFFFFFFFF")).hex().upper()
    '9859240AE52820C3'
    """
    v = _variant(variant)
    key = _key16("sk_smc", sk_smc)
    data = _as_bytes("block", block)
    if not data:
        raise ValidationError("block: expected at least one byte")
    if v is Encipherment.VISA_ECB:
        if len(data) > 255:
            raise ValidationError("block: at most 255 bytes for the Visa length prefix")
        return _des.ecb_encrypt(key, _pad(bytes([len(data)]) + data, 2))
    if v is Encipherment.MASTERCARD_CBC:
        if len(data) % 8:
            data = _pad(data, 2)
        return _des.cbc_encrypt(key, data)
    return _des.cbc_encrypt(key, _pad(data, 2))


def _unpad2(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= 8:
        raise ValidationError("data: bad ISO/IEC 9797-1 method 2 padding after deciphering")
    return stripped[:-1]


def decipher_pin_block(variant: Encipherment | str, sk_smc: bytes, data: bytes) -> bytes:
    """Inverse of :func:`encipher_pin_block`; ValidationError on bad length or padding.

    ``MASTERCARD_CBC`` cannot tell padding from data, so it returns the deciphered bytes as they
    are (an 8-byte PIN block is never padded).

    >>> k = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> decipher_pin_block("ccd-cbc", k, bytes.fromhex("5A862D1381CCB94822CFDD706A376178")).hex().upper()
    '249999FFFFFFFFFF'
    """
    v = _variant(variant)
    key = _key16("sk_smc", sk_smc)
    d = _as_bytes("data", data)
    if not d or len(d) % 8:
        raise ValidationError(f"data: expected a non-empty multiple of 8 bytes, got {len(d)}")
    if v is Encipherment.VISA_ECB:
        plain = _unpad2(_des.ecb_decrypt(key, d))
        if not plain or plain[0] != len(plain) - 1:
            raise ValidationError("data: Visa length prefix does not match the deciphered data")
        return plain[1:]
    if v is Encipherment.MASTERCARD_CBC:
        return _des.cbc_decrypt(key, d)
    return _unpad2(_des.cbc_decrypt(key, d))


# --------------------------------------------------------------------------------------------------
# session keys and script MAC (§7.2)
# --------------------------------------------------------------------------------------------------


def sm_session_keys(
    cvn: CVN | int, mk_smi: bytes, mk_smc: bytes, *, atc: bytes, arqc: bytes
) -> tuple[bytes, bytes]:
    """(SK-SMI, SK-SMC) of a CVN (emv-crypto.md §4.2, §5 table).

    Visa CVN 10/18: Visa XOR-ATC keys; Visa CVN 22, Mastercard and Interac: CSK with R = ARQC.

    >>> from capsim.crypto import key_check_value
    >>> smi, smc = sm_session_keys(CVN.VISA_10, bytes.fromhex("94F867167C64EF3EEAB0CB627A7A3480"),
    ...                            bytes(16), atc=bytes.fromhex("001C"), arqc=bytes(8))
    >>> key_check_value(smi, 2).hex().upper()
    'DB10'
    """
    spec = cvn_spec(cvn)
    smi = _key16("mk_smi", mk_smi)
    smc = _key16("mk_smc", mk_smc)
    a = _fixed("atc", atc, 2)
    r = _fixed("arqc", arqc, 8)
    if spec.sm_keys == "visa":
        return derive_visa_sm_sk(smi, a), derive_visa_sm_sk(smc, a)
    return _csk(smi, r), _csk(smc, r)


def _header(header: object) -> bytes:
    h = _fixed("header", header, 5)
    if h[0] != SCRIPT_CLA:
        _log.debug("script header with CLA %02X (secure messaging uses 84)", h[0])
    return h


def _mac_length(length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or not 4 <= length <= 8:
        raise ValidationError(f"length: expected an int from 4 to 8, got {length!r}")
    return length


def _script_mac_full(
    cvn: CVN, sk_smi: bytes, header: bytes, data: bytes, *, atc: bytes, arqc: bytes
) -> bytes:
    spec = cvn_spec(cvn)
    key = _key16("sk_smi", sk_smi)
    m = _header(header)
    if spec.script_mac_covers_txn:
        m += _fixed("atc", atc, 2) + _fixed("arqc", arqc, 8)
    m += _as_bytes("data", data)
    return _des.retail_mac(key, _pad(m, 2))


def script_mac(
    cvn: CVN | int, sk_smi: bytes, header: bytes, data: bytes, *, atc: bytes, arqc: bytes, length: int = 8
) -> bytes:
    """Script command MAC: MAC-alg-3(SK-SMI, header ‖ [ATC ‖ ARQC] ‖ data), padding 2 (emv-crypto.md §7.2).

    ``header`` is CLA INS P1 P2 Lc with Lc as sent (data plus MAC); ``data`` is the enciphered
    data when confidentiality is used. The ATC ‖ ARQC bracket is included per
    :attr:`capsim.crypto.CvnSpec.script_mac_covers_txn`. Returns the leftmost ``length`` (4–8)
    bytes.

    >>> k = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> script_mac(CVN.MC_16, k, bytes.fromhex("8424000008"), b"",
    ...            atc=bytes.fromhex("FFFF"), arqc=bytes.fromhex("1234567890123456")).hex().upper()
    'E07B8DF1B4184282'
    """
    n = _mac_length(length)
    return _script_mac_full(_cvn(cvn), sk_smi, header, data, atc=atc, arqc=arqc)[:n]


def verify_script_mac(
    cvn: CVN | int, sk_smi: bytes, header: bytes, data: bytes, mac: bytes, *, atc: bytes, arqc: bytes
) -> bool:
    """Check a script MAC of 4–8 bytes in constant time (emv-crypto.md §7.2).

    >>> k = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> verify_script_mac(CVN.INTERAC_133, k, bytes.fromhex("8424000008"), b"",
    ...                   bytes.fromhex("0BFFF5DF3FAA24E1"), atc=bytes(2), arqc=bytes(8))
    True
    """
    m = _as_bytes("mac", mac)
    _mac_length(len(m))
    expected = _script_mac_full(_cvn(cvn), sk_smi, header, data, atc=atc, arqc=arqc)[: len(m)]
    return hmac.compare_digest(expected, m)


def _byte(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValidationError(f"{name}: expected an int from 0 to 255, got {value!r}")
    return value


def build_script_command(
    cvn: CVN | int,
    *,
    ins: int,
    p1: int = 0,
    p2: int = 0,
    data: bytes = b"",
    mk_smi: bytes,
    atc: bytes,
    arqc: bytes,
    mac_length: int = 8,
) -> bytes:
    """A complete secure-messaging script C-APDU (no Le): ``84 INS P1 P2 Lc ‖ data ‖ MAC`` (§7.1–7.2).

    SK-SMI is derived from ``mk_smi`` per the CVN; ``data`` is sent as given (encipher it first
    when confidentiality is needed).

    >>> mk_smi = bytes.fromhex("94F867167C64EF3EEAB0CB627A7A3480")
    >>> build_script_command(CVN.VISA_10, ins=0x18, mk_smi=mk_smi, atc=bytes.fromhex("001C"),
    ...                      arqc=bytes.fromhex("29CCA15AE665FA2E")).hex().upper()
    '8418000008DB56BA60087CEFD3'
    """
    c = _cvn(cvn)
    n = _mac_length(mac_length)
    d = _as_bytes("data", data)
    if len(d) + n > 255:
        raise ValidationError(f"data: at most {255 - n} bytes in a short APDU")
    header = bytes([SCRIPT_CLA, _byte("ins", ins), _byte("p1", p1), _byte("p2", p2), len(d) + n])
    a = _fixed("atc", atc, 2)
    r = _fixed("arqc", arqc, 8)
    spec = cvn_spec(c)
    smi = _key16("mk_smi", mk_smi)
    sk_smi = derive_visa_sm_sk(smi, a) if spec.sm_keys == "visa" else _csk(smi, r)
    return header + d + _script_mac_full(c, sk_smi, header, d, atc=a, arqc=r)[:n]


def default_pin_block_format(cvn: CVN | int, *, with_current_pin: bool) -> BlockFormat:
    """PIN-change block format per CVN (emv-crypto.md §7.4).

    Visa CVN 10/18: VIS; Visa CVN 22: VIS with the current PIN (P2 01), ISO-2 otherwise;
    Mastercard, Interac: ISO-2.

    >>> default_pin_block_format(CVN.VISA_22, with_current_pin=False)
    'iso2'
    """
    c = _cvn(cvn)
    if c in (CVN.VISA_10, CVN.VISA_18):
        return "vis"
    if c is CVN.VISA_22:
        return "vis" if with_current_pin else "iso2"
    return "iso2"


def build_pin_change(
    cvn: CVN | int,
    *,
    new_pin: str | None,
    current_pin: str | None = None,
    mk_ac: bytes,
    mk_smi: bytes,
    mk_smc: bytes,
    atc: bytes,
    arqc: bytes,
    block_format: BlockFormat | None = None,
) -> bytes:
    """PIN CHANGE/UNBLOCK script command ``84 24 00 P2`` (emv-crypto.md §7.1, vectors.md §6).

    ``new_pin`` None → PIN UNBLOCK (P2 00, MAC only). ``current_pin`` given → P2 01, else P2 02.
    The PIN block (:func:`default_pin_block_format` unless ``block_format`` is given) is
    enciphered under SK-SMC with the CVN's variant and MACed under SK-SMI.

    >>> imk_mks = [bytes.fromhex(h) for h in ("154F349D8585CB7F6B0798E9839B10C1",
    ...            "94F867167C64EF3EEAB0CB627A7A3480", "19296D4CD626859E8AADDF0B2AAB8FEA")]
    >>> build_pin_change(CVN.MC_16, new_pin="9999", mk_ac=imk_mks[0], mk_smi=imk_mks[1],
    ...                  mk_smc=imk_mks[2], atc=bytes.fromhex("001C"),
    ...                  arqc=bytes.fromhex("24CCF3DEE3158C70")).hex().upper()
    '842400021000859B8FE53F316DEB4B64C36BF88E39'
    """
    c = _cvn(cvn)
    spec = cvn_spec(c)
    a = _fixed("atc", atc, 2)
    r = _fixed("arqc", arqc, 8)
    if new_pin is None:
        if current_pin is not None:
            raise ValidationError("current_pin: only meaningful with new_pin (PIN change)")
        return build_script_command(c, ins=PIN_CHANGE_INS, p2=0x00, mk_smi=mk_smi, atc=a, arqc=r)
    fmt = block_format or default_pin_block_format(c, with_current_pin=current_pin is not None)
    if fmt == "vis":
        block = pin_block_vis(new_pin, mk_ac, current_pin)
    elif fmt == "iso2":
        if current_pin is not None:
            raise ValidationError("current_pin: the ISO-2 block format cannot carry the current PIN")
        _key16("mk_ac", mk_ac)
        block = _iso2("new_pin", new_pin)
    else:
        raise ValidationError(f"block_format: expected 'iso2' or 'vis', got {fmt!r}")
    _, sk_smc = sm_session_keys(c, mk_smi, mk_smc, atc=a, arqc=r)
    enciphered = encipher_pin_block(spec.pin_encipherment, sk_smc, block)
    p2 = 0x01 if current_pin is not None else 0x02
    return build_script_command(c, ins=PIN_CHANGE_INS, p2=p2, data=enciphered, mk_smi=mk_smi, atc=a, arqc=r)
