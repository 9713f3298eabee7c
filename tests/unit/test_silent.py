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


# What the flow may observe when a prompt or a pause ends: (digit, heard, reliable).
OBSERVED = st.tuples(st.sampled_from([None, None, None, "5", "#"]), st.booleans(), st.booleans())


def _drive(pause: float, steps: list[tuple[float, tuple[str | None, bool, bool]]]):
    """Run the flow's loop against the machine: after each prompt ``after_prompt``, in a
    pause ``after_pause`` (one wait ends ``dt`` later). Yields (observation, actions)."""
    c = SilentCall(pause=pause)
    now, stage = 0.0, "greeting"
    for dt, seen in steps:
        if c.done:
            break
        digit, heard, reliable = seen
        now += dt
        if c.state.startswith("pause"):
            actions = c.after_pause(now, digit=digit, heard=heard, reliable=reliable)
        else:
            actions = c.after_prompt(now, stage, digit=digit, heard=heard, reliable=reliable)
        for action in actions:
            if isinstance(action, Play):
                stage = action.stage
        yield c, now, seen, actions


@settings(max_examples=examples(200))
@given(pause=st.floats(0.5, 10.0), steps=st.lists(st.tuples(st.floats(0.0, 12.0), OBSERVED), max_size=40))
def test_routing_decided_by_the_machine(pause: float, steps: list) -> None:
    """Release never before three prompts and three full pauses, and never for a caller
    the controller could not hear; a key or speech always goes to the agents (a key
    first); at most one action per step, and nothing after the script ended."""
    ended = False
    for c, _now, (digit, heard, reliable), actions in _drive(pause, steps):
        assert len(actions) <= 1 and not ended
        if not actions:
            continue
        (action,) = actions
        if digit:
            assert action == RouteToAgent("dtmf", action.stage)
        elif heard:
            assert action == RouteToAgent("speech", action.stage)
        elif isinstance(action, Release):
            assert reliable
            assert c.prompts_finished == 3 and c.pauses_elapsed == 3
        elif isinstance(action, RouteToAgent):
            assert action.reason == "deaf" and not reliable
        ended = c.done


@settings(max_examples=examples(100))
@given(pause=st.floats(0.5, 10.0), deaf_at=st.integers(0, 6))
def test_silent_caller_released_only_when_heard_throughout(pause: float, deaf_at: int) -> None:
    """The whole silent script with hearing lost from step ``deaf_at`` on (6: never):
    released after the apology's pause when heard throughout, else to the agents."""
    silence: list[tuple[float, tuple[str | None, bool, bool]]] = [
        (pause, (None, False, i < deaf_at)) for i in range(6)]  # prompt, pause, x3
    outcome = [a for *_, actions in _drive(pause, silence) for a in actions if not isinstance(a, Play)]
    if deaf_at == 6:
        assert outcome == [Release()]
    else:
        assert len(outcome) == 1 and outcome[0].reason == "deaf"
