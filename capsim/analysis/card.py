"""The card an analysis is about, as a description that a card design and a real card both fill.

Theory of operation
-------------------
1. **What the analysis reads of a card** is a :class:`CardDescription`: the AID, the CDOL1,
   the AIP, the IPB, the IAF, whether the card has a PSN, its PIN try limit and the tries
   left, and the reader profile chosen for it (all readable before the PIN), plus the
   cryptogram version (CVN) and the ARQC IAD variants (V10), which only a GENERATE AC shows.
2. **Two sources fill it.** :func:`describe_profile`: a card's design (a built-in template or
   a card file's profile) gives everything, and keeps the design itself (:attr:`design`) for
   the experiments on emulated twins (:mod:`capsim.analysis.emulate`).
   :func:`describe_summary`: what :func:`capsim.reader.discover` read from a card (SELECT, GET
   PROCESSING OPTIONS, READ RECORD, GET DATA ``9F17``; no VERIFY, no GENERATE AC) gives the
   first group and leaves :attr:`cvn` and :attr:`iad_variants` unknown (``None``), never a
   default. :func:`with_arqc_iad` fills them from the IAD of one PIN-verified GENERATE AC on
   the card (``capsim analyze --allow-state-changes``).
3. **From one ARQC IAD to the variants** (:func:`iad_params_from_arqc`): the CVN byte's place
   tells the layout family (VIS: ``06 DKI CVN 03 CVR``; M/Chip: ``LL CVN CVR(6) …``, checked by
   :func:`capsim.iad.check_iad_template`); the template is the IAD with its CVR zeroed; the
   M/Chip CVR after a right PIN shows the try counter at its limit. The variants are then
   :func:`capsim.iad.arqc_iad_variants` of those parameters, the same prediction an enrolment
   stores. An IAD of neither shape leaves both unknown.
4. :meth:`CardDescription.credential_profile` is the verifier's view
   (:class:`~capsim.verifier.model.CredentialProfile`). With the variants unknown it has
   none, and ``cvn`` 0: the sections that use it read only the CDOL1, IAF, IPB and reader
   profile (cryptogram inputs, code layout, freshness), and the guessing section is told
   that V is unknown (:mod:`capsim.analysis.guessing`).
5. Pure except :func:`describe_summary`'s reading of a finished discovery's transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from capsim.cards import CardProfile
from capsim.errors import ValidationError
from capsim.iad import MCHIP_CVR_LAYOUT, VIS_CVR_LAYOUT, IadFormat, IadParams, arqc_iad_variants
from capsim.reader import CardSummary
from capsim.tlv import decode, find
from capsim.verifier.enrolment import credential_profile_from_card
from capsim.verifier.model import CredentialProfile

__all__ = [
    "CardDescription",
    "describe_profile",
    "describe_summary",
    "iad_params_from_arqc",
    "with_arqc_iad",
]

_GPO = 0xA8


@dataclass(frozen=True, kw_only=True)
class CardDescription:
    """What the analysis knows of one card (module docstring, step 1)."""

    name: str
    source: str  # "template", "card file" or "reader"
    aid: bytes
    cdol1: bytes
    aip: bytes
    ipb: bytes
    iaf: bytes
    psn_present: bool
    reader_profile: str
    pin_try_limit: int | None
    pin_tries: int | None
    cvn: int | None = None
    iad_variants: tuple[bytes, ...] | None = None
    design: CardProfile | None = None

    @property
    def variants_known(self) -> bool:
        """Whether the CVN and the IAD variants are known (a design, or a GENERATE AC seen)."""
        return self.cvn is not None and self.iad_variants is not None

    def credential_profile(self) -> CredentialProfile:
        """The verifier's view of the card (step 4)."""
        return CredentialProfile(
            reader_profile=self.reader_profile,
            cdol1=self.cdol1,
            aip=self.aip,
            ipb=self.ipb,
            iaf=self.iaf,
            cvn=self.cvn if self.cvn is not None else 0,
            iad_variants=self.iad_variants or (),
        )


def describe_profile(
    card: CardProfile, *, reader_profile: str | None = None, source: str = "template"
) -> CardDescription:
    """A card design's description (step 2): everything known, the design kept."""
    cred = credential_profile_from_card(card, reader_profile=reader_profile)
    return CardDescription(
        name=card.name,
        source=source,
        aid=card.aid,
        cdol1=cred.cdol1,
        aip=cred.aip,
        ipb=cred.ipb,
        iaf=cred.iaf,
        psn_present=any(_has_psn(record.data) for record in card.records),
        reader_profile=cred.reader_profile,
        pin_try_limit=card.pin_try_limit,
        pin_tries=card.pin_try_limit,  # a fresh twin's counter
        cvn=cred.cvn,
        iad_variants=cred.iad_variants,
        design=card,
    )


def _has_psn(record: bytes) -> bool:
    try:
        return find(decode(record), 0x5F34) is not None
    except ValueError:
        return False


def _aip(transcript: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The AIP of the GET PROCESSING OPTIONS answer (format 1 ``80``, or ``82`` inside ``77``)."""
    for command, response in transcript:
        if len(command) < 2 or command[1] != _GPO or response[-2:] != b"\x90\x00":
            continue
        try:
            objs = decode(response[:-2])
        except ValueError:  # ApduFormatError is a ValueError
            return b""
        format1 = find(objs, 0x80)
        if format1 is not None:
            return format1.value[:2]
        aip = find(objs, 0x82)
        return aip.value if aip is not None else b""
    return b""


def describe_summary(summary: CardSummary, *, name: str) -> CardDescription:
    """A real card's description from its discovery (step 2): CVN and IAD variants unknown.

    Raises
    ------
    ValidationError
        The card gave no CDOL1 (``8C``): no CAP run is possible with it.
    """
    data = summary.data
    cdol1 = data.get(0x8C)
    if cdol1 is None:
        raise ValidationError("card: the card gave no CDOL1 (8C); it cannot compute a CAP code")
    return CardDescription(
        name=name,
        source="reader",
        aid=summary.aid,
        cdol1=cdol1,
        aip=_aip(summary.transcript),
        ipb=data.get(0x9F56, b""),
        iaf=data.get(0x9F55, b""),
        psn_present=0x5F34 in data,
        reader_profile=summary.profile,
        pin_try_limit=None,  # a real card does not say; its counter after a right PIN does
        pin_tries=summary.pin_tries,
    )


def iad_params_from_arqc(iad: bytes) -> IadParams | None:
    """Step 3: the IAD parameters of a card from one PIN-verified ARQC IAD, or ``None``.

    >>> p = iad_params_from_arqc(bytes.fromhex("06770A03A49000"))
    >>> p.cvn, p.iad_template.hex().upper()
    (10, '06770A03000000')
    >>> p = iad_params_from_arqc(bytes.fromhex("0C10A50003040000000000000000000000FF"))
    >>> p.cvn, p.pin_try_limit, p.iad_template.hex().upper()
    (16, 3, '0C10000000000000000000000000000000FF')
    >>> iad_params_from_arqc(b"\\x01\\x02") is None
    True
    """
    if len(iad) >= 7 and iad[0] == 0x06 and iad[3] == 0x03:
        fmt, cvn = IadFormat.VIS, iad[2]
    elif len(iad) >= 18:
        fmt, cvn = IadFormat.MCHIP, iad[1]
    else:
        return None
    layout = VIS_CVR_LAYOUT if fmt is IadFormat.VIS else MCHIP_CVR_LAYOUT
    template = iad[: layout.offset] + bytes(layout.length) + iad[layout.offset + layout.length :]
    limit = 3
    if layout.pin_tries is not None:
        index, shift = layout.pin_tries
        limit = (iad[layout.offset + index] >> shift) & 0x0F or 3
    try:
        return IadParams(iad_template=template, cvn=cvn, pin_try_limit=limit)
    except ValidationError:
        return None  # a CVN of another layout family than the IAD's shape


def with_arqc_iad(card: CardDescription, iad: bytes) -> CardDescription:
    """``card`` with the CVN and IAD variants one ARQC IAD shows (step 3); unchanged if it shows
    neither."""
    params = iad_params_from_arqc(iad)
    if params is None:
        return card
    limit = card.pin_try_limit if card.pin_try_limit is not None else params.pin_try_limit
    return replace(card, cvn=params.cvn, iad_variants=arqc_iad_variants(params), pin_try_limit=limit)
