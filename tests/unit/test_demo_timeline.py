"""The demo's timeline lines (pure formatting; the real round is tests/integration/test_demo.py)."""

from __future__ import annotations

from typing import Any

from ivr.demo_script import SCENARIOS, Timeline, clock, describe


def test_clock_is_minutes_seconds_tenths() -> None:
    assert clock(0) == "+00:00.0"
    assert clock(12.34) == "+00:12.3"
    assert clock(75.06) == "+01:15.1"


def test_a_rule_event_is_one_line_with_time_rule_caller_and_what_happened() -> None:
    lines: list[str] = []
    tl = Timeline(lines.append)
    tl.t0 = 1000.0
    tl.numbers["c1"] = "13800004"
    tl.event("hold.reminder", "c1", {"count": 1, "held_seconds": 30.002}, 1041.12)
    tl.event("hold.reminder", "other-call", {"count": 1, "held_seconds": 30.0}, 1041.2)  # not the demo's
    tl.event("ring.started", "c1", {}, 1042.0)  # not shown
    assert lines == ["+00:41.1  R4 hold    caller 13800004  reminder 1 (30 s)"]


def words(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    described = describe(kind, data)
    assert described is not None, f"no words for {kind}"
    return described


def test_every_rule_has_its_words() -> None:
    assert describe("ring.alarm", {"level": "critical", "rings": 6, "agent": "1001"}) == (
        "R1 ring", "critical ring alarm: 6 rings unanswered (agent 1001)")
    assert words("ring.answered", {"agent": "1001", "rings": 7, "late": True})[1].endswith("-> apology")
    assert describe("greeting.played", {"prompts": ["hello", "welcome"], "language": "en-US",
                                         "daypart": "day", "text": "Hello!"}) == (
        "R2 greet", 'greeting of the day: hello + welcome (en-US, day): "Hello!"')
    assert describe("call.released", {"reason": "silent"}) == ("R3 silent", "released (silent)")
    assert words("hold.choices", {"count": 2, "held_seconds": 60.0})[0] == "R4 hold"
    assert describe("hold.choice", {"choice": "callback"}) == ("R4 hold", "the caller presses 3: asks for a call-back")
    assert describe("transfer.state", {"target": "1004", "state": "refused", "reason": "refused"}) == (
        "R5 xfer", "to 1004: refused (refused)")
    assert {s.rule for s in SCENARIOS} == {"R1", "R2", "R3", "R4", "R5"}
    assert len({s.number for s in SCENARIOS}) == len(SCENARIOS)
