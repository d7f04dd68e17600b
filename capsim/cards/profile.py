"""Static card personalisation: :class:`CardProfile` (cap-protocol.md §9.1).

A profile holds everything that never changes on a card: the application (AID, FCI), the
GET PROCESSING OPTIONS answer (AIP, AFL), the records (CDOL1, CDOL2, CVM list, IAF, IPB, PAN,
PSN …), the cryptogram version and its IAD template, the response formats, the ATR, the PIN
try limit, the initial ATC and the ICC master keys. Built-in profiles (:mod:`capsim.cards.
builtin`) are *templates*: every field but the PAN, PSN and keys; :meth:`CardProfile.personalise`
fills those in, rewriting the ``5A``/``5F34`` values inside the records and deriving the ICC
keys from issuer master keys (emv-crypto.md §4.1).

Neither the keys nor the PAN appear in ``repr``/``str`` (a profile shows the last four PAN
digits; a :class:`Record`, which holds the PAN inside its data, only its length);
:meth:`CardProfile.to_dict` writes them (the card file is the card's secure memory, mode 0600).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from capsim.crypto import CVN, KeyDerivation, derive_icc_mk, key_check_value
from capsim.errors import ApduFormatError, ValidationError
from capsim.iad import IadFormat, check_iad_template, iad_format_for_cvn
from capsim.profiles import READER_PROFILES, default_reader_profile
from capsim.tlv import Tlv, decode, encode, parse_dol

__all__ = ["CardProfile", "Record", "default_iad_template", "encode_pan"]


def encode_pan(pan: str) -> bytes:
    """PAN digits as compressed numeric (``cn``): BCD, padded with ``F`` to whole bytes.

    Examples
    --------
    >>> encode_pan("6733112233445566774").hex().upper()
    '6733112233445566774F'
    """
    digits = pan + "F" if len(pan) % 2 else pan
    return bytes.fromhex(digits)


def _check_pan(pan: str) -> str:
    if not isinstance(pan, str) or not pan.isascii() or not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValidationError("pan: expected 12 to 19 ASCII digits")
    return pan


def _check_psn(psn: str) -> str:
    if not isinstance(psn, str) or len(psn) != 2 or not psn.isascii() or not psn.isdigit():
        raise ValidationError("psn: expected 2 ASCII digits, e.g. '00'")
    return psn


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise ValidationError(f"{name}: expected 16 bytes (a double-length TDES key)")
    return bytes(key)


def _check_reader_profile(name: str) -> None:
    if name not in READER_PROFILES:
        raise ValidationError(
            f"reader_profile: unknown reader profile {name!r}; expected one of {', '.join(READER_PROFILES)}"
        )


def default_iad_template(cvn: int, dki: int = 0x01) -> bytes:
    """An IAD with an all-zero CVR for a cryptogram version (emv-crypto.md §5).

    Examples
    --------
    >>> default_iad_template(0x0A).hex().upper()
    '06010A03000000'
    >>> default_iad_template(0x10, 0x0C).hex().upper()
    '0C10000000000000000000000000000000FF'
    """
    if iad_format_for_cvn(cvn) is IadFormat.VIS:
        return bytes([0x06, dki, cvn, 0x03, 0, 0, 0])
    return bytes([dki, cvn]) + bytes(6) + bytes(2) + bytes(7) + b"\xff"


@dataclass(frozen=True, kw_only=True)
class Record:
    """One application record: SFI, record number and the full ``70`` template.

    ``repr`` shows the length of the data only: a personalised record holds the PAN.
    """

    sfi: int
    number: int
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Record(sfi={self.sfi}, number={self.number}, data=<{len(self.data)} bytes>)"

    def __post_init__(self) -> None:
        if type(self.sfi) is not int or type(self.number) is not int or not isinstance(self.data, bytes):
            raise ValidationError("records: expected integer sfi and record number and bytes data")
        if not 1 <= self.sfi <= 30:
            raise ValidationError(f"records: sfi must be 1..30, got {self.sfi}")
        if not 1 <= self.number <= 254:
            raise ValidationError(f"records: record number must be 1..254, got {self.number}")
        try:
            objs = decode(self.data)
        except ApduFormatError as exc:
            raise ValidationError(
                f"records: SFI {self.sfi} record {self.number} is not BER-TLV: {exc}"
            ) from exc
        if len(objs) != 1 or objs[0].tag != 0x70:
            raise ValidationError(f"records: SFI {self.sfi} record {self.number} must be one '70' template")


_BYTES_FIELDS = (
    "aid", "fci_proprietary", "pdol", "aip", "afl", "iad_template", "atr",
    "mk_ac", "mk_smi", "mk_smc", "kcv_imk_ac", "kcv_imk_smi", "kcv_imk_smc",
)  # fmt: skip
_INT_FIELDS = ("gpo_format", "response_format", "cvn", "pin_try_limit", "initial_atc", "script_mac_length")


def _record_tags(records: tuple[Record, ...]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for rec in records:
        (tpl,) = decode(rec.data)
        for child in tpl.children:
            found.setdefault(child.tag, child.value)
    return found


def _hex(value: bytes) -> str:
    return value.hex().upper()


@dataclass(frozen=True, kw_only=True, repr=False)
class CardProfile:
    """A card's static personalisation (cap-protocol.md §9.1).

    ``repr`` shows the name, AID, CVN, the last four PAN digits and the PSN: never the full
    PAN, the records (they hold the PAN) or a key.

    Attributes
    ----------
    name:
        Profile name (``secur-acces``, ``natwest`` …).
    reader_profile:
        Name of the reader profile (:data:`capsim.profiles.READER_PROFILES`) of the bank's
        terminal for this card, one that lists :attr:`aid` (a reader profile that does not
        could not select the card). Left empty, it is the one a reader picks
        from the AID (:func:`capsim.profiles.default_reader_profile`), as for card files
        written before the field existed; tests/cards/test_reader_profile.py checks that every
        built-in template names exactly that one.
    aid:
        Application identifier, 5-16 bytes.
    fci_proprietary:
        Content of the FCI ``A5`` template (label ``50``, priority ``87``, language ``5F2D``,
        ``BF0C`` …) exactly as sent. A PDOL is appended as ``9F38`` when :attr:`pdol` is set.
    pdol:
        Processing options data object list (empty: none; GPO then expects ``83 00``).
    label:
        Application label used in the PSE directory entry.
    pse:
        Whether the card answers ``1PAY.SYS.DDF01``.
    aip, afl:
        Application interchange profile (2 bytes) and file locator (4n bytes).
    records:
        The application records, with the PAN and PSN of this card.
    gpo_format, response_format:
        Response template of GET PROCESSING OPTIONS and GENERATE AC: 1 (``80``) or 2 (``77``).
    cvn:
        Cryptogram version (:class:`capsim.crypto.CVN`); it also selects the IAD layout.
    iad_template:
        The IAD with an all-zero CVR; its CVN byte equals :attr:`cvn`.
    atr:
        Answer to reset.
    pin_try_limit:
        PIN try limit (1-15, default 3).
    initial_atc:
        ATC of a fresh card (the first GPO answers with ``initial_atc + 1``).
    key_derivation:
        ICC master-key derivation option (emv-crypto.md §4.1).
    pan, psn:
        This card's PAN and PSN (empty PAN in a template).
    mk_ac, mk_smi, mk_smc:
        ICC master keys (empty in a template). Never shown in ``repr``.
    kcv_imk_ac, kcv_imk_smi, kcv_imk_smc:
        3-byte check values of the issuer master keys the ICC keys came from, so a verifier
        can check that it holds the right IMKs.
    script_mac_length:
        Length of the issuer-script MAC (4-8, default 8).
    """

    name: str
    reader_profile: str = ""
    aid: bytes
    fci_proprietary: bytes
    pdol: bytes = b""
    label: str = ""
    pse: bool = True
    aip: bytes
    afl: bytes
    records: tuple[Record, ...]
    gpo_format: int = 1
    response_format: int = 1
    cvn: CVN
    iad_template: bytes
    atr: bytes
    pin_try_limit: int = 3
    initial_atc: int = 0
    key_derivation: KeyDerivation = KeyDerivation.AUTO
    pan: str = ""
    psn: str = "00"
    mk_ac: bytes = field(default=b"", repr=False)
    mk_smi: bytes = field(default=b"", repr=False)
    mk_smc: bytes = field(default=b"", repr=False)
    kcv_imk_ac: bytes = b""
    kcv_imk_smi: bytes = b""
    kcv_imk_smc: bytes = b""
    script_mac_length: int = 8

    def __post_init__(self) -> None:
        for name in _BYTES_FIELDS:
            if not isinstance(getattr(self, name), bytes):
                raise ValidationError(f"{name}: expected bytes")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name}: expected an integer")
        for name in ("name", "reader_profile", "label", "pan", "psn"):
            if not isinstance(getattr(self, name), str):
                raise ValidationError(f"{name}: expected a string")
        if not isinstance(self.records, tuple) or not all(isinstance(r, Record) for r in self.records):
            raise ValidationError("records: expected a tuple of Record")
        try:
            object.__setattr__(self, "key_derivation", KeyDerivation(self.key_derivation))
        except ValueError as exc:
            raise ValidationError("key_derivation: expected 'auto', 'A' or 'B'") from exc
        if not self.label.isascii():
            raise ValidationError("label: expected ASCII text")
        if not 5 <= len(self.aid) <= 16:
            raise ValidationError("aid: expected 5 to 16 bytes")
        if not self.reader_profile:
            object.__setattr__(self, "reader_profile", default_reader_profile(self.aid).name)
        _check_reader_profile(self.reader_profile)
        if len(self.aip) != 2:
            raise ValidationError("aip: expected 2 bytes")
        if not self.afl or len(self.afl) % 4:
            raise ValidationError("afl: expected a non-empty multiple of 4 bytes")
        if self.gpo_format not in (1, 2) or self.response_format not in (1, 2):
            raise ValidationError("gpo_format/response_format: expected 1 or 2")
        try:
            object.__setattr__(self, "cvn", CVN(self.cvn))
        except ValueError as exc:
            raise ValidationError(f"cvn: unsupported cryptogram version {self.cvn!r}") from exc
        check_iad_template(int(self.cvn), self.iad_template)
        if not 1 <= self.pin_try_limit <= 15:
            raise ValidationError("pin_try_limit: expected 1..15")
        if not 0 <= self.initial_atc <= 0xFFFF:
            raise ValidationError("initial_atc: expected 0..65535")
        if not 4 <= self.script_mac_length <= 8:
            raise ValidationError("script_mac_length: expected 4..8")
        if self.pan:
            _check_pan(self.pan)
        _check_psn(self.psn)
        for name in ("mk_ac", "mk_smi", "mk_smc"):
            value = getattr(self, name)
            if value:
                _check_key(name, value)
        try:
            decode(self.fci_proprietary)
            if self.pdol:
                parse_dol(self.pdol)
        except ApduFormatError as exc:
            raise ValidationError(f"fci_proprietary/pdol: not valid BER-TLV / DOL: {exc}") from exc
        tags = _record_tags(self.records)
        for tag, name in ((0x8C, "CDOL1"), (0x8D, "CDOL2")):
            if tag not in tags:
                raise ValidationError(f"records: the profile has no {name} (tag {tag:02X})")
            try:
                parse_dol(tags[tag])
            except ApduFormatError as exc:
                raise ValidationError(f"records: {name} is not a valid DOL: {exc}") from exc
        keys = {(r.sfi, r.number) for r in self.records}
        if len(keys) != len(self.records):
            raise ValidationError("records: duplicate (sfi, record number)")
        for i in range(0, len(self.afl), 4):
            sfi, first, last = self.afl[i] >> 3, self.afl[i + 1], self.afl[i + 2]
            for number in range(first, last + 1):
                if (sfi, number) not in keys:
                    raise ValidationError(f"afl: names SFI {sfi} record {number}, which the profile lacks")

    def __repr__(self) -> str:
        pan = f"pan_last4={self.pan[-4:]!r}, " if self.pan else ""
        return (
            f"CardProfile(name={self.name!r}, aid={self.aid.hex().upper()!r}, cvn=0x{int(self.cvn):02X}, "
            f"reader_profile={self.reader_profile!r}, "
            f"{pan}psn={self.psn!r}, personalised={self.is_personalised})"
        )

    # ------------------------------------------------------------------ derived values
    @functools.cached_property
    def _tags(self) -> dict[int, bytes]:
        return _record_tags(self.records)

    @property
    def cdol1(self) -> bytes:
        """CDOL1 (tag ``8C``) from the records."""
        return self._tags[0x8C]

    @property
    def cdol2(self) -> bytes:
        """CDOL2 (tag ``8D``) from the records."""
        return self._tags[0x8D]

    @property
    def iaf(self) -> bytes:
        """Issuer authentication flags ``9F55`` (empty when absent)."""
        return self._tags.get(0x9F55, b"")

    @property
    def ipb(self) -> bytes:
        """Issuer proprietary bitmap ``9F56`` (empty when absent)."""
        return self._tags.get(0x9F56, b"")

    @property
    def iad_format(self) -> IadFormat:
        """IAD layout family, chosen by :attr:`cvn`."""
        return iad_format_for_cvn(int(self.cvn))

    @property
    def is_personalised(self) -> bool:
        """True when the profile has a PAN and ICC keys (a card, not a template)."""
        return bool(self.pan and self.mk_ac and self.mk_smi and self.mk_smc)

    @property
    def fci(self) -> bytes:
        """The full SELECT answer data (``6F`` template)."""
        a5 = self.fci_proprietary + (encode(0x9F38, self.pdol) if self.pdol else b"")
        return encode(0x6F, encode(0x84, self.aid) + encode(0xA5, a5))

    # ------------------------------------------------------------------ personalisation
    def personalise(
        self,
        *,
        pan: str,
        psn: str = "00",
        imk_ac: bytes,
        imk_smi: bytes,
        imk_smc: bytes,
    ) -> CardProfile:
        """Return this template with a PAN, PSN and ICC keys derived from the IMKs.

        The ``5A`` (PAN) and ``5F34`` (PSN) values inside the records are replaced; records
        without them stay as they are (the NatWest card has no PAN in its record).
        """
        _check_pan(pan)
        _check_psn(psn)
        imks = {
            "imk_ac": _check_key("imk_ac", imk_ac),
            "imk_smi": _check_key("imk_smi", imk_smi),
            "imk_smc": _check_key("imk_smc", imk_smc),
        }
        opt = self.key_derivation
        records = tuple(
            Record(sfi=r.sfi, number=r.number, data=_personalise_record(r.data, pan, psn))
            for r in self.records
        )
        return replace(
            self,
            pan=pan,
            psn=psn,
            records=records,
            mk_ac=derive_icc_mk(imks["imk_ac"], pan, psn, option=opt),
            mk_smi=derive_icc_mk(imks["imk_smi"], pan, psn, option=opt),
            mk_smc=derive_icc_mk(imks["imk_smc"], pan, psn, option=opt),
            kcv_imk_ac=key_check_value(imks["imk_ac"]),
            kcv_imk_smi=key_check_value(imks["imk_smi"]),
            kcv_imk_smc=key_check_value(imks["imk_smc"]),
        )

    def with_overrides(self, **overrides: Any) -> CardProfile:
        """Return a copy with fields replaced; ``cvn`` also fixes the IAD template.

        Switching to a CVN of the other family (VIS ↔ M/Chip) installs that family's default
        IAD template with the profile's DKI; within a family only the CVN byte changes. A new
        ``aid`` without a ``reader_profile`` gets the reader profile that AID selects.
        """
        allowed = {f.name for f in fields(self)} - {"mk_ac", "mk_smi", "mk_smc", "pan", "psn", "records"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ValidationError(f"overrides: unknown profile field(s) {sorted(unknown)}")
        if "aid" in overrides and "reader_profile" not in overrides:
            overrides["reader_profile"] = ""
        if "cvn" in overrides and "iad_template" not in overrides:
            try:
                new_cvn = int(overrides["cvn"])
            except (TypeError, ValueError) as exc:
                raise ValidationError("cvn: expected an integer cryptogram version") from exc
            old_fmt = self.iad_format
            new_fmt = iad_format_for_cvn(new_cvn)
            tpl = bytearray(self.iad_template)
            if new_fmt is old_fmt:
                tpl[2 if new_fmt is IadFormat.VIS else 1] = new_cvn
                overrides["iad_template"] = bytes(tpl)
            else:
                dki = tpl[1] if old_fmt is IadFormat.VIS else tpl[0]
                overrides["iad_template"] = default_iad_template(new_cvn, dki)
        return replace(self, **overrides)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: binary values as upper-case hex (architecture.md §5)."""
        return {
            "name": self.name,
            "reader_profile": self.reader_profile,
            "aid": _hex(self.aid),
            "fci_proprietary": _hex(self.fci_proprietary),
            "pdol": _hex(self.pdol),
            "label": self.label,
            "pse": self.pse,
            "aip": _hex(self.aip),
            "afl": _hex(self.afl),
            "records": [{"sfi": r.sfi, "record": r.number, "data": _hex(r.data)} for r in self.records],
            "gpo_format": self.gpo_format,
            "response_format": self.response_format,
            "cvn": int(self.cvn),
            "iad_template": _hex(self.iad_template),
            "atr": _hex(self.atr),
            "pin_try_limit": self.pin_try_limit,
            "initial_atc": self.initial_atc,
            "key_derivation": str(self.key_derivation),
            "pan": self.pan,
            "psn": self.psn,
            "mk_ac": _hex(self.mk_ac),
            "mk_smi": _hex(self.mk_smi),
            "mk_smc": _hex(self.mk_smc),
            "kcv_imk_ac": _hex(self.kcv_imk_ac),
            "kcv_imk_smi": _hex(self.kcv_imk_smi),
            "kcv_imk_smc": _hex(self.kcv_imk_smc),
            "script_mac_length": self.script_mac_length,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardProfile:
        """Inverse of :meth:`to_dict`. Raises ``ValidationError`` naming the bad field.

        A dict without ``reader_profile`` (a card file written before the field existed) gets
        the reader profile its AID selects.
        """
        if not isinstance(data, Mapping):
            raise ValidationError("profile: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValidationError(f"profile: unknown field(s) {sorted(unknown)}")
        binary = set(_BYTES_FIELDS)
        kwargs: dict[str, Any] = {}
        try:
            for key, value in data.items():
                if key in binary:
                    if not isinstance(value, str):
                        raise ValidationError(f"profile.{key}: expected a hex string")
                    kwargs[key] = bytes.fromhex(value)
                elif key == "records":
                    if not isinstance(value, list):
                        raise ValidationError("profile.records: expected a list")
                    kwargs[key] = tuple(
                        Record(sfi=int(r["sfi"]), number=int(r["record"]), data=bytes.fromhex(r["data"]))
                        for r in value
                    )
                elif key == "key_derivation":
                    kwargs[key] = KeyDerivation(value)
                elif key in ("pse",):
                    if type(value) is not bool:
                        raise ValidationError(f"profile.{key}: expected true or false")
                    kwargs[key] = value
                elif key in ("name", "reader_profile", "label", "pan", "psn"):
                    if not isinstance(value, str):
                        raise ValidationError(f"profile.{key}: expected a string")
                    kwargs[key] = value
                else:
                    if type(value) is not int:
                        raise ValidationError(f"profile.{key}: expected an integer")
                    kwargs[key] = value
            return cls(**kwargs)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"profile: malformed field ({exc})") from exc


def _personalise_record(data: bytes, pan: str, psn: str) -> bytes:
    (tpl,) = decode(data)
    parts: list[bytes] = []
    for child in tpl.children:
        if child.tag == 0x5A:
            parts.append(encode(0x5A, encode_pan(pan)))
        elif child.tag == 0x5F34:
            parts.append(encode(0x5F34, bytes.fromhex(psn)))
        else:
            parts.append(_reencode(child))
    return encode(0x70, b"".join(parts))


def _reencode(obj: Tlv) -> bytes:
    return obj.to_bytes()
