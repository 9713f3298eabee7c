"""R5 warm transfer against the real switch.

Each scenario builds its own call from Local channels (no inbound flow): a caller
(``Local/c@test-xfer-N-caller``: Answer, Wait) whose ;1 half Dials the first agent
(``Local/1001@test-xfer-N-agent``: Answer, Wait), then the controller's TransferService
transfers it to a Local target whose ;2 half plays the target's behaviour. Outcomes are
asserted from AMI events and Asterisk's own timestamps; independent scenarios run
concurrently.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from panoramisk.message import Message

from ivr.agi.server import FastAgiServer
from ivr.ami.connection import AmiConnection
from ivr.events import EventBus
from ivr.prompts import prompt_duration
from ivr.timers import TimerService
from ivr.transfer.service import TransferService
from ivr.transfer.settings import TransferSettings
from ivr.transfer.targets import announcement
from tests import REPO
from tests.integration.amitools import AmiRecorder, ts

pytestmark = pytest.mark.integration

LANG = "zh-CN"
SOUNDS = f"ivr/{LANG}"
CALLER_NUMBER = "6001"
BUILD = REPO / "prompts" / "build"
_n = itertools.count(1)


def dur(prompt: str) -> float:
    return prompt_duration(BUILD, LANG, prompt)


ANNOUNCE_S = sum(dur(p) for p in announcement(CALLER_NUMBER, "1001"))


@dataclass
class Ctl:
    service: TransferService
    conn: AmiConnection
    bus: EventBus


@pytest.fixture
async def ctl(switch) -> AsyncIterator[Ctl]:
    assert switch.embedded is not None
    conn = AmiConnection(switch.ami_host, switch.ami_port, "ivr", switch.embedded.secrets().controller)
    await conn.start()
    await conn.wait_connected(10)
    timers = TimerService()
    bus = EventBus()
    settings = TransferSettings(sounds=SOUNDS, ring_limit=4.0, confirm_timeout=3.0,
                                announce_max=30.0, remind_every=8,
                                agents={"1002": "Local/1002@test-xfer-agents"}, allow_dial=True)
    # The first agent of each scenario (Local/1001@test-xfer-PID-N-agent) is a known agent
    # leg; in the controller the ring monitor knows it (it dialled it).
    service = TransferService(conn, settings, timers=timers, bus=bus, agent_leg=lambda _uid, channel: bool(
        re.fullmatch(r"Local/1001@test-xfer-\d+-\d+-agent-[0-9a-f]{8};1", channel)))
    service.attach()
    agi = FastAgiServer({TransferService.AGI_ROUTE: service.target_agi}, "127.0.0.1", switch.agi_port,
                        key=switch.agi_key)
    await agi.start()
    try:
        yield Ctl(service, conn, bus)
    finally:
        await agi.close(1.0)
        await service.close()
        await timers.close()
        await conn.close()


@dataclass
class Call:
    ctx: str
    caller: str  # Uniqueid of the caller's ;1 half (the call id)
    agent: str  # Uniqueid of the first agent's channel
    target: str  # dial string of the target


async def make_call(ami: AmiRecorder, target_steps: list[str],
                    agent_steps: tuple[str, ...] = ("Answer()", "Wait(120)")) -> Call:
    """A caller bridged with agent 1001; the target's behaviour is ``target_steps``."""
    n = next(_n)
    ctx = f"test-xfer-{os.getpid()}-{n}"
    await ami.add_dialplan(f"{ctx}-caller", "c", ["Answer()", "Wait(120)", "Hangup()"])
    # the agent leg gets the agent keys from the shipped pre-dial handler, as in the hunt
    await ami.add_dialplan(f"{ctx}-dial", "s", [f"Dial(Local/1001@{ctx}-agent,,b(ivr-agent-keys^s^1))",
                                                "Hangup()"])
    await ami.add_dialplan(f"{ctx}-agent", "1001", [*agent_steps, "Hangup()"])
    await ami.add_dialplan(f"{ctx}-target", "t", [*target_steps, "Hangup()"])
    caller = f"{ctx}-caller"
    since = len(ami.events)
    reply = await ami.action({
        "Action": "Originate", "Channel": f"Local/c@{ctx}-caller", "Context": f"{ctx}-dial",
        "Exten": "s", "Priority": "1", "Async": "true", "ChannelId": caller,
        "OtherChannelId": f"{caller}-2", "CallerID": f'"Caller" <{CALLER_NUMBER}>',
    }, as_list=False)
    assert reply.success, reply
    enters = await ami.wait_for(lambda e: e.event == "BridgeEnter" and ctx in e.get("Channel", ""),
                                timeout=10, since=since, count=2)
    agent = next(e["Uniqueid"] for e in enters if e["Uniqueid"] != caller)
    return Call(ctx, caller, agent, f"Local/t@{ctx}-target")


async def cleanup(ami: AmiRecorder, call: Call) -> None:
    for ch in await ami.channels():
        if call.ctx in ch["Channel"] or ch["Uniqueid"].startswith(call.caller):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


def xfer_states(ami: AmiRecorder, call: Call) -> list[str]:
    return [e["State"] for e in ami.find(
        lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
        and e.get("Uniqueid") == call.caller)]


async def wait_state(ami: AmiRecorder, call: Call, state: str, timeout: float) -> Message:
    (event,) = await ami.wait_for(
        lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
        and e.get("Uniqueid") == call.caller and e.get("State") == state, timeout=timeout)
    return event


def playbacks(ami: AmiRecorder, uid: str, prompt: str) -> list[object]:
    return ami.find(lambda e: e.event == "Newexten" and e.get("Uniqueid") == uid
                    and e.get("Application") == "Playback" and e.get("AppData", "").endswith(prompt))


async def bridged_with(ami: AmiRecorder, uid: str) -> set[str]:
    """Uniqueids of the channels in ``uid``'s bridge, from Asterisk's own channel list."""
    rows = await ami.channels()
    mine = next((r for r in rows if r["Uniqueid"] == uid), None)
    assert mine is not None, f"{uid} is not on the switch (dropped?)"
    bridge = mine.get("BridgeId", "")
    return {r["Uniqueid"] for r in rows if bridge and r.get("BridgeId") == bridge} - {uid}


def state_event(ami: AmiRecorder, call: Call, state: str) -> object:
    (event,) = list(ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
                                     and e.get("Uniqueid") == call.caller and e.get("State") == state))
    return event


def next_exten(ami: AmiRecorder, uid: str, after: object) -> object:
    """The dialplan step ``uid`` ran right after ``after`` (a Newexten event)."""
    steps = ami.find(lambda e: e.event == "Newexten" and e.get("Uniqueid") == uid)
    return steps[steps.index(after) + 1]


async def test_confirmed_transfer_connects_caller_and_target(ami: AmiRecorder, ctl: Ctl) -> None:
    """The target rings 2 s, answers, hears the whole announcement and presses 1."""
    call = await make_call(ami, ["Ringing()", "Wait(2)", "Answer()", f"Wait({ANNOUNCE_S + 0.5:.1f})",
                                 "SendDTMF(1)", "Wait(60)"])
    # The agent hangs up while the target rings: the caller still reaches the target.
    blond = await make_call(ami, ["Ringing()", "Wait(3)", "Answer()", "Wait(1)", "SendDTMF(1)",
                                  "Wait(60)"])
    try:
        since = len(ami.events)
        xfer, xfer_b = await asyncio.gather(ctl.service.transfer(call.caller, call.target),
                                            ctl.service.transfer(blond.caller, blond.target))
        await wait_state(ami, blond, "ringing", 5)
        await ami.action({"Action": "Hangup", "Channel": blond.agent})
        for c, x in ((call, xfer), (blond, xfer_b)):
            await wait_state(ami, c, "completed", 25)
            (enter,) = await ami.wait_for(lambda e, c=c: e.event == "BridgeEnter"
                                          and e.get("Uniqueid") == c.caller, timeout=10, since=since)
            (gone,) = await ami.wait_for(lambda e, c=c: e.event == "Hangup"
                                         and e.get("Uniqueid") == c.agent, timeout=5, since=since)
            assert await bridged_with(ami, c.caller) == {x.target_uid}
            assert xfer_states(ami, c) == ["offered", "ringing", "answered", "confirmed", "completed"]
            # the caller heard the reason, then the whole thank-you before the bridge
            (reason,) = playbacks(ami, c.caller, "transfer_reason")
            (thanks,) = playbacks(ami, c.caller, "transfer_thanks")
            assert ts(reason) < ts(thanks)
            assert ts(next_exten(ami, c.caller, thanks)) - ts(thanks) >= dur("transfer_thanks") - 0.3
            assert not playbacks(ami, c.caller, "transfer_apology")
            if c is call:  # the first agent was released only once the caller was with the target
                assert ts(gone) >= ts(enter)
        # the target's ringing is an ordinary dial leg (DialBegin, Newstate Ringing, DialEnd)
        (begin,) = ami.find(lambda e: e.event == "DialBegin" and e.get("DestUniqueid") == xfer.target_uid)
        (end,) = ami.find(lambda e: e.event == "DialEnd" and e.get("DestUniqueid") == xfer.target_uid)
        assert end["DialStatus"] == "ANSWER"
        assert ts(end) - ts(begin) == pytest.approx(2.0, abs=0.5)
        # the confirmation came after the whole announcement
        assert ts(state_event(ami, call, "confirmed")) - ts(state_event(ami, call, "answered")) \
            == pytest.approx(ANNOUNCE_S + 0.5, abs=1.0)
        assert ctl.service.metrics.registry.get_sample_value(
            "ivr_transfers_total", {"outcome": "completed"}) == 2
    finally:
        await cleanup(ami, call)
        await cleanup(ami, blond)


# (target behaviour, failure state, reason, seconds from the transfer's start to the failure)
FAILURES = {
    "no-press": (["Answer()", "Wait(60)"], "timeout", None),
    "voicemail": (["Answer()", "Playback(ivr-test/caller_speech)", "Wait(60)"], "timeout", None),
    "press-2": (["Answer()", "Wait(1)", "SendDTMF(2)", "Wait(60)"], "refused", None),
    "never-answers": (["Ringing()", "Wait(60)"], "noanswer", 4.0),
    "busy": (["Busy(5)"], "busy", None),
    "hangs-up": (["Answer()", "Wait(2)", "Hangup()"], "hangup", None),
}


async def test_unconfirmed_transfers_return_the_caller_to_the_agent(ami: AmiRecorder, ctl: Ctl) -> None:
    calls = {name: await make_call(ami, steps) for name, (steps, _, _) in FAILURES.items()}
    try:
        since = len(ami.events)
        xfers = await asyncio.gather(*(ctl.service.transfer(c.caller, c.target) for c in calls.values()))
        for (name, call), xfer in zip(calls.items(), xfers, strict=True):
            _, failed, after = FAILURES[name]
            await wait_state(ami, call, "returned", 25)
            (enter,) = await ami.wait_for(lambda e, c=call: e.event == "BridgeEnter"
                                          and e.get("Uniqueid") == c.caller, timeout=10, since=since)
            assert await bridged_with(ami, call.caller) == {call.agent}, name
            states = xfer_states(ami, call)
            assert states[0] == "offered" and states[-2:] == [failed, "returned"], (name, states)
            (apology,) = playbacks(ami, call.caller, "transfer_apology")
            assert ts(enter) - ts(apology) >= dur("transfer_apology") - 0.3, name
            assert not playbacks(ami, call.caller, "transfer_thanks"), name
            assert not list(ami.find(lambda e, c=call: e.event == "Hangup" and e.get("Uniqueid") == c.caller))
            assert not any(ch["Uniqueid"] == xfer.target_uid for ch in await ami.channels()), name
            if after is not None:
                took = ts(state_event(ami, call, failed)) - ts(state_event(ami, call, "offered"))
                assert took == pytest.approx(after, abs=0.5), name
        # the waiting caller hears the reason, music, and a reminder at the remind_every (8 s
        # here) mark from the start of the wait (the dialplan's EPOCH has whole seconds: +-1 s)
        call = calls["no-press"]
        (reason,) = playbacks(ami, call.caller, "transfer_reason")
        reminders = [ts(e) - ts(reason) for e in playbacks(ami, call.caller, "hold_reminder")]
        assert reminders and reminders[0] == pytest.approx(8.0, abs=1.1), reminders
        assert ami.find(lambda e: e.event == "MusicOnHoldStart" and e.get("Uniqueid") == call.caller)
        # no confirmation: the confirmation window is confirm_timeout after the announcement
        for name in ("no-press", "voicemail"):
            call = calls[name]
            took = ts(state_event(ami, call, "timeout")) - ts(state_event(ami, call, "answered"))
            assert took == pytest.approx(ANNOUNCE_S + 3.0, abs=1.0), name
        outcomes = {o: ctl.service.metrics.registry.get_sample_value("ivr_transfers_total", {"outcome": o})
                    for o in ("timeout", "refused", "noanswer", "busy", "hangup")}
        assert outcomes == {"timeout": 2, "refused": 1, "noanswer": 1, "busy": 1, "hangup": 1}
    finally:
        for call in calls.values():
            await cleanup(ami, call)


async def test_agent_gone_and_no_answer_sends_the_caller_to_the_queue(ami: AmiRecorder, ctl: Ctl) -> None:
    call = await make_call(ami, ["Ringing()", "Wait(60)"])
    try:
        since = len(ami.events)
        await ctl.service.transfer(call.caller, call.target)
        await wait_state(ami, call, "ringing", 5)
        await ami.action({"Action": "Hangup", "Channel": call.agent})
        await wait_state(ami, call, "returned", 10)
        await ami.wait_for(lambda e: e.event == "QueueCallerJoin" and e.get("Uniqueid") == call.caller,
                           timeout=10, since=since)
        assert xfer_states(ami, call) == ["offered", "ringing", "noanswer", "returned"]
        assert playbacks(ami, call.caller, "transfer_apology")
        assert any(ch["Uniqueid"] == call.caller for ch in await ami.channels())
    finally:
        await cleanup(ami, call)


async def test_caller_hanging_up_ends_the_transfer(ami: AmiRecorder, ctl: Ctl) -> None:
    call = await make_call(ami, ["Ringing()", "Wait(60)"])
    try:
        since = len(ami.events)
        xfer = await ctl.service.transfer(call.caller, call.target)
        await wait_state(ami, call, "ringing", 5)
        await ami.action({"Action": "Hangup", "Channel": call.caller})
        await wait_state(ami, call, "abandoned", 5)
        for uid in (call.agent, xfer.target_uid):
            await ami.wait_for(lambda e, u=uid: e.event == "Hangup" and e.get("Uniqueid") == u,
                               timeout=5, since=since)
        assert ctl.service.transfers == {}
    finally:
        await cleanup(ami, call)


async def test_transfer_refused_for_unknown_call_and_bad_target(ami: AmiRecorder, ctl: Ctl) -> None:
    from ivr.errors import NoSuchCall
    from ivr.transfer.targets import InvalidTarget

    with pytest.raises(NoSuchCall):
        await ctl.service.transfer("no-such-call-id", "1002")
    with pytest.raises(InvalidTarget):
        await ctl.service.transfer("no-such-call-id", "PJSIP/x,evil")


async def test_agent_feature_code_starts_the_transfer(ami: AmiRecorder, ctl: Ctl) -> None:
    """The agent presses *2, keys 1002 and #: agent 1002 (configured) takes the call."""
    await ami.add_dialplan("test-xfer-agents", "1002", ["Answer()", "Wait(1)", "SendDTMF(1)", "Wait(60)"])
    call = await make_call(ami, [], agent_steps=("Answer()", "Wait(1)", "SendDTMF(*2)", "Wait(1)",
                                                 "SendDTMF(1002#)", "Wait(120)"))
    try:
        (request,) = await ami.wait_for(lambda e: e.event == "UserEvent"
                                        and e.get("UserEvent") == "IvrTransferRequest"
                                        and e.get("Uniqueid") == call.agent, timeout=10)
        assert request["Target"] == "1002"
        completed = await wait_state(ami, call, "completed", 25)
        assert completed["Target"] == "1002"
        await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == call.agent, timeout=10)
        (peer,) = await bridged_with(ami, call.caller)
        rows = {r["Uniqueid"]: r for r in await ami.channels()}
        assert "test-xfer-agents" in rows[peer]["Channel"]
    finally:
        await cleanup(ami, call)
        for ch in await ami.channels():
            if "test-xfer-agents" in ch["Channel"]:
                await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


async def test_controller_transfers_over_http(make_controller, ami: AmiRecorder) -> None:
    """The whole controller: POST /api/calls/{id}/transfer, metrics on /metrics."""
    import socket

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "transfer-test-token"
    controller = await make_controller(
        f'[http]\nport = {port}\ntoken = "{token}"\n\n[transfer]\nconfirm_timeout = 3.0\n\n'
        '[[agents]]\nnumber = "1002"\nname = "Two"\ndial = "Local/1002@test-xfer-agents"\n')
    await controller.ami.wait_connected(10)
    await ami.add_dialplan("test-xfer-agents", "1002", ["Answer()", "Wait(1)", "SendDTMF(1)", "Wait(60)"])
    call = await make_call(ami, [])
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(f"{base}/api/calls/{call.caller}/transfer", json={"target": "1002"}) as r:
                assert r.status == 202, await r.text()
                body = await r.json()
            assert body["target"] == "1002" and body["agent"] == "1001"
            async with http.post(f"{base}/api/calls/{call.caller}/transfer", json={"target": "1002"}) as r:
                assert r.status == 409 and (await r.json())["error_id"] == "call-not-transferable"
            async with http.post(f"{base}/api/calls/nosuchcall/transfer", json={"target": "1002"}) as r:
                assert r.status == 404 and (await r.json())["error_id"] == "no-such-call"
            async with http.post(f"{base}/api/calls/{call.caller}/transfer",
                                 json={"target": "Local/x@ivr-inbound"}) as r:
                assert r.status == 400 and (await r.json())["error_id"] == "invalid-transfer-target"
            await wait_state(ami, call, "completed", 25)
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'ivr_transfers_total{outcome="completed"} 1.0' in text
            assert "ivr_transfer_confirm_seconds_count 1.0" in text
    finally:
        await cleanup(ami, call)
        for ch in await ami.channels():
            if "test-xfer-agents" in ch["Channel"]:
                await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
