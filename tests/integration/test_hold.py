"""R4 hold against the real switch: reminders every 30 s, choices at 60 s, thanks on resume.

The controller side is the real :class:`~ivr.hold.HoldService` on the controller's AMI
user (least privilege) and FastAGI port. Calls are deterministic Local channels: the
caller ``Local/cN@test-hold-caller`` (its ;1 half is the inbound call, which Dials the
agent), agents are Local channels or a SIPp phone that holds by re-INVITE. Every timing
is taken from Asterisk's own AMI event timestamps. The scenarios run concurrently in one
test (the long one lasts 95 s). The rig (the service on the switch, its events, call
records of its own, the Local-channel calls) is tests/integration/aside.py, shared with
the unclear line.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ivr.hold import HoldService, HoldSettings
from ivr.hold.http import hold_routes
from ivr.hold.metrics import HoldMetrics
from ivr.prompts import prompt_duration
from ivr.timers import TimerService
from tests import REPO
from tests.integration import aside
from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.aside import Call, hang_up, prompt_runs, redirect, run_scenarios, service_rig

INTERVAL, CHOICES = 30.0, 60.0
TOLERANCE = 0.5
LANG = "en-US"
SIPP_SCENARIO = Path(__file__).parent / "sipp" / "hold_agent.xml"
BUILD = REPO / "prompts" / "build"


Rig = aside.Rig[HoldService]


@pytest.fixture
async def rig(switch, tmp_path: Path) -> AsyncIterator[Rig]:
    assert switch.embedded is not None, "these tests read recordings from the embedded switch"
    messages = switch.embedded.home / "messages" / tmp_path.name
    settings = HoldSettings(reminder_interval=INTERVAL, choices_after=CHOICES, language=LANG,
                            messages_dir=messages, switch_messages_dir=switch.embedded.path_inside(messages),
                            message_max_seconds=20,
                            # the agent that keys *8 (agent_feature_code): a known agent leg
                            agents={"Local/akey@test-hold-agent": "key agent"})
    timers, metrics = TimerService(), HoldMetrics()
    async with service_rig(switch, lambda conn, tracker, bus: HoldService(
            conn, tracker, timers, settings, bus=bus, metrics=metrics), metrics, records=tmp_path) as rig:
        yield rig
    await timers.close()
    assert len(timers) == 0, "hold timers left behind"


async def add_test_dialplan(ami: AmiRecorder) -> None:
    await ami.add_dialplan("test-hold-caller", "_c.", ["Answer()", "Wait(300)"])
    await ami.add_dialplan("test-hold-dial", "_d.", [
        # the agent leg gets the agent keys from the shipped pre-dial handler, as in the hunt
        "Dial(Local/a${EXTEN:1}@test-hold-agent/n,,b(ivr-agent-keys^s^1))", "Hangup()"])
    await ami.add_dialplan("test-hold-dial", "_p.", [
        "Dial(PJSIP/1001/sip:1001@127.0.0.1:${EXTEN:1})", "Hangup()"])
    await ami.add_dialplan("test-hold-agent", "_a.", ["Answer()", "Wait(300)"])
    await ami.add_dialplan("test-hold-key", "s", ["SendDTMF(*8,,120)", "Wait(300)"])
    await ami.add_dialplan("test-hold-press", "_X", ["SendDTMF(${EXTEN},,120)", "Wait(300)"])
    await ami.add_dialplan("test-hold-speak", "s", [
        "SendDTMF(2,,120)", "Playback(ivr-test/caller_speech)", "Wait(300)"])
    await ami.add_dialplan("test-hold-talk", "s", ["Playback(ivr-test/caller_speech)", "Wait(300)"])
    await ami.add_dialplan("test-hold-listen", "s", [
        "WaitForNoise(300,1,3)", "UserEvent(HoldListen,Phase: quiet,Status: ${WAITSTATUS})",
        "WaitForNoise(300,1,15)", "UserEvent(HoldListen,Phase: talk,Status: ${WAITSTATUS})", "Wait(300)"])


async def place_call(ami: AmiRecorder, tag: str, dial_exten: str, number: str) -> Call:
    return await aside.place_call(ami, f"c{tag}@test-hold-caller", "test-hold-dial", dial_exten, number)


def hold_events(ami: AmiRecorder, uid: str, state: str | None = None) -> list[Any]:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                    and e.get("Uniqueid") == uid and (state is None or e.get("State") == state))


async def wait_hold(ami: AmiRecorder, uid: str, state: str, timeout: float, count: int = 1) -> list[Any]:
    return await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                              and e.get("Uniqueid") == uid and e.get("State") == state,
                              timeout=timeout, count=count)


def streams(ami: AmiRecorder, channel: str, prompt: str) -> list[Any]:
    return [start for start, _length in prompt_runs(ami, channel, LANG, prompt)]


def played_fully(ami: AmiRecorder, start: Any, prompt: str) -> bool:
    """That STREAM FILE ran as long as the prompt lasts (AGIExecStart to AGIExecEnd):
    the caller heard all of it (STREAM FILE ends early only on a digit or a hang-up)."""
    [length] = [n for s, n in prompt_runs(ami, start["Channel"], LANG, prompt) if s is start]
    return abs(length - prompt_duration(BUILD, LANG, prompt)) < 0.3


# ---------------------------------------------------------------------------- scenarios
async def held_95s_then_resumed(ami: AmiRecorder, rig: Rig) -> None:
    """The announcement with the time limit first (R4), then music; reminders at 30, 60
    (the choices) and 90 s from the start, resume at 95 s, thanks before the agent is back,
    the same bridge, and conversation audio flows again."""
    call = await place_call(ami, "long", "dlong", "13800000001")
    await rig.service.hold(call.uid)
    [start] = await wait_hold(ami, call.uid, "start", 5)
    t0 = ts(start)
    [announce] = await wait_hold(ami, call.uid, "announce", 5)
    [music] = await ami.wait_for(lambda e: e.event == "MusicOnHoldStart" and e["Channel"] == call.caller,
                                 timeout=15)
    [a_stream] = streams(ami, call.caller, "hold_announce_1min")
    assert ts(start) <= ts(announce) <= ts(a_stream) < ts(music), "the announcement comes before the music"
    assert ts(a_stream) - t0 < 0.5, ts(a_stream) - t0
    assert played_fully(ami, a_stream, "hold_announce_1min")
    print(f"hold announcement at {ts(a_stream) - t0:.3f} s, music at {ts(music) - t0:.3f} s")
    await wait_hold(ami, call.uid, "reminder", 100, count=2)  # 30 and 90 s
    await asyncio.sleep(t0 + 95.0 - time.time())  # pacing: the scenario: the agent resumes at 95 s
    await rig.service.resume(call.uid)
    [resume] = await wait_hold(ami, call.uid, "resume", 5)
    [back] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Uniqueid"] == call.uid
                                and ts(e) > ts(resume), timeout=15)
    reminders = hold_events(ami, call.uid, "reminder")
    [choices] = hold_events(ami, call.uid, "choices")
    got = [round(ts(e) - t0, 3) for e in (reminders[0], choices, reminders[1])]
    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, (30, 60, 90), strict=True)), got
    print(f"hold offsets (s): reminder/choices/reminder {got}, resume {ts(resume) - t0:.3f}")
    assert [e["Count"] for e in (reminders[0], choices, reminders[1])] == ["1", "2", "3"]
    # the caller heard them: each STREAM FILE on the caller's channel, played to its end
    r_streams = streams(ami, call.caller, "hold_reminder")
    c_streams = streams(ami, call.caller, "hold_choices")
    assert len(r_streams) == 2 and len(c_streams) == 1
    for s, w in zip((r_streams[0], c_streams[0], r_streams[1]), (30, 60, 90), strict=True):
        assert abs(ts(s) - t0 - w) <= TOLERANCE, (s["Command"], ts(s) - t0)
    assert played_fully(ami, r_streams[0], "hold_reminder")
    assert played_fully(ami, c_streams[0], "hold_choices")
    assert abs(ts(resume) - t0 - 95) <= TOLERANCE
    [thanks] = streams(ami, call.caller, "hold_thanks")
    assert ts(resume) <= ts(thanks) < ts(back), "the thank-you comes before the agent is back"
    assert played_fully(ami, thanks, "hold_thanks")
    assert back["BridgeUniqueid"] == call.bridge, "the caller is back in the agent's own bridge"
    # the keeper leaves; caller and agent are alone again, and they hear each other
    await ami.wait_for(lambda e: e.event == "Hangup" and e["Channel"].startswith("Local/keep@ivr-hold-")
                       and e.get("Linkedid", "") != "" and ts(e) >= ts(back), timeout=5)
    since = len(ami.events)
    await redirect(ami, call.half2(call.caller), "test-hold-listen")
    [quiet] = await ami.wait_for(lambda e: e.get("UserEvent") == "HoldListen" and e.get("Phase") == "quiet",
                                 timeout=10, since=since)
    assert quiet["Status"] == "TIMEOUT", "no music or prompt is left on the caller's line"
    await redirect(ami, call.half2(call.agent), "test-hold-talk")
    [talk] = await ami.wait_for(lambda e: e.get("UserEvent") == "HoldListen" and e.get("Phase") == "talk",
                                timeout=20, since=since)
    assert talk["Status"] == "NOISE", "the agent's voice reaches the caller again"
    assert rig.kinds(call.uid) == ["hold.start", "hold.reminder", "hold.choices", "hold.reminder", "hold.resume"]
    # on record: offered the choices, chose none (no key), resumed
    [hold] = await until(lambda: _holds_ended(rig, call.uid), 10, "the hold on record")
    assert (hold["choices_offered"], hold["choice"], hold["outcome"], hold["reminders"]) == (1, None, "resumed", 2)
    await hang_up(ami, call.caller)


async def held_with_music(ami: AmiRecorder, rig: Rig, tag: str, number: str) -> tuple[Call, Any]:
    """A call put on hold through the API, once the caller hears the music."""
    call = await place_call(ami, tag, f"d{tag}", number)
    await rig.service.hold(call.uid)
    [start] = await wait_hold(ami, call.uid, "start", 5)
    await ami.wait_for(lambda e: e.event == "MusicOnHoldStart" and e["Channel"] == call.caller, timeout=5)
    return call, start


async def resumed_at_10s(ami: AmiRecorder, rig: Rig) -> None:
    """Resumed at 10 s: no reminder after it, no hold stage left on the caller (issue 17);
    held again 45 s later: a hold of its own (announced, counted from 0, reminded 30 s
    after its own start)."""
    call, start = await held_with_music(ami, rig, "ten", "13800000002")
    await asyncio.sleep(ts(start) + 10.0 - time.time())  # pacing: the scenario: the agent resumes at 10 s
    await rig.service.resume(call.uid)
    [resume] = await wait_hold(ami, call.uid, "resume", 5)
    assert abs(ts(resume) - ts(start) - 10) <= TOLERANCE
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Uniqueid"] == call.uid
                       and ts(e) > ts(resume), timeout=15)
    # the hold is over: its stage cleared by the route before the thanks, none on the channel
    stage = ami.find(lambda e: e.event == "AGIExecStart" and e.get("Channel") == call.caller
                     and e.get("Command", "").startswith("SET VARIABLE IVR_STAGE"))
    assert stage[-1]["Command"] == 'SET VARIABLE IVR_STAGE ""', [e["Command"] for e in stage]
    assert ts(stage[-1]) <= ts(streams(ami, call.caller, "hold_thanks")[0])
    assert await ivr_stage(ami, call.caller) == ""
    # stay connected past the 30-s mark: still no reminder
    await ami.expect_none(lambda e: e.get("UserEvent") == "IvrHold" and e.get("Uniqueid") == call.uid
                          and e.get("State") == "reminder", within=35)
    assert not streams(ami, call.caller, "hold_reminder")
    # held again later: a hold of its own, announced, counted from 0, its own stage
    await rig.service.hold(call.uid)
    [_, again] = await wait_hold(ami, call.uid, "start", 5, count=2)
    assert again["Count"] == "0"
    await ami.wait_for(lambda e: e.event == "MusicOnHoldStart" and e["Channel"] == call.caller
                       and ts(e) > ts(again), timeout=15)
    assert [e["Count"] for e in hold_events(ami, call.uid, "announce")] == ["0", "0"]
    at, count, choices, via, choice = (await ivr_stage(ami, call.caller)).split("@")[1:]
    assert abs(float(at) - ts(again)) < 1.0 and (count, choices, via, choice) == ("0", "0", "api", "")
    [reminder] = await wait_hold(ami, call.uid, "reminder", INTERVAL + 5)
    assert reminder["Count"] == "1" and abs(ts(reminder) - ts(again) - INTERVAL) <= TOLERANCE
    await rig.service.resume(call.uid)
    [_, resume] = await wait_hold(ami, call.uid, "resume", 5, count=2)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Uniqueid"] == call.uid
                       and ts(e) > ts(resume), timeout=15)
    assert await ivr_stage(ami, call.caller) == ""
    await hang_up(ami, call.caller)


async def ivr_stage(ami: AmiRecorder, channel: str) -> str:
    reply = await ami.action({"Action": "Getvar", "Channel": channel, "Variable": "IVR_STAGE"})
    assert reply.success, reply
    return str(reply.get("Value") or "")


async def caller_hangs_up_while_held(ami: AmiRecorder, rig: Rig) -> None:
    call, start = await held_with_music(ami, rig, "gone", "13800000003")
    await hang_up(ami, call.half2(call.caller))  # the caller's phone hangs up
    [abandon] = await wait_hold(ami, call.uid, "abandon", 5)
    assert ts(abandon) - ts(start) < 10
    assert ("hold", call.uid) not in rig.service.timers and call.uid not in rig.service.sessions
    # the agent's leg goes too (the keeper is hung up)
    await ami.wait_for(lambda e: e.event == "Hangup" and e["Uniqueid"] == call.agent_uid, timeout=5)
    await ami.expect_none(lambda e: e.get("UserEvent") == "IvrHold" and e.get("Uniqueid") == call.uid
                          and e.get("State") == "reminder", within=INTERVAL + 5)  # past the first reminder
    assert rig.kinds(call.uid) == ["hold.start", "hold.abandon"]


async def leaves_a_message(ami: AmiRecorder, rig: Rig, client: TestClient) -> None:
    call = await place_call(ami, "msg", "dmsg", "13800000004")
    reply = await client.post(f"/api/calls/{call.uid}/hold")
    assert reply.status == 200, await reply.text()
    await wait_hold(ami, call.uid, "choices", CHOICES + 5)
    await redirect(ami, call.half2(call.caller), "test-hold-speak")  # presses 2, then speaks
    [_saved] = await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Channel") == call.caller
                                 and "message_saved" in e.get("Command", ""), timeout=40)
    await ami.wait_for(lambda e: e.event == "Hangup" and e["Uniqueid"] == call.uid, timeout=15)
    await ami.wait_for(lambda e: e.event == "Hangup" and e["Uniqueid"] == call.agent_uid, timeout=5)
    # The call records are the message's one store (what GET /api/messages answers).
    assert rig.records is not None
    [msg] = await until(lambda: _messages_of(rig, call.uid), 10, "the message on record")
    assert msg["phone"] == "13800000004" and msg["for_agent"] and msg["recorded"] == 1
    assert msg["held_seconds"] >= CHOICES - TOLERANCE
    wav = Path(msg["recording"])
    assert wav.exists() and wav.stat().st_size > 8000, "at least half a second of the caller's words"
    assert wav.parent == rig.service.settings.messages_dir
    assert [p.suffix for p in wav.parent.iterdir()] == [".wav"], "no second copy beside the recording"
    assert "message.recorded" in rig.kinds(call.uid)
    assert rig.metrics.value("ivr_hold_choices_total", {"choice": "message"}) == 1
    # the caller's choice is on record: the hold, and the event the records derived it from
    [hold] = await until(lambda: _holds_ended(rig, call.uid), 10, "the hold on record")
    assert (hold["choices_offered"], hold["choice"], hold["outcome"]) == (1, "message", "message")
    [chose] = [e for e in rig.events if e.call_id == call.uid and e.kind == "hold.choice"]
    assert chose.data["choice"] == "message" and chose.data["held_seconds"] >= CHOICES - TOLERANCE


async def phone_holds_by_reinvite(ami: AmiRecorder, rig: Rig, hold_for: float) -> None:
    """A SIPp agent phone answers, holds (re-INVITE a=sendonly) and resumes (sendrecv)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP_SCENARIO), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
        "-m", "1", "-nostdin", "-timeout", "200s", "-timeout_error",
        "-set", "hold_ms", "1000", "-set", "unhold_ms", str(int(hold_for * 1000)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        call = await place_call(ami, "sip", f"p{port}", "13800000005")
        assert call.agent.startswith("PJSIP/1001-")
        [hold] = await ami.wait_for(lambda e: e.event == "Hold" and e["Uniqueid"] == call.agent_uid, timeout=10)
        [start] = await wait_hold(ami, call.uid, "start", 5)
        # the phone's Hold -> the controller's start: one AMI round trip (a few ms idle), which a
        # busy loop stretches; the hold's timings are held to the issue's +-0.5 s from the Hold
        assert 0 <= ts(start) - ts(hold) <= TOLERANCE, ts(start) - ts(hold)
        [unhold] = await ami.wait_for(lambda e: e.event == "Unhold" and e["Uniqueid"] == call.agent_uid,
                                      timeout=hold_for + 10)
        [resume] = await wait_hold(ami, call.uid, "resume", 5)
        [back] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Uniqueid"] == call.uid
                                    and ts(e) > ts(resume), timeout=15)
        [thanks] = streams(ami, call.caller, "hold_thanks")
        assert ts(unhold) <= ts(resume) <= ts(thanks) < ts(back)
        reminders = hold_events(ami, call.uid, "reminder")
        assert [round(ts(e) - ts(hold)) for e in reminders] == [int(INTERVAL)]
        assert abs(ts(reminders[0]) - ts(hold) - INTERVAL) <= TOLERANCE
        assert back["BridgeUniqueid"] == call.bridge
        assert rig.events and [e.data["via"] for e in rig.events
                               if e.call_id == call.uid and e.kind == "hold.start"] == ["phone"]
        await hang_up(ami, call.caller)
        await asyncio.wait_for(sipp.wait(), 10)
        assert sipp.returncode == 0, (await sipp.stderr.read() if sipp.stderr else b"").decode()[-2000:]
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()


async def agent_feature_code(ami: AmiRecorder, rig: Rig) -> None:
    """The agent dials *8 (features.conf ivrhold) to hold, and *8 again to resume."""
    call = await place_call(ami, "key", "dkey", "13800000006")
    await redirect(ami, call.half2(call.agent), "test-hold-key")
    [_start] = await wait_hold(ami, call.uid, "start", 10)
    await ami.wait_for(lambda e: e.event == "MusicOnHoldStart" and e["Channel"] == call.caller, timeout=5)
    await redirect(ami, call.half2(call.agent), "test-hold-key")
    [resume] = await wait_hold(ami, call.uid, "resume", 10)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Uniqueid"] == call.uid
                       and ts(e) > ts(resume), timeout=15)
    assert [e.data["via"] for e in rig.events if e.call_id == call.uid and e.kind == "hold.start"] == ["feature"]
    await hang_up(ami, call.caller)


async def _holds_ended(rig: Rig, call_id: str) -> list[Any]:
    """The call's holds on record, once every one has ended (empty until then)."""
    assert rig.records is not None
    call = await rig.records.call(call_id)
    holds = call["holds"] if call is not None else []
    return holds if holds and all(h["outcome"] is not None for h in holds) else []


async def _messages_of(rig: Rig, call_id: str) -> list[Any]:
    assert rig.records is not None
    return [m for m in await rig.records.messages() if m["call_id"] == call_id]


# ---------------------------------------------------------------------------- the tests
async def test_hold_scenarios(ami: AmiRecorder, rig: Rig) -> None:
    await add_test_dialplan(ami)
    await run_scenarios(ami, hold_routes(rig.service), {
        "95s": lambda _http: held_95s_then_resumed(ami, rig),
        "10s": lambda _http: resumed_at_10s(ami, rig),
        "abandon": lambda _http: caller_hangs_up_while_held(ami, rig),
        "message": lambda http: leaves_a_message(ami, rig, http),
        "phone": lambda _http: phone_holds_by_reinvite(ami, rig, hold_for=INTERVAL + 3),
        "feature": lambda _http: agent_feature_code(ami, rig),
    })
    # 30 and 90 s (the long hold), 30 s (the message caller), 30 s (the phone hold), 30 s
    # (the 10-s caller's second hold)
    assert rig.metrics.value("ivr_hold_reminders_total") == 2 + 1 + 1 + 1
    assert rig.metrics.value("ivr_hold_abandons_total") == 1
    assert rig.metrics.value("ivr_hold_duration_seconds_count", {"outcome": "resume"}) == 5
    assert not rig.service.sessions

