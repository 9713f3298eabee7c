"""Figures read from call records: pure functions over rows (dicts), no I/O.

Used by the HTTP API (``/api/agents``), the dashboard and ``ivr report``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ivr.records.db import Row
from ivr.rules.hold import HOLD_CHOICES
from ivr.sections import HoldConfig, HttpConfig

HOLD_BUCKETS = (30, 60, 90, 120)  # seconds: 0-30, 30-60, 60-90, 90-120, 120+


def day_window(first: date, last: date, tz: ZoneInfo) -> tuple[float, float]:
    """Local days ``first`` to ``last`` inclusive, as [since, until) epoch seconds."""
    since = datetime.combine(first, time(0), tz).timestamp()
    until = datetime.combine(last + timedelta(days=1), time(0), tz).timestamp()
    return since, until


def day_of(at: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(at, tz).date()


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def rings_histogram(legs: Iterable[Row], top: int = 10) -> dict[str, int]:
    """Answered legs by ring count: {"1": n, ..., "10+": n}."""
    hist: Counter[str] = Counter()
    for leg in legs:
        if leg.get("outcome") == "answered" and leg.get("rings") is not None:
            r = int(leg["rings"])
            hist[str(r) if r < top else f"{top}+"] += 1
    return {k: hist.get(k, 0) for k in [*(str(i) for i in range(1, top)), f"{top}+"]}


def hold_distribution(holds: Iterable[Row], buckets: tuple[int, ...] = HOLD_BUCKETS) -> dict[str, int]:
    """Finished holds by duration bucket: {"0-30": n, "30-60": n, ..., "120+": n}."""
    labels = [f"{lo}-{hi}" for lo, hi in zip((0, *buckets[:-1]), buckets, strict=True)] + [f"{buckets[-1]}+"]
    out = dict.fromkeys(labels, 0)
    for h in holds:
        if h.get("duration") is None:
            continue
        d = float(h["duration"])
        idx = next((i for i, hi in enumerate(buckets) if d < hi), len(buckets))
        out[labels[idx]] += 1
    return out


def hold_choices(holds: Iterable[Row]) -> dict[str, int]:
    """Finished holds that reached the limit (the choices offered) by what the held caller
    chose: {"keep": n, "message": n, "callback": n, "none": n} ("none": no key pressed, the
    hold ended otherwise)."""
    out = dict.fromkeys((*HOLD_CHOICES, "none"), 0)
    for h in holds:
        if h.get("duration") is None or not h.get("choices_offered"):
            continue
        choice = h.get("choice")
        out[choice if choice in HOLD_CHOICES else "none"] += 1
    return out


def _blank(agent: str, name: str | None) -> dict[str, Any]:
    return {
        "agent": agent, "name": name, "offered": 0, "answered": 0, "within_three": 0,
        "service_level": None, "unanswered": 0, "max_rings": None, "alarms_warning": 0,
        "alarms_critical": 0, "calls": 0, "agent_first_hangups": 0, "long_calls": 0,
        "talk_seconds": 0.0, "holds": 0, "hold_seconds": 0.0, "transfers": 0,
    }


def agent_figures(
    *, legs: Iterable[Row], calls: Iterable[Row], alarms: Iterable[Row], transfers: Iterable[Row] = (),
    names: Mapping[str, str] | None = None, long_call_seconds: float = HttpConfig().long_call_seconds,
) -> list[dict[str, Any]]:
    """Per agent: rings to answer and service level (share answered within three rings),
    alarms, agent-first hang-ups, long calls, holds. Agents in ``names`` always appear."""
    names = dict(names or {})
    figs: dict[str, dict[str, Any]] = {a: _blank(a, n) for a, n in names.items()}

    def fig(agent: str | None) -> dict[str, Any] | None:
        if not agent:
            return None
        if agent not in figs:
            figs[agent] = _blank(agent, names.get(agent))
        return figs[agent]

    for leg in legs:
        f = fig(leg.get("agent"))
        if f is None or leg.get("ended_at") is None:
            continue
        f["offered"] += 1
        if leg.get("outcome") == "answered":
            f["answered"] += 1
            f["within_three"] += int(bool(leg.get("within_three")))
            if leg.get("rings") is not None:
                f["max_rings"] = max(f["max_rings"] or 0, int(leg["rings"]))
        else:
            f["unanswered"] += 1
    for alarm in alarms:
        f = fig(alarm.get("agent"))
        if f is not None:
            key = "alarms_critical" if alarm.get("level") == "critical" else "alarms_warning"
            f[key] += 1
    call_agent: dict[str, str] = {}
    for call in calls:
        f = fig(call.get("agent"))
        if f is None or call.get("answered_at") is None:
            continue
        call_agent[call["call_id"]] = call["agent"]
        f["calls"] += 1
        f["holds"] += int(call.get("hold_count") or 0)
        f["hold_seconds"] += float(call.get("hold_seconds") or 0.0)
        if call.get("ended_at") is not None:
            talk = float(call["ended_at"]) - float(call["answered_at"])
            f["talk_seconds"] += talk
            f["long_calls"] += int(talk > long_call_seconds)
            f["agent_first_hangups"] += int(call.get("hung_up_first") == "agent")
    for t in transfers:
        f = fig(call_agent.get(t.get("call_id", "")))
        if f is not None:
            f["transfers"] += 1
    for f in figs.values():
        f["service_level"] = share(f["within_three"], f["answered"])
        f["talk_seconds"] = round(f["talk_seconds"], 1)
        f["hold_seconds"] = round(f["hold_seconds"], 1)
    return sorted(figs.values(), key=lambda f: f["agent"])


def day_figures(
    *, legs: Iterable[Row], calls: Iterable[Row], holds: Iterable[Row], tz: ZoneInfo,
    long_call_seconds: float = HttpConfig().long_call_seconds,
) -> list[dict[str, Any]]:
    """Per local day: calls, answered, service level, agent-first hang-ups, long calls, holds."""
    days: dict[date, dict[str, Any]] = defaultdict(lambda: {
        "calls": 0, "answered": 0, "within_three": 0, "agent_first_hangups": 0, "long_calls": 0,
        "holds": 0, "hold_seconds": 0.0,
    })
    for call in calls:
        if call.get("state") == "callback-request":  # a call-back asked for through the API: no call
            continue
        d = days[day_of(float(call["arrived_at"]), tz)]
        d["calls"] += 1
        if call.get("answered_at") is not None and call.get("ended_at") is not None:
            talk = float(call["ended_at"]) - float(call["answered_at"])
            d["long_calls"] += int(talk > long_call_seconds)
        d["agent_first_hangups"] += int(call.get("hung_up_first") == "agent")
    for leg in legs:
        if leg.get("outcome") == "answered":
            d = days[day_of(float(leg["started_at"]), tz)]
            d["answered"] += 1
            d["within_three"] += int(bool(leg.get("within_three")))
    for h in holds:
        if h.get("duration") is not None:
            d = days[day_of(float(h["started_at"]), tz)]
            d["holds"] += 1
            d["hold_seconds"] += float(h["duration"])
    return [
        {"day": day.isoformat(), **v, "service_level": share(v["within_three"], v["answered"]),
         "hold_seconds": round(v["hold_seconds"], 1)}
        for day, v in sorted(days.items())
    ]


def today_summary(*, holds: Iterable[Row], transfers: Iterable[Row], calls: Iterable[Row],
                  hold_limit: float = HoldConfig().choices_after) -> dict[str, Any]:
    """The dashboard's "today" panel: holds (count, longest, over ``hold_limit`` s: R4's
    minute, ``[hold] choices_after``; the key keeps its name; what the callers chose at the
    limit) and transfers by outcome."""
    holds = list(holds)
    finished = [float(h["duration"]) for h in holds if h.get("duration") is not None]
    outcomes = Counter(str(t.get("state")) for t in transfers)
    calls = list(calls)
    return {
        "calls": len(calls),
        "holds": len(finished),
        "hold_longest": round(max(finished), 1) if finished else None,
        "holds_over_minute": sum(1 for d in finished if d > hold_limit),
        "hold_choices": hold_choices(holds),
        "transfers": sum(outcomes.values()),
        "transfer_outcomes": dict(sorted(outcomes.items())),
    }
