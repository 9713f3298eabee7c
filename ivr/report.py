"""The compliance report (``ivr report``): per-agent and per-day figures of the rules,
with charts, from the call records, as JSON, CSV or one self-contained HTML page.

Figures: service level (share answered within three rings, R1), rings-to-answer
histogram, ring alarms, hold-duration distribution and the held callers' choices at the limit
(R4: keep waiting, message, call-back, none), agent-first hang-ups and calls
over the long-call limit (R6), transfers (R5), messages left by held callers (R4; the
call records' ``messages`` table, their one store) and call-backs.
"""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ivr.records import CallFilter, CallStore
from ivr.records.figures import (
    agent_figures,
    day_figures,
    day_window,
    hold_choices,
    hold_distribution,
    rings_histogram,
)
from ivr.sections import HoldConfig, HttpConfig, RingsConfig

FORMATS = ("html", "csv", "json")


async def build_report(store: CallStore, first: date, last: date, tz: ZoneInfo, *,
                       agents: dict[str, str] | None = None, long_call_seconds: float = HttpConfig().long_call_seconds,
                       switch: str | None = None, warn_rings: int = RingsConfig().warn_rings,
                       critical_rings: int = RingsConfig().critical_rings,
                       hold_limit: float = HoldConfig().choices_after) -> dict[str, Any]:
    """The figures of every switch's calls, or of ``switch``'s only (issue 17). The
    thresholds (``[rings]``, ``[hold] choices_after``) only label and highlight: a ring
    leg's ``within_three`` was decided by the ring monitor when it was answered."""
    since, until = day_window(first, last, tz)
    legs = await store.ring_legs(since, until, switch)
    calls = await store.calls(CallFilter(since=since, until=until, limit=10_000_000, switch=switch))
    holds = await store.holds(since, until, switch)
    alarms = await store.alarms(since, until, limit=10_000_000, switch=switch)
    transfers = await store.transfers(since, until, switch)
    messages = await store.messages(since, until, limit=10_000_000, switch=switch)
    callbacks = callback_figures(await store.callbacks(since, until, limit=10_000_000, switch=switch),
                                 await store.queue.attempts(since, until, switch))
    answered = [leg for leg in legs if leg.get("outcome") == "answered"]
    within = sum(1 for leg in answered if leg.get("within_three"))
    return {
        "from": first.isoformat(), "to": last.isoformat(), "timezone": str(tz),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "long_call_seconds": long_call_seconds, "switch": switch, "warn_rings": warn_rings,
        "critical_rings": critical_rings, "hold_limit": hold_limit,
        "switches": switch_figures(calls, legs, alarms),
        "totals": {
            "calls": len(calls), "answered": len(answered), "within_three": within,
            "service_level": round(within / len(answered), 4) if answered else None,
            "alarms": len(alarms), "holds": sum(1 for h in holds if h.get("duration") is not None),
            "transfers": len(transfers),
            "messages": len(messages), "messages_recorded": sum(1 for m in messages if m.get("recorded")),
            "callbacks": callbacks["requested"], "callbacks_done": callbacks["status"].get("done", 0),
            "agent_first_hangups": sum(1 for c in calls if c.get("hung_up_first") == "agent"),
            "long_calls": sum(1 for c in calls if c.get("answered_at") is not None and c.get("ended_at") is not None
                              and c["ended_at"] - c["answered_at"] > long_call_seconds),
        },
        "agents": agent_figures(legs=legs, calls=calls, alarms=alarms, transfers=transfers, names=agents,
                                long_call_seconds=long_call_seconds),
        "days": day_figures(legs=legs, calls=calls, holds=holds, tz=tz, long_call_seconds=long_call_seconds),
        "rings_to_answer": rings_histogram(legs),
        "hold_durations": hold_distribution(holds),
        "hold_choices": hold_choices(holds),
        "callbacks": callbacks,
    }


def switch_figures(calls: list[dict[str, Any]], legs: list[dict[str, Any]],
                   alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per switch: calls, answers (ring legs answered), within three rings, service level, alarms."""
    of_call = {c["call_id"]: c.get("switch") or "default" for c in calls}
    out: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        return out.setdefault(name, {"switch": name, "calls": 0, "answered": 0, "within_three": 0, "alarms": 0})

    for c in calls:
        row(of_call[c["call_id"]])["calls"] += 1
    for leg in legs:
        if leg.get("outcome") == "answered" and leg["call_id"] in of_call:
            r = row(of_call[leg["call_id"]])
            r["answered"] += 1
            r["within_three"] += 1 if leg.get("within_three") else 0
    for a in alarms:
        if a["call_id"] in of_call:
            row(of_call[a["call_id"]])["alarms"] += 1
    for r in out.values():
        r["service_level"] = round(r["within_three"] / r["answered"], 4) if r["answered"] else None
    return [out[k] for k in sorted(out)]


def callback_figures(callbacks: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Call-backs asked for in the period by status now, and the attempts made in it by
    outcome (how many used one of the customer's attempts)."""
    status: dict[str, int] = {}
    for c in callbacks:
        status[c["status"]] = status.get(c["status"], 0) + 1
    outcomes: dict[str, int] = {}
    for a in attempts:
        key = a.get("outcome") or "under way"
        outcomes[key] = outcomes.get(key, 0) + 1
    return {"requested": len(callbacks), "requests": sum(int(c.get("requests") or 1) for c in callbacks),
            "status": status, "attempts": outcomes,
            "customer_attempts": sum(1 for a in attempts if a.get("burned"))}


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


AGENT_COLUMNS = ("agent", "name", "answered", "within_three", "service_level", "max_rings", "unanswered",
                 "alarms_warning", "alarms_critical", "agent_first_hangups", "long_calls", "calls",
                 "talk_seconds", "holds", "hold_seconds", "transfers")
SWITCH_COLUMNS = ("switch", "calls", "answered", "within_three", "service_level", "alarms")
DAY_COLUMNS = ("day", "calls", "answered", "within_three", "service_level", "agent_first_hangups", "long_calls",
               "holds", "hold_seconds")


def render_csv(report: dict[str, Any]) -> str:
    """One CSV with a ``section`` column: agent rows, day rows, then the two distributions."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", *AGENT_COLUMNS])
    for a in report["agents"]:
        w.writerow(["agent", *("" if a[c] is None else a[c] for c in AGENT_COLUMNS)])
    w.writerow([])
    w.writerow(["section", *DAY_COLUMNS])
    for d in report["days"]:
        w.writerow(["day", *("" if d[c] is None else d[c] for c in DAY_COLUMNS)])
    w.writerow([])
    w.writerow(["section", *SWITCH_COLUMNS])
    for sw in report["switches"]:
        w.writerow(["switch", *("" if sw[c] is None else sw[c] for c in SWITCH_COLUMNS)])
    w.writerow([])
    w.writerow(["section", "bucket", "count"])
    for k, v in report["rings_to_answer"].items():
        w.writerow(["rings_to_answer", k, v])
    for k, v in report["hold_durations"].items():
        w.writerow(["hold_seconds", k, v])
    for k, v in report["hold_choices"].items():
        w.writerow(["hold_choice", k, v])
    for k, v in report["callbacks"]["status"].items():
        w.writerow(["callback_status", k, v])
    for k, v in report["callbacks"]["attempts"].items():
        w.writerow(["callback_attempt", k, v])
    return out.getvalue()


def _pct(x: float | None) -> str:
    return "\N{EN DASH}" if x is None else f"{x * 100:.0f} %"


def bar_chart(values: dict[str, float], *, title: str, unit: str = "", highlight: set[str] | None = None,
              width: int = 640) -> str:
    """A vertical bar chart as inline SVG (no script, no external file)."""
    keys = list(values)
    top = max([*values.values(), 1])
    left, bottom, height = 36, 28, 180
    step = (width - left - 10) / max(len(keys), 1)
    parts = [f'<svg viewBox="0 0 {width} {height + bottom + 24}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="14" class="t">{html.escape(title)}</text>']
    for frac in (0, 0.5, 1):
        y = 24 + height * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="a" text-anchor="end">{top * frac:.0f}</text>')
    for i, k in enumerate(keys):
        v = values[k]
        h = height * v / top
        x = left + i * step + step * 0.15
        cls = "b hot" if highlight and k in highlight else "b"
        parts.append(f'<rect x="{x:.1f}" y="{24 + height - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                     f'class="{cls}"><title>{html.escape(k)}{unit}: {v:g}</title></rect>'
                     f'<text x="{x + step * 0.35:.1f}" y="{24 + height + 16}" class="a" '
                     f'text-anchor="middle">{html.escape(k)}</text>')
        if v:
            parts.append(f'<text x="{x + step * 0.35:.1f}" y="{24 + height - h - 4:.1f}" class="a" '
                         f'text-anchor="middle">{v:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...], headers: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            text = _pct(v) if c == "service_level" else ("\N{EN DASH}" if v is None else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = """body{font:14px/1.45 system-ui,sans-serif;color:#1f2933;margin:32px auto;max-width:1000px;padding:0 20px}
h1{font-size:22px;margin-bottom:2px}h2{font-size:16px;margin-top:28px}.sub{color:#66788a}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}th,td{padding:6px 8px;
border-bottom:1px solid #e1e6eb;text-align:right}th:first-child,td:first-child{text-align:left}
th{color:#66788a;font-weight:600}.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e1e6eb;
border-radius:8px;padding:10px 14px;min-width:130px}.card b{display:block;font-size:22px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:18px}svg{width:100%;height:auto}
svg .t{font-size:13px;font-weight:600}svg .a{font-size:11px;fill:#66788a}svg .g{stroke:#e1e6eb}
svg .b{fill:#2f6fde}svg .b.hot{fill:#d64545}"""


AGENT_TABLE_COLUMNS = ("agent", "name", "answered", "service_level", "max_rings", "unanswered",
                       "alarms_warning", "alarms_critical", "agent_first_hangups", "long_calls", "holds",
                       "hold_seconds", "transfers")
# {w}, {c}: the report's warn_rings and critical_rings.
AGENT_HEADINGS = ("Agent", "Name", "Answered", "≤ {w} rings", "Most rings", "Unanswered", "Alarms ({w})",
                  "Alarms ({c})", "Hung up first", "Long calls", "Holds", "Hold s", "Transfers")
DAY_HEADINGS = ("Day", "Calls", "Answered", "Within {w}", "≤ {w} rings", "Agent hung up first", "Long calls",
                "Holds", "Hold s")
SWITCH_HEADINGS = ("Switch", "Calls", "Answered", "Within {w}", "≤ {w} rings", "Alarms")


def _card(label: str, value: object) -> str:
    return f'<div class="card">{html.escape(label)}<b>{html.escape(str(value))}</b></div>'


def render_html(report: dict[str, Any]) -> str:
    t, warn = report["totals"], report["warn_rings"]

    def headings(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n.format(w=warn, c=report["critical_rings"]) for n in names)

    cards = [("Calls", t["calls"]), (f"Answered within {warn} rings", _pct(t["service_level"])),
             ("Ring alarms", t["alarms"]), ("Holds", t["holds"]), ("Transfers", t["transfers"]),
             ("Agent hung up first", t["agent_first_hangups"]),
             ("Call-backs done", f"{t['callbacks_done']} of {t['callbacks']}"),
             ("Messages left", t["messages"]),
             (f"Calls over {report['long_call_seconds'] / 60:g} min", t["long_calls"])]
    late = {k for k in report["rings_to_answer"]
            if not (k.rstrip("+").isascii() and k.rstrip("+").isdigit()) or int(k.rstrip("+")) > warn}
    # A bucket "a-b" (or "a+") may hold a hold over the limit when its top is above it.
    over = {k for k in report["hold_durations"]
            if k.endswith("+") or int(k.split("-")[1]) > report["hold_limit"]}
    per_agent_sl = {a["agent"]: round((a["service_level"] or 0) * 100) for a in report["agents"] if a["answered"]}
    per_agent_bad = {a["agent"]: a["agent_first_hangups"] for a in report["agents"]}
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Compliance report {report['from']} to {report['to']}</title><style>{STYLE}</style></head><body>
<h1>Call-handling compliance report</h1>
<p class="sub">{report['from']} to {report['to']} ({html.escape(report['timezone'])}),
{html.escape(f"switch {report['switch']}" if report['switch'] else "every switch")},
generated {report['generated_at']}</p>
<div class="cards">{''.join(_card(k, v) for k, v in cards)}</div>
<h2>Charts</h2><div class="charts">
{bar_chart(report['rings_to_answer'], title='Rings to answer (answered calls)', unit=' rings', highlight=late)}
{bar_chart(report['hold_durations'], title='Hold durations (seconds)', unit=' s', highlight=over)}
{bar_chart(report['hold_choices'], title="Held callers' choice at the limit (holds offered it)")}
{bar_chart(per_agent_sl, title=f'Answered within {warn} rings, % per agent', unit=' %')}
{bar_chart(per_agent_bad, title='Agent-first hang-ups per agent', highlight=set(per_agent_bad))}
{bar_chart(report['callbacks']['attempts'], title='Call-back attempts by outcome')}
</div>
<h2>Per switch</h2>
{_table(report['switches'], SWITCH_COLUMNS, headings(SWITCH_HEADINGS))}
<h2>Per agent</h2>
{_table(report['agents'], AGENT_TABLE_COLUMNS, headings(AGENT_HEADINGS))}
<h2>Per day</h2>
{_table(report['days'], DAY_COLUMNS, headings(DAY_HEADINGS))}
</body></html>
"""


RENDERERS = {"json": render_json, "csv": render_csv, "html": render_html}
