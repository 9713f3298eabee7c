"""R3 unclear line: the pure script (ask, ask again, goodbye, release; clear speech returns)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.unclear import Release, ReturnToAgent, Say, UnclearLine
from tests.properties import examples


def test_full_script_faint() -> None:
    u = UnclearLine("faint")
    assert u.next_deadline is None
    assert u.start(0.0) == [Say("unclear_ask", "ask")]
    assert u.start(0.1) == []  # once
    assert u.next_deadline is None  # the prompt plays, however long
    assert u.prompt_finished(3.0) == []
    assert u.next_deadline == 8.0
    assert u.on_timer(7.99) == []
    assert u.on_timer(8.0) == [Say("unclear_ask", "ask-again")]
    assert u.prompt_finished(11.0, "ask-again") == []
    assert u.on_timer(16.0) == [Say("unclear_goodbye_faint", "goodbye")]
    assert u.prompt_finished(20.0, "goodbye") == []
    assert u.on_timer(24.9) == []
    assert u.on_timer(25.0) == [Release()]
    assert u.done and u.next_deadline is None
    assert u.clear_speech(26.0) == [] and u.on_timer(99.0) == []


def test_noisy_goodbye_wording() -> None:
    u = UnclearLine("noisy", pause=1.0)
    u.start(0.0)
    u.prompt_finished(1.0)
    u.on_timer(2.0)
    u.prompt_finished(3.0)
    assert u.on_timer(4.0) == [Say("unclear_goodbye_noisy", "goodbye")]


def test_clear_speech_returns_from_any_stage() -> None:
    for steps, during in ((0, "ask"), (1, "pause1"), (2, "ask-again"), (5, "pause3")):
        u = UnclearLine("faint", pause=1.0)
        u.start(0.0)
        now = 0.0
        for _ in range(steps):
            now += 1.0
            if u.state.startswith("pause"):
                u.on_timer(now)
            else:
                u.prompt_finished(now)
        assert u.state == during
        assert u.clear_speech(now) == [ReturnToAgent(during)]
        assert u.state == "returned" and u.next_deadline is None


def test_agent_takes_the_caller_back() -> None:
    u = UnclearLine("noisy")
    u.start(0.0)
    u.prompt_finished(3.0)
    assert u.agent_takes_back(4.0) == [ReturnToAgent("pause1", "agent")]
    assert u.done and u.clear_speech(5.0) == [] and u.agent_takes_back(5.0) == []


def test_stale_finish_and_hangup() -> None:
    u = UnclearLine("faint")
    u.start(0.0)
    u.prompt_finished(1.0)
    assert u.prompt_finished(2.0) == [] and u.next_deadline == 6.0  # duplicate ignored
    u.on_timer(6.0)
    assert u.prompt_finished(7.0, "ask") == [] and u.state == "ask-again"  # stale stage
    assert u.hangup(8.0) == [] and u.done
    assert u.on_timer(100.0) == [] and u.clear_speech(100.0) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reason must be one of"):
        UnclearLine("loud")
    with pytest.raises(ValueError, match="pause must be positive"):
        UnclearLine("faint", pause=0)


EVENTS = st.sampled_from(["finished", "timer", "timer", "stale", "clear", "nothing"])


@settings(max_examples=examples(150))
@given(
    reason=st.sampled_from(["faint", "noisy"]),
    pause=st.floats(0.5, 10.0),
    steps=st.lists(st.tuples(EVENTS, st.floats(0.0, 12.0)), max_size=40),
    clear_allowed=st.booleans(),
)
def test_release_never_sooner(reason: str, pause: float, steps: list[tuple[str, float]],
                              clear_allowed: bool) -> None:
    """Release only after three prompts finished and three full pauses; the goodbye's
    pause is at least ``pause`` long; after release or return nothing more happens;
    the stages come in script order."""
    u = UnclearLine(reason, pause=pause)
    actions = list(u.start(0.0))
    now = 0.0
    for event, dt in steps:
        now += dt
        if event == "finished":
            actions += u.prompt_finished(now)
        elif event == "stale":
            actions += u.prompt_finished(now, "nope")
        elif event == "timer":
            got = u.on_timer(now)
            if got == [Release()]:
                assert now >= u.prompt_ended["goodbye"] + pause
                assert set(u.prompt_ended) == {"ask", "ask-again", "goodbye"}
                assert u.prompt_ended["goodbye"] - u.prompt_ended["ask"] >= 2 * pause - 1e-9
            actions += got
        elif event == "clear" and clear_allowed:
            actions += u.clear_speech(now)
    stages = [a.stage for a in actions]
    assert stages == ["ask", "ask-again", "goodbye", "release"][:len(stages)] or (
        stages[-1] == "returned" and stages[:-1] == ["ask", "ask-again", "goodbye"][:len(stages) - 1])
    assert stages.count("release") + stages.count("returned") <= 1
    if not clear_allowed:
        assert "returned" not in stages
    say = [a for a in actions if isinstance(a, Say)]
    assert all(a.prompt == (f"unclear_goodbye_{reason}" if a.stage == "goodbye" else "unclear_ask")
               for a in say)
