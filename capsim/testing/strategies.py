"""Public Hypothesis strategies for capsim and for projects that test EMV-CAP code.

Every strategy returns a typed :class:`hypothesis.strategies.SearchStrategy` and draws only
what the spec allows (or, for the ``malformed_*`` / ``adversarial_*`` ones, what it forbids):

* APDUs by ISO 7816-4 case (:func:`command_apdus`, :func:`raw_apdus`) and by EMV command
  (:func:`emv_commands`, cap-protocol.md §2 and §9.3);
* BER-TLV trees, well-formed (:func:`tlv_trees`, :func:`tlv_bytes`) and malformed
  (:func:`malformed_tlv_bytes`), and DOLs (:func:`dols`);
* personalised card profiles and cards (:func:`card_profiles`, :func:`cards`) and the CDOL1
  data a reader sends them (:func:`cdol_data`);
* CAP inputs: challenges, amounts, currencies, TDS fields, PINs and PIN blocks, codes
  (cap-protocol.md §4–§7, verifier.md V42).

>>> from hypothesis import given
>>> @given(command_apdus(case=2))
... def check(apdu):
...     assert apdu.case == 2 and CommandApdu.from_bytes(apdu.to_bytes()) == apdu
>>> check()
"""

from __future__ import annotations

from hypothesis import strategies as st

from capsim.apdu import CommandApdu
from capsim.apdu.builders import PSE_NAME
from capsim.cap import CURRENCIES, MAX_AMOUNT
from capsim.cards import BUILTIN_PROFILES, CardProfile, EmvCapCard, new_card
from capsim.tags import TAGS
from capsim.tlv import DolEntry, Tlv, encode_dol, encode_length

__all__ = [
    "EMV_COMMAND_NAMES",
    "TEST_IMK",
    "adversarial_challenges",
    "adversarial_codes",
    "amounts",
    "card_profile_names",
    "card_profiles",
    "cards",
    "cdol_data",
    "challenges",
    "codes",
    "command_apdus",
    "currencies",
    "dol_bytes",
    "dols",
    "emv_commands",
    "malformed_tlv_bytes",
    "pin_blocks",
    "pins",
    "raw_apdus",
    "tds_fields",
    "tlv_bytes",
    "tlv_trees",
]

#: Issuer master key of the test personalisation (vectors.md IMK-A, KCV 08D7B4).
TEST_IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

#: Names accepted by :func:`emv_commands`.
EMV_COMMAND_NAMES = (
    "select",
    "gpo",
    "read_record",
    "get_data",
    "verify",
    "generate_ac",
    "get_challenge",
    "external_authenticate",
    "script",
)

_BYTE = st.integers(0, 255)


# ----------------------------------------------------------------------------- APDUs
@st.composite
def command_apdus(
    draw: st.DrawFn, *, case: int | None = None, extended: bool | None = False, max_data: int = 300
) -> CommandApdu:
    """Structurally valid command APDUs of ISO 7816-4 ``case`` (1–4; any when ``None``).

    Parameters
    ----------
    case:
        1 (header only), 2 (Le), 3 (data), 4 (data and Le), or ``None`` for any.
    extended:
        ``False`` short form only (the default: what T=0 and most cards take), ``True``
        extended only, ``None`` both (case 1 has only the short form).
    max_data:
        Longest command data drawn (extended form only beyond 255).
    """
    chosen = case if case is not None else draw(st.integers(1, 4))
    if chosen not in (1, 2, 3, 4):
        raise ValueError("case: expected 1, 2, 3, 4 or None")
    ext = (draw(st.booleans()) if extended is None else extended) and chosen != 1  # case 1: short only
    cla = draw(_BYTE)
    ins = draw(_BYTE)
    p1, p2 = draw(_BYTE), draw(_BYTE)
    data_max = min(max_data, 65535 if ext else 255)
    data = draw(st.binary(min_size=1, max_size=max(1, data_max))) if chosen in (3, 4) else b""
    le: int | None = None
    if chosen in (2, 4):
        le = draw(st.integers(1, 65536 if ext else 256))
    return CommandApdu(cla, ins, p1, p2, data, le, extended=ext)


def raw_apdus(*, max_size: int = 300) -> st.SearchStrategy[bytes]:
    """Arbitrary byte strings of 0..``max_size`` bytes, biased towards APDU-like headers."""
    headers = st.tuples(st.sampled_from((0x00, 0x80, 0x84, 0x0C, 0xFF)), _BYTE, _BYTE, _BYTE).map(bytes)
    apdu_like = st.tuples(headers, st.binary(max_size=max(0, max_size - 4))).map(lambda t: t[0] + t[1])
    return st.one_of(st.binary(max_size=max_size), apdu_like)


def _verify_command(block: bytes) -> CommandApdu:
    return CommandApdu(0x00, 0x20, 0x00, 0x80, block)


@st.composite
def emv_commands(
    draw: st.DrawFn,
    *,
    names: tuple[str, ...] = EMV_COMMAND_NAMES,
    aid: bytes = bytes.fromhex("A0000000048002"),
    pdol_length: int = 0,
    cdol1_length: int = 29,
    cdol2_length: int = 31,
    pin: str | None = None,
    valid: float = 0.8,
) -> CommandApdu:
    """EMV commands (cap-protocol.md §2, §9.3), mostly well-formed, sometimes off by a field.

    Parameters
    ----------
    names:
        Which commands to draw from (:data:`EMV_COMMAND_NAMES`).
    aid, pdol_length, cdol1_length, cdol2_length:
        The card's AID and DOL lengths, so that well-formed commands can be built.
    pin:
        The card's PIN, when known: a third of the well-formed VERIFY commands carry it.
    valid:
        Probability (approximately) that the command is well-formed for those values.
    """
    unknown = sorted(set(names) - set(EMV_COMMAND_NAMES))
    if unknown or not names:
        raise ValueError(f"names: expected a non-empty subset of {EMV_COMMAND_NAMES}, got {unknown}")
    name = draw(st.sampled_from(names))
    good = draw(st.integers(0, 99)) < int(valid * 100)
    if name == "select":
        name_bytes = aid if good else draw(st.one_of(st.binary(max_size=16), st.just(PSE_NAME)))
        return CommandApdu(0x00, 0xA4, 0x04, 0x00 if good else draw(_BYTE), name_bytes, 256)
    if name == "gpo":
        if good:
            return CommandApdu(0x80, 0xA8, 0, 0, bytes((0x83, pdol_length)) + bytes(pdol_length), 256)
        junk = draw(st.binary(min_size=1, max_size=40))
        return CommandApdu(0x80, 0xA8, draw(_BYTE), draw(_BYTE), junk, 256)
    if name == "read_record":
        sfi = draw(st.integers(1, 3)) if good else draw(st.integers(0, 31))
        p2 = (sfi << 3) | 4 if good else draw(_BYTE)
        return CommandApdu(0x00, 0xB2, draw(st.integers(1, 4)) if good else draw(_BYTE), p2, b"", 256)
    if name == "get_data":
        tag = draw(st.sampled_from((0x9F17, 0x9F36, 0x9F13))) if good else draw(st.integers(0, 0xFFFF))
        return CommandApdu(0x80, 0xCA, tag >> 8, tag & 0xFF, b"", 256)
    if name == "verify":
        if good:
            correct = pin is not None and draw(st.integers(0, 2)) == 0
            return _verify_command(draw(pin_blocks(pin=pin, malformed=0.0) if correct else pin_blocks()))
        return CommandApdu(0x00, 0x20, draw(_BYTE), draw(_BYTE), draw(st.binary(min_size=1, max_size=12)))
    if name == "generate_ac":
        p1 = draw(st.sampled_from((0x00, 0x40, 0x80))) if good else draw(_BYTE)
        length = draw(st.sampled_from((cdol1_length, cdol2_length))) if good else draw(st.integers(1, 64))
        data = draw(st.binary(min_size=length, max_size=length))
        return CommandApdu(0x80, 0xAE, p1, 0x00 if good else draw(_BYTE), data, 256)
    if name == "get_challenge":
        return CommandApdu(0x00, 0x84, 0, 0, b"", 8)
    if name == "external_authenticate":
        return CommandApdu(0x00, 0x82, 0, 0, draw(st.binary(min_size=8 if good else 1, max_size=16)))
    ins = draw(st.sampled_from((0x24, 0x1E, 0x18, 0x16)))
    return CommandApdu(0x84, ins, 0, draw(st.integers(0, 2)), draw(st.binary(min_size=4, max_size=24)))


# ----------------------------------------------------------------------------- TLV, DOL
_PRIMITIVE_TAGS = tuple(sorted(t for t, info in TAGS.items() if not info.constructed))
_CONSTRUCTED_TAGS = (0x70, 0x77, 0x6F, 0xA5, 0xBF0C, 0x61)


def tlv_trees(*, max_leaves: int = 12, max_value: int = 40) -> st.SearchStrategy[Tlv]:
    """Well-formed BER-TLV trees (EMV Book 3 Annex B) of known and arbitrary tags."""
    primitive_tag = st.one_of(st.sampled_from(_PRIMITIVE_TAGS), st.sampled_from((0x9F7F, 0xDF01, 0x5F50)))
    leaves = st.builds(Tlv, primitive_tag, st.binary(max_size=max_value))

    def extend(children: st.SearchStrategy[Tlv]) -> st.SearchStrategy[Tlv]:
        return st.builds(
            lambda tag, kids: Tlv(tag, children=tuple(kids)),
            st.sampled_from(_CONSTRUCTED_TAGS),
            st.lists(children, max_size=4),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def tlv_bytes(*, max_objects: int = 4) -> st.SearchStrategy[bytes]:
    """The encoding of 1..``max_objects`` well-formed trees, concatenated."""
    return st.lists(tlv_trees(), min_size=1, max_size=max_objects).map(
        lambda objs: b"".join(o.to_bytes() for o in objs)
    )


@st.composite
def malformed_tlv_bytes(draw: st.DrawFn) -> bytes:
    """BER-TLV that a strict decoder must refuse or survive: truncated values, lengths ``80``
    and ``84``+, unterminated multi-byte tags, lengths beyond the data, deep nesting."""
    good = draw(tlv_bytes(max_objects=2))
    kind = draw(st.integers(0, 5))
    if kind == 0 and len(good) > 1:  # truncated
        return good[: draw(st.integers(1, len(good) - 1))]
    if kind == 1:  # indefinite or oversized length form
        return bytes((0x5A, draw(st.sampled_from((0x80, 0x84, 0x85, 0xFF))))) + draw(st.binary(max_size=8))
    if kind == 2:  # tag that never ends
        return b"\x9f" + b"\xff" * draw(st.integers(0, 6))
    if kind == 3:  # length longer than what follows
        return b"\x70\x82\xff\xff" + draw(st.binary(max_size=16))
    if kind == 4:  # nested past MAX_DEPTH
        depth = draw(st.integers(33, 60))
        inner = b"\x5a\x00"
        for _ in range(depth):
            inner = b"\x70" + encode_length(len(inner)) + inner
        return inner
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(_BYTE)
    return bytes(data)


def dols(*, max_entries: int = 12) -> st.SearchStrategy[tuple[DolEntry, ...]]:
    """Data object lists (EMV Book 3 §5.4): known tags with plausible lengths."""
    entry = st.builds(
        DolEntry, st.one_of(st.sampled_from(_PRIMITIVE_TAGS), st.just(0x9F7F)), st.integers(0, 32)
    )
    return st.lists(entry, max_size=max_entries).map(tuple)


def dol_bytes(*, max_entries: int = 12) -> st.SearchStrategy[bytes]:
    """The encoding of :func:`dols`."""
    return dols(max_entries=max_entries).map(encode_dol)


# ----------------------------------------------------------------------------- cards
def card_profile_names() -> st.SearchStrategy[str]:
    """Names of the built-in card profiles."""
    return st.sampled_from(sorted(BUILTIN_PROFILES))


def _pans() -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=12, max_size=19).filter(lambda p: p[0] != "0")


@st.composite
def cards(draw: st.DrawFn, *, profile: str | None = None, pin: str | None = None) -> EmvCapCard:
    """Fresh in-memory cards of a built-in profile, random PAN/PSN/PIN, test keys, fixed RNG."""
    name = profile if profile is not None else draw(card_profile_names())
    return new_card(
        name,
        pan=draw(_pans()),
        psn=draw(st.sampled_from(("00", "01", "02"))),
        pin=pin if pin is not None else draw(pins()),
        imk_ac=TEST_IMK,
        rng=bytes,
    )


def card_profiles(*, profile: str | None = None) -> st.SearchStrategy[CardProfile]:
    """Personalised :class:`~capsim.cards.CardProfile` values (see :func:`cards`)."""
    return cards(profile=profile).map(lambda c: c.profile)


@st.composite
def cdol_data(draw: st.DrawFn, cdol: bytes, *, reader_profile: str = "mc-cap") -> bytes:
    """CDOL1 data a CAP reader would send for ``cdol`` (cap-protocol.md §4): a drawn mode with
    its challenge, amount and currency, filled by :func:`capsim.cap.build_cdol_data`."""
    from capsim.cap import CapMode, build_cdol_data
    from capsim.profiles import get_reader_profile

    mode = draw(st.sampled_from((CapMode.IDENTIFY, CapMode.RESPOND, CapMode.SIGN)))
    challenge = draw(challenges()) if mode is not CapMode.IDENTIFY else None
    amount = draw(amounts(max_value=10**9)) if mode is CapMode.SIGN else None
    currency = draw(currencies()) if mode is CapMode.SIGN else None
    return build_cdol_data(
        cdol, get_reader_profile(reader_profile), mode, challenge=challenge, amount=amount, currency=currency
    )


# ----------------------------------------------------------------------------- CAP inputs
def challenges() -> st.SearchStrategy[str]:
    """Valid challenges: 1..8 ASCII digits (cap-protocol.md §4)."""
    return st.text("0123456789", min_size=1, max_size=8)


def adversarial_challenges() -> st.SearchStrategy[str]:
    """Challenges a parser must refuse or canonicalise: too long, non-ASCII digits, signs, blanks."""
    return st.one_of(
        st.text("0123456789", min_size=9, max_size=40),
        st.text(max_size=20),
        st.sampled_from(("", " 1234", "12 34", "+1234", "١٢٣", "0x12", "12345678\n")),
    )


def amounts(*, max_value: int = MAX_AMOUNT) -> st.SearchStrategy[int]:
    """Amounts in integer minor units, 0..``max_value`` (12 digits at most)."""
    return st.integers(0, max_value)


def currencies() -> st.SearchStrategy[str]:
    """ISO 4217 alphabetic codes capsim knows."""
    return st.sampled_from(sorted(CURRENCIES))


def tds_fields() -> st.SearchStrategy[tuple[str, ...]]:
    """TDS data fields: 1..10 fields of 1..10 digits (cap-protocol.md §7)."""
    return st.lists(st.text("0123456789", min_size=1, max_size=10), min_size=1, max_size=10).map(tuple)


def pins(*, min_size: int = 4, max_size: int = 12) -> st.SearchStrategy[str]:
    """Offline PINs: 4..12 digits."""
    return st.text("0123456789", min_size=min_size, max_size=max_size)


@st.composite
def pin_blocks(draw: st.DrawFn, *, pin: str | None = None, malformed: float = 0.2) -> bytes:
    """8-byte ISO 9564 format-2 PIN blocks (plaintext offline PIN), sometimes malformed."""
    if draw(st.integers(0, 99)) < int(malformed * 100):
        return draw(st.binary(min_size=8, max_size=8))
    value = pin if pin is not None else draw(pins())
    text = f"2{len(value):X}{value}".ljust(16, "F")
    return bytes.fromhex(text)


def codes(*, digits: int = 8) -> st.SearchStrategy[str]:
    """Well-formed CAP codes: exactly ``digits`` ASCII digits."""
    return st.text("0123456789", min_size=digits, max_size=digits)


def adversarial_codes() -> st.SearchStrategy[str]:
    """Codes a verifier must reject uniformly: wrong length, spaces, Unicode digits, huge text."""
    return st.one_of(
        st.text(max_size=40),
        st.text("0123456789", min_size=0, max_size=24),
        st.sampled_from(("", "1234 5678", "１２３４５６７８", "12345678\x00", "-1234567", "9" * 200)),
    )
