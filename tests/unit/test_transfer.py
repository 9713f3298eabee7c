"""R5: warm transfer only to a confirmed, live answer; the caller is never dropped."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rules.transfer import (
    Announce,
    Connect,
    Dial,
    HangupTarget,
    PlayToCaller,
    ReturnCaller,
    StateChanged,
    WarmTransfer,
)
from tests.properties import examples


def states(actions: Sequence[object]) -> list[str]:
    return [a.state for a in actions if isinstance(a, StateChanged)]


def test_confirmed_transfer_completes() -> None:
    t = WarmTransfer("PJSIP/2001", ring_limit=20, confirm_timeout=10)
    assert t.offer(0.0) == [StateChanged("offered"), PlayToCaller("transfer_reason"),
                            Dial("PJSIP/2001", 20)]
    assert t.next_deadline == 20.0
    assert t.target_ringing(1.0) == [StateChanged("ringing")]
    assert t.target_answered(5.0) == [StateChanged("answered"), Announce()]
    t.announcement_finished(9.0)
    assert t.next_deadline == 19.0
    assert t.target_dtmf(12.0, "1") == [
        StateChanged("confirmed"), Connect("PJSIP/2001", "transfer_thanks", True),
        StateChanged("completed")]
    assert t.done and t.next_deadline is None
    assert t.target_hangup(20.0) == [] and t.on_timer(100.0) == []


def test_no_answer_returns_to_agent() -> None:
    t = WarmTransfer("PJSIP/2001", ring_limit=20)
    t.offer(0.0)
    t.target_ringing(1.0)
    assert t.on_timer(19.9) == []
    assert t.on_timer(20.0) == [
        StateChanged("noanswer", "noanswer"), HangupTarget(),
        ReturnCaller("agent", True, "noanswer"), StateChanged("returned", "noanswer")]


def test_voicemail_never_confirms() -> None:
    t = WarmTransfer("PJSIP/2001", confirm_timeout=10)
    t.offer(0.0)
    t.target_answered(3.0)  # voicemail picks up
    t.announcement_finished(8.0)
    assert t.target_dtmf(9.0, "#") == []
    actions = t.on_timer(18.0)
    assert states(actions) == ["timeout", "returned"]
    assert ReturnCaller("agent", True, "no-confirmation") in actions


def test_refusal_busy_hangup() -> None:
    for event in ("refuse", "busy", "hangup"):
        t = WarmTransfer("PJSIP/2001")
        t.offer(0.0)
        if event == "busy":
            actions = t.target_busy(1.0)
        else:
            t.target_answered(1.0)
            actions = t.target_dtmf(2.0, "2") if event == "refuse" else t.target_hangup(2.0)
        assert states(actions)[-1] == "returned"
        assert any(isinstance(a, ReturnCaller) for a in actions)


def test_agent_gone_waits_for_confirmation_then_queue() -> None:
    t = WarmTransfer("PJSIP/2001")
    t.offer(0.0)
    t.target_ringing(1.0)
    assert t.agent_hangup(2.0) == []
    assert t.state == "ringing"  # not completed blindly
    t.target_answered(4.0)
    t.announcement_finished(6.0)
    actions = t.on_timer(16.0)
    assert ReturnCaller("queue", True, "no-confirmation") in actions
    t2 = WarmTransfer("PJSIP/2001")
    t2.offer(0.0)
    t2.agent_hangup(1.0)
    t2.target_answered(2.0)
    assert Connect("PJSIP/2001", "transfer_thanks", False) in t2.target_dtmf(3.0, "1")


def test_caller_hangup_cancels() -> None:
    t = WarmTransfer("PJSIP/2001")
    t.offer(0.0)
    assert t.caller_hangup(1.0) == [StateChanged("abandoned", "caller-hangup"), HangupTarget()]
    assert t.next_deadline is None


EVENTS = st.sampled_from([
    "ringing", "busy", "answered", "announced", "dtmf1", "dtmf2", "dtmf9",
    "target_hangup", "agent_hangup", "caller_hangup", "timer", "offer",
])


@settings(max_examples=examples(100))
@given(steps=st.lists(st.tuples(EVENTS, st.floats(0, 40)), max_size=25))
def test_never_connects_unconfirmed_never_drops_caller(steps: list[tuple[str, float]]) -> None:
    t = WarmTransfer("PJSIP/2001", ring_limit=30, confirm_timeout=10)
    now = 0.0
    seen: list[object] = list(t.offer(now))
    answered = confirmed = False
    for event, dt in steps:
        now += dt
        if t.state == "answered":
            answered = True
        if event == "dtmf1" and t.state == "answered":
            confirmed = True
        actions = {
            "ringing": t.target_ringing, "busy": t.target_busy, "answered": t.target_answered,
            "announced": t.announcement_finished,
            "dtmf1": lambda n: t.target_dtmf(n, "1"), "dtmf2": lambda n: t.target_dtmf(n, "2"),
            "dtmf9": lambda n: t.target_dtmf(n, "9"), "target_hangup": t.target_hangup,
            "agent_hangup": t.agent_hangup, "caller_hangup": t.caller_hangup,
            "timer": t.on_timer, "offer": t.offer,
        }[event](now)
        if any(isinstance(a, Connect) for a in actions):
            assert answered and confirmed and event == "dtmf1"
        seen += actions
    # let every timer run out: the transfer must end
    while (d := t.next_deadline) is not None:
        seen += t.on_timer(d)
    assert t.done
    connects = [a for a in seen if isinstance(a, Connect)]
    returns = [a for a in seen if isinstance(a, ReturnCaller)]
    if t.state == "completed":
        assert len(connects) == 1 and not returns
    elif t.state == "returned":
        assert len(returns) == 1 and not connects
        expected = "queue" if "agent_hangup" in [e for e, _ in steps] else "agent"
        # the agent may have hung up after the return: only check when gone before
        assert returns[0].to in ("agent", "queue")
        if expected == "agent":
            assert returns[0].to == "agent"
    else:
        assert t.state == "abandoned" and not connects and not returns


def test_a_transfer_is_taken_over_only_at_a_stage_it_can_go_on_from() -> None:
    from ivr.rules.transfer import WarmTransfer

    m = WarmTransfer.taken_over("PJSIP/1002", 20, 10, 30, state="offered", deadline=120.0, agent_present=True)
    assert (m.state, m.history, m.next_deadline) == ("offered", ["offered"], 120.0)
    assert [type(a).__name__ for a in m.on_timer(120.0)] == ["StateChanged", "HangupTarget", "ReturnCaller",
                                                              "StateChanged"]
    with pytest.raises(ValueError, match="not 'confirmed'"):
        WarmTransfer.taken_over("PJSIP/1002", 20, 10, 30, state="confirmed", deadline=0.0, agent_present=True)
