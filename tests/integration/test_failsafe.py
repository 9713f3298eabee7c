"""A call is never lost because the controller failed (issue 9): the dialplan's fallback
takes every call the controller cannot or did not finish."""

from __future__ import annotations

from tests.integration.amitools import ts


def _fallback(reason: str):
    return lambda e: (e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback"
                      and e.get("Reason") == reason)


async def _hang_up_caller(ami) -> None:
    for ch in await ami.channels():
        await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


async def test_controller_unreachable_call_goes_to_fallback_queue(ami):
    """Nothing listens on the FastAGI port: the call is queued within a second."""
    await ami.add_dialplan("test-caller", "waits", ["Answer()", "Wait(20)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/waits@test-caller", "ivr-inbound", "s")
    fallback = (await ami.wait_for(_fallback("unreachable"), timeout=10, since=since))[0]
    joined = (await ami.wait_for(lambda e: e.event == "QueueCallerJoin", timeout=5, since=since))[0]
    new = ami.find(lambda e: e.event == "Newchannel" and e.get("Channel", "").endswith(";1"), since)[0]
    assert joined["Queue"] == "support"
    assert ts(fallback) - ts(new) < 2.0, "fallback took too long"
    await _hang_up_caller(ami)


async def test_controller_stopped_mid_call_hands_call_to_fallback(ami, make_controller):
    """The controller goes away while it greets the caller: the caller reaches the queue."""
    ctl = await make_controller()
    await ami.add_dialplan("test-caller", "waits", ["Answer()", "Wait(30)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/waits@test-caller", "ivr-inbound", "s")
    await ami.wait_for(lambda e: e.event == "AGIExecStart" and "STREAM FILE" in e.get("Command", ""),
                       timeout=10, since=since)
    await ctl.stop(grace=0)  # the controller dies mid-prompt
    fallback = (await ami.wait_for(_fallback("unfinished"), timeout=10, since=since))[0]
    joined = (await ami.wait_for(lambda e: e.event == "QueueCallerJoin", timeout=5, since=since))[0]
    assert joined["Queue"] == "support"
    assert fallback["Uniqueid"] == joined["Uniqueid"]
    assert not ami.find(lambda e: e.event == "Hangup" and e.get("Channel", "").endswith(";1"), since)
    await _hang_up_caller(ami)


async def test_graceful_stop_lets_a_short_flow_finish(ami, make_controller):
    """SIGTERM-style stop with a grace period: a call in progress is not cut off."""
    ctl = await make_controller()
    await ami.add_dialplan("test-caller", "brief", ["Answer()", "Wait(3)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/brief@test-caller", "ivr-inbound", "s")
    await ami.wait_for(lambda e: e.event == "AGIExecStart", timeout=10, since=since)
    await ctl.stop(grace=10)
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel", "").endswith(";1"),
                       timeout=10, since=since)
    assert not ami.find(_fallback("unfinished"), since), "the caller was handed off although it hung up"
    assert not ctl.agi.calls
