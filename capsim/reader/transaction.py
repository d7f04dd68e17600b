"""The transaction: handlers of the ``GPO``, ``READ_RECORD``, ``GET_PTC``, ``VERIFY``,
``FIRST_AC`` and ``SECOND_AC`` phases, and the code made from the first cryptogram.

Theory of operation
===================

(cap-protocol.md §2 steps 2–7, §4, §6–§8)

1. GPO's answer (format 1 ``80`` or format 2 ``77``) gives the AIP and the AFL; READ RECORD
   reads every record of every AFL entry (at most :data:`~capsim.reader.phases.MAX_RECORDS`).
   A record of an SFI ≤ 10 must be a ``70`` template; the first value of a tag wins, a
   different repeat adds a warning. A record's IAF wins over the FCI's.
2. After the last record, before the PIN is tried: the card must have CDOL1 (``8C``), and
   CDOL2 (``8D``) when the profile sends the closing AAC; both DOLs must parse; a PSN
   (``5F34``) must be one byte; the CDOL values of the run are fixed
   (:func:`capsim.cap.cdol_values`), and a Sign whose IAF asks for an amount or a currency the
   caller did not give fails with :class:`~capsim.errors.ValidationError`. A currency the card
   does not sign (IAF b6) is not sent; when it still gave a decimal amount another scale than
   the 2 decimals it has without a currency (``"15"`` JPY is 15 minor units, 1500 without a
   currency), a warning says so and which scale was used.
3. GET DATA ``9F17``: fewer tries than the profile's limit add a warning; zero tries raises
   :class:`~capsim.errors.PinBlockedError` without sending VERIFY, and before a PIN asked for
   later (:data:`~capsim.reader.run.ASK_PIN`) is asked. A card that cannot answer is not an
   error.
4. With a PIN asked for later, the session then waits in ``PIN`` for it
   (:func:`on_pin_entered` follows). VERIFY carries an ISO 9564 format-2 block and no Le.
   ``63Cx`` → :class:`~capsim.errors.PinError` (``tries_left``; ``63C0``: that wrong PIN
   blocked the PIN), ``6983``/``6984`` → :class:`~capsim.errors.PinBlockedError`. A run
   without a PIN (no cardholder verification) sends no VERIFY: GENERATE AC #1 follows GET
   DATA ``9F17``, and zero tries is only a warning.
5. GENERATE AC #1 asks for an ARQC with the CDOL1 data (§4); a card answering with another
   cryptogram type gets a warning (the bank will refuse the code). The code follows §6 (IPB),
   §7 (TDS: the MAC replaces the AC) or §8 (fallback IPBs, the Belgian function), then an
   optional PSN prefix.
6. GENERATE AC #2 asks for an AAC with the CDOL2 data (:func:`capsim.cap.build_cdol2_data`)
   when the profile's ``send_aac`` is set; its answer only adds a warning when it is not
   ``9000``.
"""

from __future__ import annotations

from functools import partial

from capsim.apdu import builders
from capsim.apdu.response import ResponseApdu, status_error
from capsim.cap import (
    IAF_PSN,
    CapMode,
    belgian_code,
    build_cdol2_data,
    cdol_values,
    currency_exponent,
    data_string,
    decimal_code,
    explain_belgian,
    explain_ipb,
    ipb_bit_count,
    ipb_extract,
    major_units,
    tds_mac,
)
from capsim.errors import (
    ApduFormatError,
    CodeOverflowError,
    PinBlockedError,
    RemoteProtocolError,
    UnknownIssuerProfile,
)
from capsim.profiles import FALLBACK_IPBS, CodeFunction, NoIpbFallback
from capsim.reader.apdus import GET_PTC, read_record, template, tlv_map
from capsim.reader.phases import MAX_IAD, MAX_RECORDS, Phase, Step
from capsim.reader.result import Explanation
from capsim.reader.run import FirstAc, InputError, Inputs, Run
from capsim.tlv import decode, fill_dol, find, parse_dol

__all__ = [
    "on_first_ac",
    "on_gpo",
    "on_pin_entered",
    "on_ptc",
    "on_ptc_unavailable",
    "on_record",
    "on_second_ac",
    "on_verified",
    "on_wrong_pin",
]

# ---------------------------------------------------------------- GPO and records (rules 1, 2)


def on_gpo(run: Run, response: ResponseApdu) -> Step:
    """AIP and AFL: queue every AFL record, read the first."""
    fmt1, _ = template(response.data, 0x80)
    fmt2, inner = template(response.data, 0x77)
    if fmt1 is not None and not fmt1.constructed:
        aip, afl = fmt1.value[:2], fmt1.value[2:]
    elif fmt2 is not None:
        aip, afl = inner.get(0x82, b""), inner.get(0x94, b"")
    else:
        raise RemoteProtocolError("GPO answer is neither format 1 (80) nor format 2 (77)")
    if len(aip) != 2:
        raise RemoteProtocolError("GPO answer: the AIP must be 2 bytes")
    if not afl or len(afl) % 4:
        raise RemoteProtocolError(
            f"GPO answer: the AFL must be a non-empty multiple of 4 bytes, got {len(afl)}"
        )
    records: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        if not 1 <= sfi <= 30 or first == 0 or last < first or last == 0xFF:
            raise RemoteProtocolError(f"GPO answer: malformed AFL entry {afl[i : i + 4].hex().upper()}")
        records.extend((sfi, rec) for rec in range(first, last + 1))
        if len(records) > MAX_RECORDS:
            raise RemoteProtocolError(f"GPO answer: the AFL lists more than {MAX_RECORDS} records")
    run.records = records
    return _next_record(run)


def on_record(run: Run, response: ResponseApdu) -> Step:
    """One record: keep its values (first value wins), read the next or finish reading."""
    found, values = template(response.data, 0x70)
    if found is None or not found.constructed:
        if run.current_sfi <= 10:
            raise RemoteProtocolError("READ RECORD answer is not a record template 70")
    else:
        for tag, value in values.items():
            old = run.card.get(tag)
            if old is None:
                run.card[tag] = value
            elif old != value:
                run.warn(f"tag {tag:X} appears twice with different values: the first one is used")
    return _next_record(run)


def _next_record(run: Run) -> Step:
    if run.records:
        sfi, rec = run.records.pop(0)
        run.current_sfi = sfi
        return Step(Phase.READ_RECORD, read_record(rec, sfi))
    return _records_done(run)


def _records_done(run: Run) -> Step:
    """Rule 2: everything the card must have, checked before the PIN is tried."""
    card = run.card
    if 0x8C not in card:
        raise RemoteProtocolError("the card has no CDOL1 (8C) in its records")
    if run.profile.send_aac and 0x8D not in card:
        raise RemoteProtocolError("the card has no CDOL2 (8D) in its records")
    run.cdol1 = parse_dol(card[0x8C])
    parse_dol(card.get(0x8D, b""))  # a malformed CDOL2 fails here, not after the PIN
    if 0x9F55 not in card and 0x9F55 not in run.fci:
        run.warn(f"the card has no IAF (9F55): assuming {run.profile.iaf_default.hex().upper()}")
    psn = card.get(0x5F34)
    if psn is not None and len(psn) != 1:
        raise RemoteProtocolError(f"PSN (5F34) must be 1 byte, got {len(psn)}")
    run.values = _terminal_values(run)
    return Step(Phase.GET_PTC, GET_PTC)


def _terminal_values(run: Run) -> dict[int, bytes]:
    """The CDOL values of this run, now that the IAF is known (before the PIN is tried)."""
    inputs = run.inputs
    iaf0 = run.iaf0()
    sign = run.mode is CapMode.SIGN
    uses_amount = sign and bool(iaf0 & 0x80)
    if sign and inputs.amount is not None and not uses_amount:
        run.warn("the card's IAF does not use an amount in sign mode: the amount is ignored")
    if uses_amount and (inputs.amount is None or (not iaf0 & 0x20 and inputs.currency is None)):
        what = "an amount" if inputs.amount is None else "a currency"
        raise InputError(f"amount/currency: this card's IAF ({iaf0:02X}) asks for {what} in sign mode")
    scale = _unsigned_currency_scale(iaf0, inputs) if uses_amount and iaf0 & 0x20 else None
    if scale is not None:
        run.warn(scale)
    return cdol_values(
        run.profile,
        CapMode.IDENTIFY if run.mode is CapMode.TDS else run.mode,
        challenge=inputs.challenge,
        amount=inputs.amount if uses_amount else None,
        currency=inputs.currency if uses_amount and not iaf0 & 0x20 else None,
        iaf=bytes([iaf0]),
    )


def _unsigned_currency_scale(iaf0: int, inputs: Inputs) -> str | None:
    """The warning for a currency the card does not sign that still gave a decimal amount
    another scale than the 2 decimals it has without one; else ``None``."""
    if inputs.currency is None or inputs.amount is None or not inputs.amount_scaled_by_currency:
        return None
    exponent = currency_exponent(inputs.currency)
    if exponent == 2:
        return None
    return (
        f"the card's IAF ({iaf0:02X}) does not sign a currency: {inputs.currency} is not sent, but it "
        f"scaled the amount: {major_units(inputs.amount, exponent)} at {exponent} decimals is "
        f"{inputs.amount} minor units (2 decimals without a currency)"
    )


# ---------------------------------------------------------------- PIN (rules 3, 4)


def on_ptc(run: Run, response: ResponseApdu) -> Step:
    """The PIN try counter: warn when low, stop when zero, else VERIFY."""
    try:
        ptc, _ = template(response.data, 0x9F17)
    except ApduFormatError:
        ptc = None
    if ptc is None or len(ptc.value) != 1:
        run.warn("the PIN try counter (9F17) is unreadable")
    else:
        tries = ptc.value[0]
        if tries == 0 and run.inputs.verifies:
            raise PinBlockedError(0x6983, 0xCA, "PIN blocked: the card reports 0 PIN tries left")
        if tries < run.profile.pin_try_limit:
            run.warn(f"only {tries} PIN tr{'y' if tries == 1 else 'ies'} left")
    return _verify(run)


def on_ptc_unavailable(run: Run, response: ResponseApdu) -> Step:
    """No try counter from this card: VERIFY all the same."""
    return _verify(run)


def _verify(run: Run) -> Step:
    """Wait for the PIN, VERIFY it, or go straight to the first GENERATE AC in a run without
    one (rule 4)."""
    if run.pin_block is None:
        return Step(Phase.PIN) if run.inputs.ask_pin else _first_ac(run)
    return Step(Phase.VERIFY, builders.verify_plaintext_pin(run.pin_block))


def on_pin_entered(run: Run, pin_block: bytes) -> Step:
    """The PIN asked for, as its block (:meth:`capsim.reader.CapSession.enter_pin`): VERIFY it."""
    run.pin_block = pin_block
    return Step(Phase.VERIFY, builders.verify_plaintext_pin(pin_block))


def on_wrong_pin(run: Run, response: ResponseApdu) -> Step:
    """``63Cx`` / ``6983`` / ``6984``: the typed PIN error (there is no next phase)."""
    raise status_error(response.sw, 0x20)


def on_verified(run: Run, response: ResponseApdu) -> Step:
    """PIN right: GENERATE AC #1 for an ARQC with the CDOL1 data (rule 5)."""
    return _first_ac(run)


def _first_ac(run: Run) -> Step:
    for entry in run.cdol1:
        if entry.tag not in run.values:
            run.warn(f"CDOL1 asks for tag {entry.tag:X}, unknown to the reader: zero-filled")
    return Step(Phase.FIRST_AC, builders.generate_ac(0x80, fill_dol(run.card[0x8C], run.values)))


# ---------------------------------------------------------------- GENERATE AC (rules 5, 6)


def parse_ac(data: bytes) -> tuple[int, bytes, bytes, bytes]:
    """CID, ATC, AC and IAD of a GENERATE AC answer in format 1 or 2."""
    objs = decode(data)
    fmt1 = find(objs, 0x80)
    fmt2 = find(objs, 0x77)
    if fmt1 is not None and not fmt1.constructed:
        v = fmt1.value
        if len(v) < 11:
            raise RemoteProtocolError(f"GENERATE AC format 1: {len(v)} bytes, need at least 11")
        cid, atc, ac, iad = v[0], v[1:3], v[3:11], v[11:]
    elif fmt2 is not None:
        inner = tlv_map(fmt2.children)
        missing = [f"{t:X}" for t in (0x9F27, 0x9F36, 0x9F26) if t not in inner]
        if missing:
            raise RemoteProtocolError(f"GENERATE AC format 2 lacks {', '.join(missing)}")
        cid_b, atc, ac, iad = inner[0x9F27], inner[0x9F36], inner[0x9F26], inner.get(0x9F10, b"")
        if len(cid_b) != 1 or len(atc) != 2 or len(ac) != 8:
            raise RemoteProtocolError("GENERATE AC format 2: CID 1, ATC 2 and AC 8 bytes expected")
        cid = cid_b[0]
    else:
        raise RemoteProtocolError("GENERATE AC answer is neither format 1 (80) nor format 2 (77)")
    if len(iad) > MAX_IAD:
        raise RemoteProtocolError(f"GENERATE AC: IAD of {len(iad)} bytes, at most {MAX_IAD}")
    return cid, atc, ac, iad


def on_first_ac(run: Run, response: ResponseApdu) -> Step:
    """The cryptogram: make the code, then close with an AAC or finish."""
    cid, atc, ac, iad = parse_ac(response.data)
    if cid & 0xC0 != 0x80:
        kind = "an AAC" if cid & 0xC0 == 0 else "a TC" if cid & 0xC0 == 0x40 else "an RFU AC type"
        run.warn(
            f"the card returned {kind} (CID {cid:02X}) instead of an ARQC: the bank will refuse the code"
        )
    run.first_ac = make_code(run, cid, atc, ac, iad)
    profile = run.profile
    if not profile.send_aac:
        return Step(Phase.DONE)
    data = build_cdol2_data(run.card.get(0x8D, b""), run.values, profile)
    return Step(Phase.SECOND_AC, builders.generate_ac(0x00, data))


def on_second_ac(run: Run, response: ResponseApdu) -> Step:
    """The closing AAC's answer, whatever it is: done."""
    if response.sw != 0x9000:
        run.warn(f"the closing GENERATE AC (AAC) was answered {response.sw:04X}")
    return Step(Phase.DONE)


def make_code(run: Run, cid: int, atc: bytes, ac: bytes, iad: bytes) -> FirstAc:
    """The code of the first cryptogram, by the profile's code function (rule 5)."""
    profile = run.profile
    card = run.card
    mac: bytes | None = None
    body = ac
    if run.mode is CapMode.TDS:
        mac = tds_mac(run.inputs.fields, ac, separator=profile.tds_separator)
        body = mac
    ac_name = "MAC" if mac else "AC"
    psn = card.get(0x5F34)
    psn_in_data = bool(run.iaf0() & IAF_PSN)
    if psn_in_data and psn is None:
        raise RemoteProtocolError("the IAF puts the PSN in the code but the card has no PSN (5F34)")
    ipb = card.get(0x9F56)
    if ipb is not None and not 1 <= len(ipb) <= 64:
        raise RemoteProtocolError(f"IPB (9F56) of {len(ipb)} bytes")
    function = profile.code_function_for(run.application.aid, has_ipb=ipb is not None)
    if function is CodeFunction.BELGIAN:
        code = belgian_code(atc, body)
        explanation = Explanation(partial(explain_belgian, atc, body, ac_name=ac_name))
        used_ipb = None
    else:
        if ipb is None:
            if profile.no_ipb is NoIpbFallback.ERROR:
                raise UnknownIssuerProfile(
                    f"the card has no IPB (9F56) and reader profile {profile.name} names no fallback"
                )
            ipb = FALLBACK_IPBS[profile.no_ipb]
            run.warn(f"the card has no IPB: using the {profile.no_ipb.value} fallback")
        data = data_string(bytes([cid]), atc, body, iad, psn=psn if psn_in_data else None)
        if len(data) < len(ipb):
            if not profile.allow_short_data:
                raise RemoteProtocolError(
                    f"the data string has {len(data)} bytes but the IPB covers {len(ipb)}"
                )
            run.warn("the data string is shorter than the IPB: missing bits taken as 0")
        width = ipb_bit_count(ipb)
        if width > 26:
            run.warn(f"the IPB selects {width} bits (more than the usual 26)")
        code = decimal_code(
            ipb_extract(ipb, data, allow_short=profile.allow_short_data), profile.display_digits
        )
        explanation = Explanation(partial(explain_ipb, ipb, data, psn_in_data=psn_in_data, ac_name=ac_name))
        used_ipb = ipb
    if profile.psn_prefix_digits:
        if psn is None:
            raise RemoteProtocolError("the reader profile prefixes the PSN but the card has no PSN (5F34)")
        prefix = str(psn[0]).rjust(profile.psn_prefix_digits, "0")
        if len(prefix) > profile.psn_prefix_digits:
            raise CodeOverflowError(
                f"PSN {psn[0]} does not fit {profile.psn_prefix_digits} prefix digit(s)",
                psn[0],
                profile.psn_prefix_digits,
            )
        code = prefix + code
    return FirstAc(cid, atc, ac, iad, code, explanation, mac, used_ipb, function)
