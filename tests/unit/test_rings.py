"""R1: ring counting by cadence and ring alarms."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.rings import Answered, Cadence, NotAnswered, Reroute, RingAlarm, RingWatch, answer_verdict
from tests.properties import examples

INDICATIONS = """
[general]
country=cn

[us]
description = United States / North America
ringcadence = 2000,4000
dial = 350+440

[cn]
description = China
; Reference: http://www.itu.int/ITU-T/inr/forms/files/tones-0203.pdf
ringcadence = 1000,4000
dial = 450

[uk]
ringcadence = 400,200,400,2000 ; double ring
"""


@pytest.mark.parametrize(
    ("zone", "period"), [("cn", 5.0), ("us", 6.0), ("uk", 3.0), ("CN", 5.0)]
)
def test_cadence_from_indications(zone: str, period: float) -> None:
    cadence = Cadence.from_indications(INDICATIONS, zone)
    assert cadence.period == period
    assert Cadence.for_zone(zone).period == period


def test_cadence_unknown_zone() -> None:
    with pytest.raises(KeyError):
        Cadence.from_indications(INDICATIONS, "xx")
    with pytest.raises(KeyError):
        Cadence.for_zone("xx")


@pytest.mark.parametrize(
    ("elapsed", "ring"), [(0, 1), (4.99, 1), (5, 2), (14.99, 3), (15, 4), (30, 7)]
)
def test_ring_number_cn(elapsed: float, ring: int) -> None:
    assert Cadence(1000, 4000).ring_number(elapsed) == ring


def watch(**kw: Any) -> RingWatch:
    w = RingWatch(Cadence(1000, 4000), **kw)
    w.start(100.0)
    return w


def test_alarms_at_three_and_six_periods() -> None:
    w = watch()
    assert w.next_deadline == 115.0
    assert w.on_timer(114.9) == []
    assert w.on_timer(115.0) == [RingAlarm("warning", 3, 15.0)]
    assert w.on_timer(115.0) == []
    assert w.next_deadline == 130.0
    assert w.on_timer(130.0) == [RingAlarm("critical", 6, 30.0)]
    assert w.next_deadline is None


def test_late_timer_raises_both_once() -> None:
    w = watch()
    actions = w.on_timer(200.0)
    assert [a.level if isinstance(a, RingAlarm) else a for a in actions] == ["warning", "critical"]
    assert w.on_timer(300.0) == []


def test_reroute_at_warning() -> None:
    w = watch(reroute=True, reroute_target="Local/queue@ivr")
    assert w.on_timer(115.0) == [RingAlarm("warning", 3, 15.0), Reroute(3, "Local/queue@ivr")]
    assert w.on_timer(130.0) == [RingAlarm("critical", 6, 30.0)]


@pytest.mark.parametrize(
    ("at", "rings", "within", "late"),
    [(101.0, 1, True, False), (114.9, 3, True, False), (116.0, 4, False, False),
     (130.0, 7, False, False), (131.0, 7, False, True)],
)
def test_answer(at: float, rings: int, within: bool, late: bool) -> None:
    w = watch()
    answered = w.answer(at)[-1]
    assert isinstance(answered, Answered)
    assert answered == Answered(rings, within, late, answered.elapsed, call_rings=rings)
    assert answered.elapsed == pytest.approx(at - 100.0)
    assert w.next_deadline is None
    assert w.on_timer(1000.0) == [] and w.answer(1000.0) == []


def test_answer_raises_missed_alarm_first() -> None:
    w = watch()
    actions = w.answer(120.0)
    assert actions[0] == RingAlarm("warning", 3, 20.0)
    assert isinstance(actions[1], Answered)


def test_stop() -> None:
    w = watch()
    assert w.stop(104.0, "hangup") == [NotAnswered(1, "hangup", 4.0)]
    assert w.next_deadline is None and w.stop(105.0) == []


def test_configurable_thresholds() -> None:
    w = RingWatch(Cadence(2000, 4000), warn_rings=2, critical_rings=4)
    w.start(0.0)
    assert w.next_deadline == 12.0
    assert w.on_timer(12.0)[0] == RingAlarm("warning", 2, 12.0)
    assert w.next_deadline == 24.0


@settings(max_examples=examples(100))
@given(
    start=st.floats(0, 1e6),
    calls=st.lists(st.floats(0, 100), max_size=30),
    answer_at=st.none() | st.floats(0, 100),
)
def test_each_alarm_exactly_once(start: float, calls: list[float], answer_at: float | None) -> None:
    w = RingWatch(Cadence(1000, 4000))
    w.start(start)
    alarms: list[RingAlarm] = []
    for offset in sorted(calls):
        alarms += [a for a in w.on_timer(start + offset) if isinstance(a, RingAlarm)]
    end = start + (answer_at if answer_at is not None else 200.0)
    end = max(end, start + max(calls, default=0.0))
    if answer_at is not None:
        alarms += [a for a in w.answer(end) if isinstance(a, RingAlarm)]
    else:
        alarms += [a for a in w.on_timer(end) if isinstance(a, RingAlarm)]
    levels = [a.level for a in alarms]
    assert len(levels) == len(set(levels))
    elapsed = end - start
    assert ("warning" in levels) == (end >= start + 15.0)
    assert ("critical" in levels) == (end >= start + 30.0)
    for alarm in alarms:  # never early
        assert alarm.elapsed >= alarm.rings * 5.0 - 1e-6 or elapsed >= alarm.rings * 5.0


@settings(max_examples=examples(200))
@given(
    pattern=st.sampled_from([(1000, 4000), (2000, 4000), (400, 200, 400, 2000), (1500, 3500)]),
    critical=st.integers(1, 10),
    start=st.floats(0, 1e6),
    earlier=st.floats(0, 120),
    after=st.floats(0, 120),
)
def test_late_iff_more_than_critical_rings_on_the_call(
    pattern: tuple[int, ...], critical: int, start: float, earlier: float, after: float
) -> None:
    """The apology is decided by the watch alone, from the call's first ring: late iff
    more than ``critical_rings`` full rings passed (so late => the caller is on a ring
    after the critical one; on such a ring but not late only at the instant it starts)."""
    cadence = Cadence.from_pattern(pattern)
    w = RingWatch(cadence, warn_rings=1, critical_rings=critical)
    call_started = start - earlier  # an earlier agent rang first (re-route, hunt)
    w.start(start, call_started=call_started)
    now = start + after
    answered = w.answer(now)[-1]
    assert isinstance(answered, Answered) and w.answered == answered
    elapsed = now - call_started
    assert answered.late == (elapsed > critical * cadence.period)
    assert answered.call_rings == cadence.ring_number(elapsed) >= answered.rings
    if answered.late:
        assert answered.call_rings > critical
    elif answered.call_rings > critical:
        assert elapsed == pytest.approx(critical * cadence.period)
    assert answer_verdict(cadence, critical, call_started, now) == (answered.call_rings, answered.late)


@settings(max_examples=examples(100))
@given(ticks=st.lists(st.floats(0, 100), max_size=20), answer_after=st.floats(0, 100))
def test_decision_fixed_at_answer(ticks: list[float], answer_after: float) -> None:
    """Timers and a second answer after the answer never change the decision."""
    w = RingWatch(Cadence(1000, 4000))
    w.start(0.0)
    w.answer(answer_after)
    decision = w.answered
    for t in sorted(ticks):
        assert w.on_timer(answer_after + t) == [] and w.answer(answer_after + t) == []
    assert w.answered == decision
