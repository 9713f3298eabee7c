"""R4: hold reminders, choices, resume."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.hold import (
    Abandoned,
    AlertAgent,
    HoldStarted,
    HoldTimer,
    KeepWaiting,
    OfferChoices,
    Remind,
    RequestCallback,
    TakeMessage,
    ThankCaller,
)
from tests.properties import examples


def drive(h: HoldTimer, until: float) -> list[tuple[float, object]]:
    out = []
    while (d := h.next_deadline) is not None and d <= until:
        out += [(d, a) for a in h.on_timer(d)]
    return out


def test_schedule() -> None:
    h = HoldTimer()
    assert h.start(1000.0) == [HoldStarted()]
    events = drive(h, 1150.0)
    assert events == [
        (1030.0, Remind(1, 30.0)),
        (1060.0, OfferChoices(2, 60.0)),
        (1060.0, AlertAgent(2, 60.0)),
        (1090.0, Remind(3, 90.0)),
        (1120.0, Remind(4, 120.0)),
        (1150.0, Remind(5, 150.0)),
    ]
    assert ThankCaller.state == "resume" and Remind.state == "reminder"


def test_choices_not_on_a_reminder_tick() -> None:
    h = HoldTimer(reminder_interval=30, choices_after=45)
    h.start(0.0)
    assert [type(a).__name__ for _, a in drive(h, 60.0)] == [
        "Remind", "OfferChoices", "AlertAgent", "Remind"]


def test_digits() -> None:
    h = HoldTimer()
    h.start(0.0)
    assert h.digit(10.0, "2") == []  # no choices yet
    drive(h, 60.0)
    assert h.digit(61.0, "1") == [KeepWaiting(2, 61.0)]
    assert h.digit(62.0, "9") == []
    assert h.digit(63.0, "2") == [TakeMessage(2, 63.0)]
    assert h.next_deadline is None and h.state == "message"
    h2 = HoldTimer()
    h2.start(0.0)
    drive(h2, 60.0)
    assert h2.digit(70.0, "3") == [RequestCallback(2, 70.0)]


def test_resume_and_hangup() -> None:
    h = HoldTimer()
    h.start(0.0)
    drive(h, 30.0)
    assert h.resume(45.0) == [ThankCaller(1, 45.0)]
    assert h.next_deadline is None and h.on_timer(1000.0) == []
    h2 = HoldTimer()
    h2.start(0.0)
    assert h2.hangup(12.5) == [Abandoned(0, 12.5)]
    assert h2.resume(13.0) == []


def test_late_timer_plays_one_prompt() -> None:
    h = HoldTimer()
    h.start(0.0)
    assert h.on_timer(95.0) == [OfferChoices(3, 95.0), AlertAgent(3, 95.0)]
    assert h.next_deadline == 120.0


@settings(max_examples=examples(100))
@given(
    start=st.floats(0, 1e7),
    interval=st.sampled_from([30.0, 20.0, 15.5]),
    resume_after=st.floats(0, 400),
    pokes=st.lists(st.floats(0, 400), max_size=20),
)
def test_reminders_every_interval_never_after_resume(
    start: float, interval: float, resume_after: float, pokes: list[float]
) -> None:
    h = HoldTimer(reminder_interval=interval, choices_after=2 * interval)
    h.start(start)
    resume_at = start + resume_after
    ticks: list[int] = []
    spurious = sorted(start + p for p in pokes if p < resume_after)
    while True:
        d = h.next_deadline
        assert d is not None
        if d > resume_at:
            break
        for p in [p for p in spurious if p < d]:  # early on_timer calls do nothing
            assert h.on_timer(p) == []
        spurious = [p for p in spurious if p >= d]
        for a in h.on_timer(d):
            if isinstance(a, (Remind, OfferChoices)):
                ticks.append(a.count)
                assert abs(a.held_seconds - a.count * interval) < 1e-6 * max(1.0, start)
    assert ticks == list(range(1, len(ticks) + 1))
    expected = 0
    while start + (expected + 1) * interval <= resume_at:
        expected += 1
    assert len(ticks) == expected
    h.resume(resume_at)
    assert h.next_deadline is None
    for later in (resume_at + 1, resume_at + 1000):
        assert h.on_timer(later) == []
