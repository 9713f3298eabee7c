"""R4: hold reminders, choices, resume."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.hold import (
    Abandoned,
    AlertAgent,
    Announce,
    HoldStarted,
    HoldTimer,
    KeepWaiting,
    OfferChoices,
    Remind,
    RequestCallback,
    TakeMessage,
    ThankCaller,
    announce_minutes,
)
from tests.properties import examples


def drive(h: HoldTimer, until: float) -> list[tuple[float, object]]:
    out: list[tuple[float, object]] = []
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


@settings(max_examples=examples(50))
@given(start=st.floats(0, 1e6), choices_after=st.floats(1.0, 300.0))
def test_announcement_gives_the_limit_and_keeps_the_schedule(start: float, choices_after: float) -> None:
    """R4 time limit: the announcement follows the start and promises a limit never
    shorter than the choices instant; the reminders are the same as without it."""
    with_it, without = HoldTimer(30.0, choices_after, announce=True), HoldTimer(30.0, choices_after)
    first = with_it.start(start)
    assert first[0] == HoldStarted() and isinstance(first[1], Announce)
    assert first[1].minutes * 60 >= choices_after and (first[1].minutes - 1) * 60 < choices_after
    assert without.start(start) == [HoldStarted()]
    assert drive(with_it, start + 400) == drive(without, start + 400)


def test_announce_minutes() -> None:
    assert [announce_minutes(s) for s in (1, 60, 60.5, 120, 300)] == [1, 1, 2, 2, 5]


# Steps of a hold as the service drives it: a timer firing after dt, a digit, the agent
# resuming, or the caller's side taking its next action.
HOLD_STEPS = st.lists(
    st.tuples(st.sampled_from(["timer", "timer", "digit", "take", "resume"]), st.floats(0, 45),
              st.sampled_from("1234")),
    max_size=30,
)


@settings(max_examples=examples(200))
@given(steps=HOLD_STEPS)
def test_next_action_is_the_machines_choice(steps: list[tuple[str, float, str]]) -> None:
    """The caller gets every action meant for them, oldest first, except that a thank-you
    wins over anything still waiting (reminders, choices, a choice): it comes next, and
    nothing after it. ``next_leaves_hold`` says whether the next one ends the hold."""
    t = HoldTimer(30.0, 60.0)
    t.start(0.0)
    now = 0.0
    expected: list = []  # what the caller should still get, oldest first
    thanked = False
    for kind, dt, digit in steps:
        now += dt
        if kind == "timer":
            out = t.on_timer(now)
        elif kind == "digit":
            out = t.digit(now, digit)
        elif kind == "resume":
            out = t.resume(now)
        else:
            leaves = t.next_leaves_hold
            action = t.next_action()
            assert action == (expected[0] if expected else None)
            assert leaves == isinstance(action, (TakeMessage, RequestCallback, ThankCaller))
            expected = expected[1:]
            continue
        for action in out:
            if isinstance(action, ThankCaller):
                thanked = True
                expected = [action]  # wins over whatever was waiting
            elif isinstance(action, (Remind, OfferChoices, KeepWaiting, TakeMessage, RequestCallback)):
                assert not thanked  # the machine never queues anything after the thanks
                expected.append(action)
    assert t.queue == expected
    if t.state == "held":
        t.resume(now)
        assert t.next_leaves_hold
        assert isinstance(t.next_action(), ThankCaller)  # a thank-you always wins
        assert t.next_action() is None and not t.next_leaves_hold
