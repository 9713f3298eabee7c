"""One call through the whole production path on the real switch: greeting, the caller
speaks, the agent hunt (agent number announced), a hold through the HTTP API with its
30 s reminder, resume with the thank-you, and the call record — the pieces of R1-R4
working together, not each in its own test topology."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.integration.amitools import ts, until

TOKEN = "e2e-test-token-0123"


def _user_event(name: str, **fields: str):
    def match(e) -> bool:
        return (e.event == "UserEvent" and e.get("UserEvent") == name
                and all(e.get(k) == v for k, v in fields.items()))
    return match


async def test_call_through_greeting_agent_hold_and_resume(ami, make_controller):
    from tests.integration.conftest import _free_tcp_port

    http_port = _free_tcp_port()
    await make_controller(
        f'[http]\nport = {http_port}\ntoken = "{TOKEN}"\n\n'
        '[[agents]]\nnumber = "1001"\nname = "E2E agent"\ndial = "Local/1001@test-e2e-agents"\n'
    )
    await ami.add_dialplan("test-e2e-agents", "1001", ["Ringing()", "Wait(2)", "Answer()", "Wait(120)"])
    await ami.add_dialplan("test-e2e-caller", "speaker",
                           ["Answer()", "Playback(ivr-test/caller_speech)", "Wait(120)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/speaker@test-e2e-caller", "ivr-inbound", "s", caller_id="13800138000")

    # R3: the caller spoke, so the controller handed it to the agents; R1/R2: the agent
    # answered within one ring and the caller heard the agent's number before the bridge.
    await ami.wait_for(_user_event("IvrSilentCall", Stage="responded", Reason="speech"), timeout=20, since=since)
    played = await ami.wait_for(
        lambda e: e.event == "AGIExecStart" and "ivr/zh-CN/agent_service" in e.get("Command", ""),
        timeout=20, since=since)
    caller = played[0]["Channel"]
    call_id = played[0]["Linkedid"]
    assert not ami.find(lambda e: e.event == "AGIExecStart" and "ring_apology" in e.get("Command", ""), since)
    entered = await ami.wait_for(
        lambda e: e.event == "BridgeEnter" and e.get("Channel") == caller, timeout=10, since=since)
    assert not ami.find(_user_event("IvrRingAlarm"), since), "answered in the first ring: no alarm"

    # R4: hold through the API; the held caller hears a reminder 30 s after hold start.
    base = f"http://127.0.0.1:{http_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/api/calls/{call_id}/hold") as resp:
            assert resp.status in (200, 202), await resp.text()
        start = (await ami.wait_for(_user_event("IvrHold", State="start"), timeout=10, since=since))[0]
        reminder = (await ami.wait_for(_user_event("IvrHold", State="reminder"), timeout=40, since=since))[0]
        assert abs(ts(reminder) - ts(start) - 30.0) <= 0.5
        async with http.post(f"{base}/api/calls/{call_id}/resume") as resp:
            assert resp.status in (200, 202), await resp.text()
        await ami.wait_for(_user_event("IvrHold", State="resume"), timeout=10, since=since)
        thanks = await ami.wait_for(
            lambda e: e.event == "AGIExecStart" and "ivr/zh-CN/hold_thanks" in e.get("Command", ""),
            timeout=10, since=since)
        back = await ami.wait_for(
            lambda e: e.event == "BridgeEnter" and e.get("Channel") == caller
            and e.get("BridgeUniqueid") == entered[0]["BridgeUniqueid"], timeout=15, since=since, count=2)
        assert ts(back[1]) >= ts(thanks[0]), "the caller is back with the agent only after the thank-you"

        # The call record has it all (records are written as events happen).
        for ch in await ami.channels():
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
        await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel") == caller, timeout=10, since=since)

        async def ended() -> Any:
            # The controller closes the record when its own AMI link has seen the call's
            # last channel go, and writes it a moment later: the caller's Hangup seen here
            # does not mean the record is closed yet (a single read raced the writer).
            async with http.get(f"{base}/api/calls/{call_id}") as resp:
                assert resp.status == 200, await resp.text()
                record = await resp.json()
            return record if record["state"] == "ended" else None

        record = await until(ended, timeout=10, what="the call's record closed")
    assert record["caller"] == "13800138000" and record["agent"] == "1001"
    assert record["rings"] == 1 and record["within_three"]
    assert record["silent_stage"] == "responded"
    assert record["hold_count"] == 1 and 29.5 <= record["hold_seconds"] <= 31.5
    kinds = [e["kind"] for e in record["events"]]
    for kind in ("call.arrived", "greeting.played", "ring.answered", "hold.start", "hold.reminder",
                 "hold.resume", "call.ended"):
        assert kind in kinds, kinds
