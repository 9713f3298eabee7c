"""HoldService logic with a fake AMI connection, a fake FastAGI channel and a fake clock:
the wake-up digit, reminders, choices, messages, call-backs, resume and abandon, in ms."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.ami.channels import ChannelTracker
from ivr.events import EventBus
from ivr.hold import HoldService, HoldSettings, NoSuchCall
from ivr.hold.metrics import HoldMetrics
from ivr.hold.service import HoldError, NotHeld
from ivr.timers import TimerService
from tests.fakes import HANGUP, AsideAmi, Clock, FakeAgi

CALLER, AGENT = "100.1", "100.3"
KEEPER = "Local/keep@ivr-hold-00000009;1"


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    ami, tracker, clock = AsideAmi(KEEPER), ChannelTracker(), Clock()
    timers, bus, metrics = TimerService(clock), EventBus(), HoldMetrics()
    # The announcement (on by default) is off here, so the other tests see the reminders
    # alone; test_announcement_first_then_reminders_from_the_start turns it on.
    settings = HoldSettings(language="en-US", messages_dir=tmp_path / "messages",
                            agents={"PJSIP/1001": "Alice"}, announce=False)
    service = HoldService(ami, tracker, timers, settings, bus=bus, metrics=metrics, wall=lambda: 1.7e9)
    tracker.attach(ami)
    service.attach()
    for uid, name in ((CALLER, "Local/c@x-00000001;1"), (AGENT, "PJSIP/1001-00000002")):
        tracker.handle({"Event": "BridgeEnter", "Uniqueid": uid, "Linkedid": CALLER, "Channel": name,
                        "BridgeUniqueid": "b1", "Context": "ivr-agents"})
    events: list[Any] = []

    async def collect() -> None:
        async for e in bus.subscribe():
            events.append(e)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(0)
    yield ami, service, clock, timers, events, metrics
    task.cancel()
    await service.close()
    await timers.close()


async def start_held(ami: AsideAmi, service: HoldService) -> tuple[FakeAgi, asyncio.Task[None]]:
    await service.hold(CALLER)
    agi = FakeAgi(CALLER)
    ami.agi = agi
    task = asyncio.ensure_future(service.agi_hold(agi))
    await until(lambda: bool(agi.sent("WAIT FOR DIGIT")))
    return agi, task


async def until(predicate: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def advance(clock: Clock, timers: TimerService, to: float) -> None:
    clock.t = 1000.0 + to
    await timers.settle()


async def test_hold_moves_the_caller_out_keeping_the_agent(world: Any) -> None:
    ami, service, *_ = world
    described = await service.hold(CALLER)
    assert described["agent"] == "Alice" and described["via"] == "api" and described["state"] == "held"
    [orig] = ami.sent("Originate")
    # the keeper joins the agent's bridge, found by channel name (BridgeAdd matches a prefix)
    assert orig["Application"] == "BridgeAdd" and orig["Data"] == "PJSIP/1001-00000002"
    [setvar] = ami.sent("Setvar")
    assert setvar["Variable"] == "IVR_HOLD_AGENT" and setvar["Value"] == "PJSIP/1001-00000002"
    [redirect] = ami.sent("Redirect")
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"]) == (
        "Local/c@x-00000001;1", "ivr-hold", "held")
    # order matters: the keeper is in the bridge before the caller leaves it
    names = [a["Action"] for a in ami.actions if a["Action"] != "UserEvent"]
    assert names == ["Originate", "Setvar", "Redirect"]
    with pytest.raises(HoldError):
        await service.hold(CALLER)


async def test_errors(world: Any) -> None:
    _, service, *_ = world
    with pytest.raises(NoSuchCall) as exc:
        await service.hold("nope")
    assert exc.value.error_id == "no-such-call" and exc.value.details == {"call_id": "nope"}
    with pytest.raises(NotHeld):
        await service.resume(CALLER)


async def test_reminders_choices_and_resume_timed_by_the_controller(world: Any) -> None:
    ami, service, clock, timers, events, metrics = world
    agi, task = await start_held(ami, service)
    assert agi.commands[0] == "SET MUSIC ON default"
    await advance(clock, timers, 29.9)
    assert agi.played() == []
    await advance(clock, timers, 30.0)
    await until(lambda: agi.played() == ["hold_reminder"])
    assert ami.sent("PlayDTMF")[0]["Digit"] == "D"
    await advance(clock, timers, 60.0)
    await until(lambda: agi.played() == ["hold_reminder", "hold_choices"])
    assert 'STREAM FILE ivr/en-US/hold_choices "123D"' in agi.commands
    await until(lambda: ami.states() == ["start", "reminder", "choices"])
    assert [a["Count"] for a in ami.sent("UserEvent")] == ["0", "1", "2"]
    agi.press("1")  # keep waiting
    await until(lambda: metrics.value("ivr_hold_choices_total", {"choice": "keep"}) == 1)
    await advance(clock, timers, 75.0)
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)
    assert agi.played()[-1] == "hold_thanks" and agi.variables == {"IVR_RESULT": "resume"}
    assert [e.kind for e in events] == ["hold.start", "hold.reminder", "hold.choices", "hold.resume"]
    assert metrics.value("ivr_hold_duration_seconds_count", {"outcome": "resume"}) == 1
    assert len(timers) == 0 and not service.sessions
    # after the caller's BridgeEnter into the agent's bridge, the keeper is hung up
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "BridgeUniqueid": "b1", "Channel": "x"})
    await until(lambda: ami.sent("Hangup") != [])
    assert ami.sent("Hangup")[0]["Channel"].startswith("ivrkeep-")  # by the Uniqueid it was given


async def test_resume_mid_reminder_interrupts_it(world: Any) -> None:
    ami, service, clock, timers, *_ = world
    agi, task = await start_held(ami, service)
    agi.on_play["hold_reminder"] = lambda: asyncio.ensure_future(service.resume(CALLER))
    await advance(clock, timers, 30.0)
    await asyncio.wait_for(task, 2)
    assert agi.played() == ["hold_reminder", "hold_thanks"]


async def test_message(world: Any, tmp_path: Path) -> None:
    ami, service, clock, timers, events, _metrics = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("2")
    await asyncio.wait_for(task, 2)
    assert agi.played()[-2:] == ["message_instructions", "message_saved"]
    assert agi.variables == {"IVR_RESULT": "done"}
    [msg] = service.messages()
    assert msg["caller"] == "13800000001" and msg["agent"] == "Alice" and msg["call_id"] == CALLER
    assert msg["recorded"] and Path(msg["file"]).parent == tmp_path / "messages"
    assert json.loads(Path(msg["file"]).with_suffix(".json").read_text())["id"] == msg["id"]
    assert "message.recorded" in [e.kind for e in events]
    await until(lambda: "message" in ami.states())
    assert ami.sent("Hangup"), "the keeper goes: the agent's call ends, the agent was told"


async def test_callback(world: Any) -> None:
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("3")
    await asyncio.wait_for(task, 2)
    assert agi.played()[-1] == "callback_confirm"
    [req] = [e for e in events if e.kind == "callback.requested"]  # the call-back's one source
    assert (req.data["caller_number"], req.data["best_time"], req.data["target"]) == ("13800000001", "today", "")
    assert not list(service.store.dir.rglob("*.json")), "no second copy under the messages directory"


async def test_caller_hangs_up(world: Any) -> None:
    ami, service, clock, timers, events, metrics = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 12.0)
    agi.press(HANGUP)
    await asyncio.wait_for(task, 2)
    ami.event({"Event": "Hangup", "Uniqueid": CALLER})  # the same, seen over AMI: once only
    assert len(timers) == 0 and not service.sessions
    assert [e.kind for e in events] == ["hold.start", "hold.abandon"]
    assert metrics.value("ivr_hold_abandons_total") == 1
    await until(lambda: ami.states() == ["start", "abandon"])
    await advance(clock, timers, 31.0)
    assert agi.played() == []


async def test_phone_hold_and_feature_code(world: Any) -> None:
    ami, service, *_ = world
    ami.event({"Event": "Hold", "Uniqueid": CALLER})  # the caller's own phone: not R4
    await asyncio.sleep(0)
    assert not service.sessions
    ami.event({"Event": "Hold", "Uniqueid": AGENT})
    await until(lambda: CALLER in service.sessions)
    assert service.sessions[CALLER].via == "phone"
    ami.event({"Event": "Unhold", "Uniqueid": AGENT})
    assert service.sessions[CALLER].timer.state == "resumed"


async def test_agent_hangs_up_while_caller_held(world: Any) -> None:
    ami, service, _clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    ami.event({"Event": "Hangup", "Uniqueid": AGENT})
    await asyncio.wait_for(task, 2)
    assert "IVR_RESULT" not in agi.variables  # the dialplan sends the caller to the fallback queue
    assert "hold.agent_left" in [e.kind for e in events] and len(timers) == 0


async def test_http_routes(world: Any, aiohttp_client: Any) -> None:
    from aiohttp import web

    from ivr.hold.http import HOLD_OPENAPI, hold_routes
    from ivr.http.app import undocumented
    from ivr.web.errors import error_middleware

    _ami, service, *_ = world
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(hold_routes(service))
    assert undocumented(app, {"paths": HOLD_OPENAPI}) == (set(), set())
    client = await aiohttp_client(app)
    reply = await client.post("/api/calls/nope/hold")
    assert reply.status == 404
    assert await reply.json() == {"error_id": "no-such-call", "message": "no call nope on the switch",
                                  "details": {"call_id": "nope"}}
    assert (await client.post(f"/api/calls/{CALLER}/resume")).status == 409  # not on hold
    reply = await client.post(f"/api/calls/{CALLER}/hold")
    assert reply.status == 200 and (await reply.json())["state"] == "held"
    assert [h["call_id"] for h in (await (await client.get("/api/hold")).json())["held"]] == [CALLER]
    assert (await (await client.get("/api/hold/messages")).json()) == {"messages": []}


async def test_hold_key_only_from_an_agent_leg(world: Any) -> None:
    """Issue 13: IvrHoldKey from the caller's channel, or from a channel that is not a
    known agent leg, is refused, logged and counted; the agent's key holds and resumes."""
    from structlog.testing import capture_logs

    ami, service, _clock, _timers, _events, metrics = world

    def key(uid: str, channel: str) -> dict[str, str]:
        return {"Event": "UserEvent", "UserEvent": "IvrHoldKey", "Uniqueid": uid,
                "Linkedid": CALLER, "Channel": channel}

    with capture_logs() as logs:
        ami.event(key(CALLER, "Local/c@x-00000001;1"))  # the caller keyed *8
        ami.event(key("100.7", "PJSIP/anonymous-00000007"))  # not an agent's device
        ami.event(key(AGENT, ""))  # no channel to check: unknown
        await asyncio.sleep(0)
    assert not service.sessions and ami.actions == []
    assert metrics.value("ivr_hold_keys_refused_total") == 3
    assert [e["event"] for e in logs] == ["hold.key_refused"] * 3
    ami.event(key(AGENT, "PJSIP/1001-00000002"))  # the agent's key (a configured device)
    await until(lambda: CALLER in service.sessions)
    assert service.sessions[CALLER].via == "feature"
    ami.event(key(AGENT, "PJSIP/1001-00000002"))  # again: resume
    assert service.sessions[CALLER].timer.state == "resumed"
    assert metrics.value("ivr_hold_keys_refused_total") == 3


async def test_hold_key_check_is_injectable(world: Any) -> None:
    """The controller passes the ring monitor's view of agent legs (a hunt's Local leg)."""
    ami, service, *_ = world
    asked: list[tuple[str, str]] = []

    def agent_leg(uid: str, ch: str) -> bool:
        asked.append((uid, ch))
        return uid == AGENT

    service.agent_leg = agent_leg
    ami.event({"Event": "UserEvent", "UserEvent": "IvrHoldKey", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "Local/1001@hunt-00000001;1"})
    await until(lambda: CALLER in service.sessions)
    assert asked == [(AGENT, "Local/1001@hunt-00000001;1")]


async def test_forged_hangup_of_the_held_caller_ends_nothing(world: Any, monkeypatch: Any) -> None:
    """Issue 13 (2d): a Hangup event for the held caller that the switch does not confirm
    (the caller is still there) neither ends the hold nor hangs up the keeper."""
    monkeypatch.setattr("ivr.ami.confirm.GONE_WAIT", 0.1)
    ami, service, _clock, _timers, events, _ = world
    _agi, task = await start_held(ami, service)
    ami.live.add(CALLER, "PJSIP/caller-00000001", CALLER)  # the switch still has the caller
    ami.live.add(AGENT, "PJSIP/1001-00000002", CALLER)
    with capture_logs() as logs:
        ami.event({"Event": "Hangup", "Uniqueid": CALLER}, forged=True)
        ami.event({"Event": "Hangup", "Uniqueid": AGENT}, forged=True)
        await until(lambda: len([e for e in logs if e["event"] == "hold.hangup_event_refused"]) == 2)
    assert service.sessions[CALLER].timer.state == "held" and not service.sessions[CALLER].agent_left
    assert ami.sent("Hangup") == [] and [e.kind for e in events] == ["hold.start"]
    task.cancel()


async def test_announcement_first_then_reminders_from_the_start(world: Any) -> None:
    """R4 time limit: "please hold, I will be back within one minute" before the music;
    the first reminder still comes 30 s after the start."""
    ami, service, clock, timers, events, _ = world
    service.settings = dataclasses.replace(service.settings, announce=True)
    agi, task = await start_held(ami, service)
    assert agi.commands[:2] == ['STREAM FILE ivr/en-US/hold_announce_1min "D"', "SET MUSIC ON default"]
    assert ami.states() == ["start", "announce"]
    await advance(clock, timers, 29.9)
    assert agi.played() == ["hold_announce_1min"]
    await advance(clock, timers, 30.0)
    await until(lambda: agi.played() == ["hold_announce_1min", "hold_reminder"])
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)
    assert [e.kind for e in events] == ["hold.start", "hold.reminder", "hold.resume"]


def test_announced_limit_follows_choices_after() -> None:
    assert HoldSettings(choices_after=60).announce_prompt == "hold_announce_1min"
    assert HoldSettings(choices_after=61).announce_prompt == "hold_announce_2min"
    assert HoldSettings(choices_after=300).announce_prompt == "hold_announce_5min"
    with pytest.raises(ValueError, match="announce"):
        HoldSettings(choices_after=301)
    assert HoldSettings(choices_after=301, announce=False).timer().announce is False
