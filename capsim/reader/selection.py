"""Application selection: the handlers of the ``SELECT``, ``SELECT_PSE`` and ``READ_PSE`` phases.

Theory of operation
===================

(cap-protocol.md §1, §2 step 1)

1. The candidates of :meth:`capsim.reader.run.Run.start` are SELECTed directly, in order, as
   unconnected readers do; an AID is tried once. ``6A82`` (and the "data unavailable" class)
   moves on to the next one; ``6283``/``6A81`` records the AID as blocked, warns, and moves on.
2. When no candidate is left and no explicit AID was given, the PSE directory
   (``1PAY.SYS.DDF01``) is selected and its records read (at most 16). The listed applications
   that extend a known AID are tried by profile preference, then priority (``87``).
3. Nothing left: :class:`~capsim.errors.CardBlockedError` when some match was blocked, else a
   ``6A82`` :class:`~capsim.errors.StatusWordError` "no CAP application".
4. A selected application's FCI (``6F``) gives the DF name (``84``, when 5–16 bytes), the PDOL
   (``9F38``) and possibly an IAF (``9F55`` in ``BF0C``). The PDOL is filled with the profile's
   values (:func:`capsim.cap.cdol_values`); only the UN carries input here, since the IAF may
   sit in a record. A payment application chosen automatically for ``be-payment`` without
   EMV-CAP's Belgian markers gets a warning.

Every handler returns the :class:`~capsim.reader.phases.Step` to take; the graph
(:mod:`capsim.reader.graph`) lists the phases each one may return.
"""

from __future__ import annotations

from collections.abc import Mapping

from capsim.apdu.builders import PSE_NAME
from capsim.apdu.response import ResponseApdu
from capsim.cap import CapMode, cdol_values
from capsim.errors import CardBlockedError, RemoteProtocolError, StatusWordError
from capsim.profiles import READER_PROFILES
from capsim.reader.apdus import gpo, read_record, select, template, tlv_map
from capsim.reader.phases import Phase, Step
from capsim.reader.run import Candidate, Run
from capsim.tlv import decode, fill_dol, parse_dol, walk

__all__ = [
    "next_candidate",
    "on_pse_end",
    "on_pse_record",
    "on_pse_selected",
    "on_select_blocked",
    "on_select_refused",
    "on_selected",
]

#: Most PSE directory records read.
MAX_PSE_RECORDS = 16


def next_candidate(run: Run) -> Step:
    """SELECT the next untried candidate, else the PSE, else fail (rules 1–3)."""
    while run.candidates:
        candidate = run.candidates.pop(0)
        if candidate.aid in run.tried:
            continue
        run.tried.add(candidate.aid)
        run.current = candidate
        return Step(Phase.SELECT, select(candidate.aid))
    if not run.pse_done:
        run.pse_done = True
        return Step(Phase.SELECT_PSE, select(PSE_NAME))
    raise _no_application(run)


def _no_application(run: Run) -> StatusWordError:
    if run.blocked:
        return CardBlockedError(
            0x6283,
            0xA4,
            "card blocked: the application "
            + ", ".join(a.hex().upper() for a in run.blocked)
            + " is blocked by the issuer",
        )
    tried = ", ".join(a.hex().upper() for a in sorted(run.tried))
    listed = ", ".join(f"{aid.hex().upper()} ({label})" for aid, _, label in run.pse_entries)
    return StatusWordError(
        0x6A82,
        0xA4,
        f"no CAP application on the card (tried {tried}"
        + (f"; the card lists {listed}" if listed else "")
        + ")",
    )


def on_select_refused(run: Run, response: ResponseApdu) -> Step:
    """``6A82`` or data unavailable: the next candidate (rule 1)."""
    return next_candidate(run)


def on_select_blocked(run: Run, response: ResponseApdu) -> Step:
    """``6283``/``6A81``: remember the AID as blocked, then the next candidate (rule 1)."""
    run.blocked.append(run.current.aid)
    run.warn(f"application {run.current.aid.hex().upper()} is blocked ({response.sw:04X})")
    return next_candidate(run)


def on_selected(run: Run, response: ResponseApdu) -> Step:
    """The FCI: fix the application and its profile, fill the PDOL, GET PROCESSING OPTIONS (rule 4)."""
    fci, fci_values = template(response.data, 0x6F)
    if fci is None:
        raise RemoteProtocolError("SELECT answer has no FCI template 6F")
    run.fci = fci_values
    fixed = run.inputs.profile
    df_name = fci_values.get(0x84, run.current.aid)
    profile = fixed or run.current.profile
    selected = Candidate(df_name if 5 <= len(df_name) <= 16 else run.current.aid, profile)
    run.selected = selected
    if (
        fixed is None
        and profile.belgian_aids
        and not any(selected.aid.startswith(a) for a in profile.belgian_aids)
        and not _belgian_markers(fci_values)
    ):
        run.warn(
            f"payment application {selected.aid.hex().upper()} without Belgian markers "
            f"(5F2C 0056, DF07 BKS056): reader profile {profile.name} may not be the issuer's"
        )
    pdol = fci_values.get(0x9F38, b"")
    pdol_data = b""
    if pdol:
        # the amount is not known yet (the IAF may sit in a record): only the UN carries input
        challenge = run.inputs.challenge
        un_mode = CapMode.RESPOND if challenge is not None else CapMode.IDENTIFY
        base = cdol_values(profile, un_mode, challenge=challenge)
        for entry in parse_dol(pdol):
            if entry.tag not in base:
                run.warn(f"PDOL asks for tag {entry.tag:X}, unknown to the reader: zero-filled")
        pdol_data = fill_dol(pdol, base)
    return Step(Phase.GPO, gpo(pdol_data))


def _belgian_markers(fci: Mapping[int, bytes]) -> bool:
    """EMV-CAP's test for a Belgian card: ``5F2C`` = ``0056`` and ``DF07`` starting ``BKS056``."""
    return fci.get(0x5F2C) == b"\x00\x56" and fci.get(0xDF07, b"").startswith(b"BKS056")


def on_pse_selected(run: Run, response: ResponseApdu) -> Step:
    """The PSE's FCI: read its directory over the SFI in ``88`` (rule 2), or give up on it."""
    _, values = template(response.data, 0x6F)
    sfi = values.get(0x88)
    if not sfi or len(sfi) != 1 or not 1 <= sfi[0] <= 30:
        return on_pse_end(run, response)
    run.pse_sfi = sfi[0]
    run.pse_record = 1
    return Step(Phase.READ_PSE, read_record(1, run.pse_sfi))


def on_pse_record(run: Run, response: ResponseApdu) -> Step:
    """One directory record: note its applications (``61`` entries), read the next (rule 2)."""
    for _, obj in walk(decode(response.data)):
        if obj.tag == 0x61:
            entry = tlv_map(obj.children)
            aid = entry.get(0x4F, b"")
            if 5 <= len(aid) <= 16:
                priority = entry.get(0x87, b"\x00")[:1] or b"\x00"
                label = entry.get(0x50, b"").decode("ascii", "replace")
                run.pse_entries.append((aid, priority[0] & 0x0F or 16, label))
    run.pse_record += 1
    if run.pse_record > MAX_PSE_RECORDS:
        return on_pse_end(run, response)
    return Step(Phase.READ_PSE, read_record(run.pse_record, run.pse_sfi))


def on_pse_end(run: Run, response: ResponseApdu) -> Step:
    """The directory is read (or unreadable): try its known applications in order (rules 2, 3)."""
    fixed = run.inputs.profile
    pool = [fixed] if fixed is not None else list(READER_PROFILES.values())
    ranked: list[tuple[int, int, Candidate]] = []
    rank = 0
    for profile in pool:
        for known in profile.aids:
            rank += 1
            for aid, priority, _label in run.pse_entries:
                if aid.startswith(known) and aid not in run.tried:
                    ranked.append((rank, priority, Candidate(aid, profile)))
    ranked.sort(key=lambda item: (item[0], item[1]))
    run.candidates = [c for _, _, c in ranked]
    return next_candidate(run)
