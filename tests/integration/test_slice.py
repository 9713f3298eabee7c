"""The first vertical slice on the real switch: an inbound call reaches the controller's
FastAGI app, is answered, hears the greeting, and hangs up — asserted from Asterisk's own
AMI events."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from ivr.greeting import choose_greeting

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def test_inbound_call_is_answered_and_greeted(ami, make_controller):
    at = datetime(2027, 3, 10, 15, 0, tzinfo=SHANGHAI)  # an ordinary afternoon
    ctl = await make_controller(now=lambda: at)
    expected = [f"ivr/zh-CN/{p}" for p in choose_greeting(at, ctl.config).prompts]
    assert expected == ["ivr/zh-CN/hello", "ivr/zh-CN/welcome"]

    await ami.add_dialplan("test-caller", "slice", ["Answer()", "Wait(9)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/slice@test-caller", "ivr-inbound", "s")

    # The AGI session ran the greeting: each STREAM FILE ran and succeeded, in order.
    ends = await ami.wait_for(
        lambda e: e.event == "AGIExecEnd" and e.get("Command", "").startswith("STREAM FILE"),
        timeout=20, since=since, count=len(expected),
    )
    played = [e["Command"].split()[2] for e in ends]
    assert played == expected
    assert all(e["Result"] == "Success" and e["ResultCode"] == "200" for e in ends)
    answer = ami.find(lambda e: e.event == "AGIExecEnd" and e.get("Command") == "ANSWER", since)
    assert answer and answer[0]["Result"] == "Success"

    # The inbound leg (Local ;1) hangs up; the controller has no call left.
    hangups = await ami.wait_for(
        lambda e: e.event == "Hangup" and e.get("Channel", "").endswith(";1"), timeout=30, since=since,
    )
    assert hangups[0]["Cause"] in ("16", "0")
    assert await ctl.agi.wait_idle(5), f"call tasks left running: {ctl.agi.calls}"
