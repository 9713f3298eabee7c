"""R3: the silent-call script."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.silent import Play, Release, RouteToAgent, SilentCall
from tests.properties import examples


def test_full_script() -> None:
    c = SilentCall()
    assert c.next_deadline is None  # greeting playing
    assert c.prompt_finished(10.0) == []
    assert c.next_deadline == 15.0
    assert c.on_timer(14.9) == []
    assert c.on_timer(15.0) == [Play("silent_prompt2", "prompt2")]
    assert c.next_deadline is None  # prompt2 playing, however long
    assert c.prompt_finished(18.0, "prompt2") == []
    assert c.on_timer(23.0) == [Play("silent_prompt3", "prompt3")]
    assert c.prompt_finished(30.0) == []
    assert c.on_timer(34.0) == []
    assert c.on_timer(35.0) == [Release()]
    assert c.done and c.next_deadline is None
    assert c.on_timer(100.0) == [] and c.speech(100.0) == []


def test_stale_prompt_finished_ignored() -> None:
    c = SilentCall()
    c.prompt_finished(1.0)
    assert c.prompt_finished(2.0) == []  # duplicate
    assert c.next_deadline == 6.0
    c.on_timer(6.0)
    assert c.prompt_finished(7.0, "greeting") == []  # stale stage
    assert c.state == "prompt2"


def test_speech_and_dtmf_leave_the_script() -> None:
    c = SilentCall()
    c.prompt_finished(1.0)
    assert c.speech(3.0) == [RouteToAgent("speech", "pause1")]
    assert c.next_deadline is None and c.done
    d = SilentCall()
    assert d.dtmf(0.5, "5") == [RouteToAgent("dtmf", "greeting")]


def test_hangup_ends_quietly() -> None:
    c = SilentCall(pause=2.0)
    c.prompt_finished(1.0)
    assert c.hangup(2.0) == []
    assert c.on_timer(10.0) == [] and c.next_deadline is None


EVENTS = st.sampled_from(["finished", "timer", "timer", "finished_stale", "nothing"])


@settings(max_examples=examples(100))
@given(
    pause=st.floats(0.5, 10.0),
    steps=st.lists(st.tuples(EVENTS, st.floats(0.0, 20.0)), max_size=40),
)
def test_never_released_early(pause: float, steps: list[tuple[str, float]]) -> None:
    c = SilentCall(pause=pause)
    now = 0.0
    finished_at: list[float] = []
    for event, dt in steps:
        now += dt
        if event == "finished":
            if not c.state.startswith("pause") and not c.done:
                finished_at.append(now)
            c.prompt_finished(now)
        elif event == "finished_stale":
            c.prompt_finished(now, "nope")
        actions = c.on_timer(now) if event == "timer" else []
        if Release() in actions:
            assert len(finished_at) == 3
            assert c.prompts_finished == 3 and c.pauses_elapsed == 3
            assert now >= finished_at[-1] + pause
            # the three pauses all fitted between first prompt end and release
            assert now - finished_at[0] >= 3 * pause - 1e-9
    if c.state != "released":
        assert c.pauses_elapsed < 3
