"""The self-contained HTML page of an analysis (``capsim analyze --html FILE``).

Theory of operation
-------------------
1. One page, no external reference: the styles are inline, the plot is an inline SVG made
   by matplotlib (the ``analysis`` extra: ``pip install capsim[analysis]``), the bit map is a
   table. No script, no font, no image file, no link: the page can be mailed or archived as
   is. Without matplotlib :func:`render_html` raises :class:`~capsim.errors.ConfigError`
   naming the extra; text and JSON need nothing.
2. The plot is the guessing attacker of :mod:`capsim.analysis.guessing` over a year: the
   success probability (union bound, log scale) against days, without and with a daily login
   by the cardholder, beside the policy's V5 ceiling per lock period and NIST SP 800-63B's
   100 consecutive failures at 2^-20.
3. The SVG is made reproducible (fixed ``svg.hashsalt``, no date, text as paths) and its XML
   declaration, DOCTYPE and RDF metadata are dropped before it is inlined. Every text of the report is
   escaped.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any, Final

from capsim.analysis.guessing import (
    NIST_MAX_CONSECUTIVE_FAILURES,
    NIST_MAX_GUESS_PROBABILITY,
    YEAR_S,
    attack_schedule,
    guesses_by,
)
from capsim.analysis.model import SOURCE_TEXT, Source
from capsim.analysis.report import Report, confirmation_text
from capsim.errors import ConfigError

__all__ = ["guessing_svg", "render_html"]

_COLOURS: Final = {"AC": "#2e7d32", "ATC": "#f9a825", "PSN": "#6a1b9a", "CID": "#546e7a", "IAD": "#c62828"}
_SEVERITY: Final = {"high": "#b71c1c", "medium": "#e65100", "low": "#827717", "info": "#37474f"}
_PROLOGUE: Final = re.compile(r"^\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_METADATA: Final = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_DAY: Final = 86_400
_VERDICT: Final = {True: "accepted", False: "rejected", None: "undetermined"}
_LIMIT: Final = {True: "ok", False: "<b>FAIL</b>", None: "unknown"}


def _pin_text(pin: dict[str, Any]) -> str:
    verify = (
        "VERIFY answers: not measured."
        if pin["reveals"] is None
        else f"VERIFY answers {pin['wrong_pin_sw']} to a wrong PIN and {pin['right_pin_sw']} to the right "
        "one."
    )
    nopin = pin["no_pin_code"]
    code = "not measured" if nopin is None else _VERDICT[nopin["accepted"]]
    return f"{verify} A code made without VERIFY: {code}."


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "html: the page's plots need matplotlib: pip install 'capsim[analysis]' "
            "(text and --json work without)"
        ) from None
    return matplotlib, Figure


def guessing_svg(report: Report) -> str:
    """The plot of step 2 as an SVG document without XML declaration or DOCTYPE."""
    matplotlib, figure_class = _matplotlib()
    g = report.guessing
    schedule = attack_schedule(report.policy)
    days = list(range(366))
    per_guess = g.per_guess
    logins = report.policy.max_fail - 1
    floor = per_guess / 10
    plain = [max(floor, min(1.0, guesses_by(schedule, d * _DAY) * per_guess)) for d in days]
    daily = [max(floor, min(1.0, (guesses_by(schedule, d * _DAY) + logins * d) * per_guess)) for d in days]
    with matplotlib.rc_context({"svg.hashsalt": "capsim-analysis", "svg.fonttype": "path"}):
        fig = figure_class(figsize=(7.5, 3.6))
        ax = fig.subplots()
        ax.step(days, plain, where="post", label="attacker who never blocks the card")
        ax.step(days, daily, where="post", linestyle="--", label="… and the cardholder logs in daily")
        ax.axhline(
            report.policy.false_accept_ceiling,
            color="#c62828",
            linewidth=1,
            label="V5 ceiling per lock period",
        )
        ax.axhline(
            NIST_MAX_CONSECUTIVE_FAILURES * NIST_MAX_GUESS_PROBABILITY,
            color="#6a1b9a",
            linewidth=1,
            linestyle=":",
            label="NIST SP 800-63B: 100 failures at 2^-20",
        )
        ax.set_yscale("log")
        ax.set_xlim(0, YEAR_S // _DAY)
        ax.set_xlabel("days of guessing")
        ax.set_ylabel("P(a guessed code is accepted)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return _METADATA.sub("", _PROLOGUE.sub("", buf.getvalue(), count=1), count=1)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _bit_map(report: Report) -> str:
    cells = []
    for cell in report.anatomy.bits:
        colour = _COLOURS.get(cell.field, "#9e9e9e")
        where = f"{cell.field} byte {cell.field_byte} b{cell.bit} (D[{cell.data_index}])"
        title = f"code bit {cell.position}: {where}"
        cells.append(
            f'<td class="bit" style="background:{colour}" title="{_e(title)}">{_e(cell.field[0])}</td>'
        )
    legend = " ".join(
        f'<span class="key" style="background:{c}">{_e(name)}</span>' for name, c in _COLOURS.items()
    )
    row = "".join(cells)
    return f'<table class="bits"><tr>{row}</tr></table><p>{legend} (most significant bit first)</p>'


_STYLE: Final = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#212121}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #cfd8dc;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#eceff1}.bits td.bit{width:1.2rem;text-align:center;
color:#fff;font-family:monospace;padding:.2rem 0}.key{color:#fff;padding:0 .4rem;border-radius:3px}
.sev{color:#fff;padding:0 .4rem;border-radius:3px;font-size:.85em}.plot svg{max-width:100%;height:auto}
"""


def render_html(report: Report) -> str:
    """The page of step 1 (raises :class:`ConfigError` without matplotlib)."""
    svg = guessing_svg(report)
    a, g, f = report.anatomy, report.guessing, report.freshness
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>capsim analyze: {_e(report.card)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>capsim analyze: {_e(report.card)}</h1>",
        f"<p>card {_e(report.card)} ({_e(report.card_source)}), reader profile {_e(report.reader_profile)}, "
        f"policy {_e(report.policy_name)}</p>",
        "<h2>Code anatomy</h2>",
        f"<p>{a.total_bits} bits (up to {a.max_digits} digits): AC {a.ac_bits}, ATC {a.atc_bits}, "
        f"PSN {a.psn_bits}, CID {a.cid_bits}, IAD {a.iad_bits}. Only the AC bits are secret.</p>",
        _bit_map(report),
        "<h2>Guessing</h2>",
        f"<p>P = max_fail × C × V / 2^a = {g.bound.max_fail} × {g.bound.candidates} × {g.bound.variants} "
        f"/ 2^{g.bound.ac_bits} = {g.per_lock_period:.3g} per lock period; {g.per_guess:.3g} per guess; "
        f"{g.per_year:.3g} over a year ({g.guesses_per_year} guesses)"
        f"{'' if g.variants_known else f'; V unknown (1 to {g.variants_at_most}): figures per variant'}.</p>",
        f'<div class="plot">{svg}</div>',
        _table(
            ["limit", "allowed", "this deployment", ""],
            [[_e(x.name), _e(x.limit), _e(x.value), _LIMIT[x.ok]] for x in g.limits],
        ),
        "<h2>Mode confusion</h2>",
        _table(
            ["run", "against", "same cryptogram input", "checked", "control"],
            [
                [
                    _e(r["first"]),
                    _e(r["second"]),
                    "<b>yes</b>" if r["collides"] else "no",
                    _e(confirmation_text(r)),
                    "yes" if r["control"] else "",
                ]
                for r in report.confusion
            ],
        ),
        "<h2>Freshness</h2>",
        _table(
            ["mode", "can be made ahead", "fresh by"],
            [[_e(m.mode), "yes" if m.precomputable else "no", _e(m.fresh_by)] for m in f.modes],
        ),
        "<h2>PIN handling</h2>",
        f"<p>{_e(_pin_text(report.pin))}</p>",
        f"<h2>Findings ({len(report.findings)})</h2>",
    ]
    used: list[Source] = []
    for finding in report.findings:
        colour = _SEVERITY[finding.severity.value]
        changes = "".join(f"<li>{_e(c.lever.value)}: {_e(c.text)}</li>" for c in finding.changes)
        parts.append(
            f'<h3><span class="sev" style="background:{colour}">{_e(finding.severity.value)}</span> '
            f"{_e(finding.id)}: {_e(finding.title)}</h3><p>{_e(finding.detail)}</p>"
            + (f"<ul>{changes}</ul>" if changes else "")
            + f"<p>source: {_e(', '.join(s.value for s in finding.sources))}</p>"
        )
        used += [s for s in finding.sources if s not in used]
    parts.append("<h2>Sources</h2><ul>")
    parts += [f"<li>{_e(s.value)}: {_e(SOURCE_TEXT[s])}</li>" for s in used]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
