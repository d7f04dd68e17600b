"""``capsim verifier audit``: list the verifier's audit records, check their chain and seals,
export the chain's tip.

Reference: ``docs/cli.md``; behaviour: verifier.md V37–V39. The shared options, the session and
the output helpers are :mod:`capsim.cli.verifier`'s; the command table in :mod:`capsim.cli`
attaches this command to the ``verifier`` group.

Theory of operation
-------------------
1. Without ``--check`` the records are listed (``--last N``, ``--credential``); a malformed
   record is listed as such, never skipped.
2. ``--check`` reports every deleted, moved, edited, malformed, unsealed or wrongly sealed
   record, and with ``--tip FILE`` (implies ``--check``) a truncated or rewritten chain; any
   problem is exit 14 (:class:`capsim.errors.AuditTampered`). The audit may be read without
   its seal key (``sealing="optional"``): checking is how a missing seal is found.
3. ``--export-tip [FILE]`` checks the chain first, then writes its tip (seq, record hash,
   seal) atomically to FILE, or prints it when FILE is omitted (which cannot be combined with
   ``--check``, whose report also goes to stdout). An empty audit has no tip to anchor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from capsim.cli._common import JSON_ERROR_EXTRA, handle_errors, write_tip
from capsim.cli.verifier import _db_options, _emit, _iso, open_session
from capsim.errors import AuditTampered, StateFileError, ValidationError
from capsim.verifier.audit import AuditProblem, AuditRecord, AuditTip
from capsim.verifier.session import AuditReport, check_audit

__all__ = ["audit_command"]


def _audit_view(rec: AuditRecord) -> dict[str, Any]:
    if rec.malformed:
        return {"seq": rec.seq, "malformed": rec.malformed}
    e = rec.entry
    return {
        "seq": rec.seq,
        "at": _iso(rec.at),
        "event": e.event,
        "outcome": e.outcome,
        "reason": e.reason,
        "request_id": e.request_id,
        "credential_id": e.credential_id,
        "operation_id": e.operation_id,
        "mode": e.mode,
        "atc": e.atc,
        "node": e.node,
        "duration_us": e.duration_us,
        "details": dict(e.details),
        "record_hash": rec.record_hash.hex(),
        "sealed": bool(rec.seal),
    }


# -- audit -------------------------------------------------------------------------------------------
@click.command("audit")
@click.option(
    "--check", is_flag=True, help="Check the chain and its seals instead of listing (exit 14 if broken)."
)
@click.option(
    "--tip",
    "tip_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --check: an anchor written by --export-tip; also detect a truncated or rewritten chain.",
)
@click.option(
    "--export-tip",
    "export_tip",
    metavar="FILE",
    is_flag=False,
    flag_value="-",
    default=None,
    help="Check the audit, then write its tip (seq, record hash, seal) to FILE (stdout without FILE); "
    "keep it outside the database.",
)
@click.option("--last", "last", type=click.IntRange(1), help="Only the last N records.")
@click.option("--credential", "credential_id", metavar="CREDENTIAL", help="Only records of this credential.")
@_db_options
@handle_errors
def audit_command(
    *,
    check: bool,
    tip_file: Path | None,
    export_tip: str | None,
    last: int | None,
    credential_id: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """List the audit records, or check their chain and seals (verifier.md V37-V39)."""
    if tip_file is not None:
        check = True
    if check and export_tip == "-":
        raise click.UsageError("--export-tip without FILE prints the tip: it cannot be combined with --check")
    with open_session(db, sealing="optional") as session:
        if check or export_tip is not None:
            tip = None
            if tip_file is not None:
                try:
                    tip = AuditTip.from_json(tip_file.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError) as exc:
                    raise StateFileError(f"--tip: cannot read {tip_file} ({exc})") from None
            report = check_audit(session, tip=tip)
            if check:
                _emit_check(as_json, report, tip)
            if report.problems:
                seqs = ", ".join(str(s) for s in sorted({p.seq for p in report.problems}))
                n = len(report.problems)
                raise AuditTampered(
                    f"the audit chain is broken ({n} problem{'s' if n > 1 else ''}; records {seqs})",
                    report.problems,
                )
            if export_tip is not None:
                _export_tip(report, export_tip, as_json=as_json and not check)
            return
        recs = [
            r
            for r in session.store.audit_records()
            if credential_id is None or r.entry.credential_id == credential_id
        ]
        if last is not None:
            recs = recs[-last:]
        views = [_audit_view(r) for r in recs]

        def lines() -> list[str]:
            out = []
            for r in recs:
                if r.malformed:
                    out.append(f"{r.seq:6}  malformed record ({r.malformed})")
                    continue
                e = r.entry
                parts = [f"{r.seq:6}", r.at.isoformat(timespec="seconds"), e.event, e.outcome]
                parts += [x for x in (e.reason, e.credential_id, e.operation_id, e.mode) if x]
                if e.atc is not None:
                    parts.append(f"ATC {e.atc}")
                out.append("  ".join(parts))
            return out or ["no audit records"]

        _emit(as_json, {"records": views}, lines)


def _problem_view(p: AuditProblem) -> dict[str, Any]:
    view: dict[str, Any] = {"seq": p.seq, "kind": p.kind}
    if p.detail:
        view["detail"] = p.detail
    return view


def _emit_check(as_json: bool, report: AuditReport, tip: AuditTip | None) -> None:
    obj = {
        "records": report.records,
        "intact": report.intact,
        "problems": [_problem_view(p) for p in report.problems],
        "sealed_from": report.sealed_from,
        "tip": None if tip is None else tip.seq,
    }

    def lines() -> list[str]:
        if report.problems:
            return [
                f"record {p.seq}: {p.kind}" + (f" ({p.detail})" if p.detail else "") for p in report.problems
            ]
        out = [f"audit chain intact: {report.records} records"]
        if report.sealed_from is None:
            out.append("the audit is not sealed: run 'capsim verifier init' to start sealing it")
        else:
            out.append(f"sealed from record {report.sealed_from}")
        if tip is not None:
            out.append(f"the exported tip (record {tip.seq}) is present and unchanged")
        return out

    if as_json and report.problems:  # one object: handle_errors adds the error to the report
        click.get_current_context().meta[JSON_ERROR_EXTRA] = obj
        return
    _emit(as_json, obj, lines)


def _export_tip(report: AuditReport, target: str, *, as_json: bool) -> None:
    if report.last is None:
        raise ValidationError("--export-tip: the audit is empty; there is nothing to anchor")
    tip = AuditTip.of(report.last)
    text = tip.to_json()
    path = write_tip(text, target)
    if path is None:
        return
    _emit(
        as_json,
        {"tip": json.loads(text), "file": str(path)},
        [f"audit tip exported: record {tip.seq} to {path}"],
    )
