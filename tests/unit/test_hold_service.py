"""HoldService logic with a fake AMI connection, a fake FastAGI channel and a fake clock:
the wake-up digit, reminders, choices, messages, call-backs, resume and abandon, in ms."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from ivr.ami.channels import ChannelTracker
from ivr.events import EventBus
from ivr.hold import HoldService, HoldSettings, NoSuchCall
from ivr.hold.metrics import HoldMetrics
from ivr.hold.service import HoldError, NotHeld
from ivr.records import CallStore
from ivr.timers import TimerService
from tests.fakes import HANGUP, AsideAmi, BusLog, Clock, FakeAgi, drain, idle, until

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
    events = BusLog(bus)
    yield ami, service, clock, timers, events, metrics
    events.close()
    await service.close()
    await timers.close()


async def start_held(ami: AsideAmi, service: HoldService) -> tuple[FakeAgi, asyncio.Task[None]]:
    await service.hold(CALLER)
    agi = FakeAgi(CALLER)
    ami.agi = agi
    task = asyncio.ensure_future(service.agi_hold(agi))
    await until(lambda: bool(agi.sent("WAIT FOR DIGIT")))
    return agi, task


def stage_cleared_before(agi: FakeAgi, prompt: str) -> bool:
    """The hold's stage was cleared (the hold is over) before ``prompt`` began, and not
    written again."""
    stage = [i for i, c in enumerate(agi.commands) if c.startswith("SET VARIABLE IVR_STAGE")]
    play = next(i for i, c in enumerate(agi.commands) if c.startswith("STREAM FILE") and f"/{prompt} " in c)
    return agi.commands[stage[-1]] == 'SET VARIABLE IVR_STAGE ""' and stage[-1] < play


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
    assert agi.played()[-1] == "hold_thanks" and agi.variables["IVR_RESULT"] == "resume"
    # the hold is over: no stage left for a node to go on from, cleared before the thanks
    assert agi.variables["IVR_STAGE"] == ""
    stages = [c for c in agi.commands if c.startswith(("SET VARIABLE IVR_STAGE", "STREAM FILE"))]
    # the stage names the trigger (api), and the caller's choice to wait on once made
    assert stages[-5:] == ['SET VARIABLE IVR_STAGE "hold@1700000000.000@2@1@api@"',
                           'STREAM FILE ivr/en-US/hold_choices "123D"',
                           'SET VARIABLE IVR_STAGE "hold@1700000000.000@2@1@api@keep"',
                           'SET VARIABLE IVR_STAGE ""', 'STREAM FILE ivr/en-US/hold_thanks "D"']
    assert [e.kind for e in events] == ["hold.start", "hold.reminder", "hold.choices", "hold.choice", "hold.resume"]
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
    assert agi.variables["IVR_RESULT"] == "done"
    assert stage_cleared_before(agi, "message_instructions")  # a death while it records: back to the agent
    [msg] = [e for e in events if e.kind == "message.recorded"]  # the message's one source
    d = msg.data
    assert (msg.call_id, d["caller_number"], d["agent"], d["held_seconds"]) == (CALLER, "13800000001", "Alice", 60.0)
    assert d["recorded"] is True and d["item"].endswith(CALLER)
    assert Path(d["file"]) == tmp_path / "messages" / f"{d['item']}.wav"
    assert [p.name for p in (tmp_path / "messages").iterdir()] == [f"{d['item']}.wav"], "no JSON beside it"
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")  # what the call records make of it
    try:
        assert await store.apply(msg)
        [row] = await store.messages()
        assert (row["message_id"], row["call_id"], row["phone"], row["for_agent"]) == (
            d["item"], CALLER, "13800000001", "Alice")
        assert (row["recording"], row["recorded"], row["held_seconds"]) == (d["file"], 1, 60.0)
    finally:
        await store.close()
    await until(lambda: "message" in ami.states())
    assert ami.sent("Hangup"), "the keeper goes: the agent's call ends, the agent was told"


async def test_callback(world: Any) -> None:
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("3")
    await until(lambda: "callback_when" in agi.played())
    agi.press("1")  # as soon as possible today
    await asyncio.wait_for(task, 2)
    assert agi.played()[-1] == "callback_confirm"
    assert stage_cleared_before(agi, "callback_when")
    [req] = [e for e in events if e.kind == "callback.requested"]  # the call-back's one source
    assert (req.data["caller_number"], req.data["best_time"], req.data["target"]) == ("13800000001", "today", "")
    assert req.data["not_before"] == 1.7e9
    assert not list(service.store.dir.rglob("*.json")), "no second copy under the messages directory"


async def choose_window(world: Any, *keys: str, after: str = "callback_when") -> tuple[FakeAgi, Any]:
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("3")
    for n, key in enumerate(keys, 1):
        await until(lambda n=n: agi.played().count(after) >= n)
        agi.press(key)
    await asyncio.wait_for(task, 2)
    [req] = [e for e in events if e.kind == "callback.requested"]
    return agi, req


async def test_callback_window_tomorrow_morning_is_stored_and_said_back(world: Any) -> None:
    """Key 3 of the windows (default "tomorrow 09:00-12:00"): the request carries the window
    and its opening; the caller hears it back. 1.7e9 is 06:13 on 15 Nov in Asia/Shanghai."""
    agi, req = await choose_window(world, "3")
    assert req.data["best_time"] == "09:00-12:00"
    assert req.data["not_before"] == datetime(2023, 11, 16, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    assert agi.played()[-7:] == ["callback_will", "callback_tomorrow", "callback_from", "hour_9", "callback_to",
                                 "hour_12", "callback_end"]


async def test_callback_window_menu_names_each_key(world: Any) -> None:
    agi, _ = await choose_window(world, "2", after="digit_3")  # the whole menu, then the key
    played = agi.played()
    menu = played[played.index("callback_when"):]
    assert menu[:1 + 3] == ["callback_when", "callback_asap", "callback_menu_press", "digit_1"]
    assert menu[4:11] == ["callback_today", "callback_from", "hour_14", "callback_to", "hour_20",
                          "callback_menu_press", "digit_2"]


async def test_callback_window_invalid_keys_twice_take_asap(world: Any) -> None:
    """A key not offered (after the menu) hears the menu again; a second one takes "as soon
    as possible". A key not offered during the menu is not heard (STREAM FILE escape keys)."""
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("3")
    await until(lambda: "callback_when" in agi.played())
    for n, key in enumerate(("9", "*"), 1):
        start = agi.commands.index(next(c for c in agi.commands if "callback_when" in c))
        await until(lambda n=n, start=start: sum(c.startswith("WAIT FOR DIGIT") for c in agi.commands[start:]) >= n)
        agi.press(key)
    await asyncio.wait_for(task, 2)
    [req] = [e for e in events if e.kind == "callback.requested"]
    assert agi.played().count("callback_when") == 2
    assert req.data["best_time"] == "today" and agi.played()[-1] == "callback_confirm"


async def test_callback_caller_hangs_up_in_the_menu_still_called_back(world: Any) -> None:
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("3")
    await until(lambda: "callback_when" in agi.played())
    agi.press("hangup")
    await asyncio.wait_for(task, 2)
    [req] = [e for e in events if e.kind == "callback.requested"]
    assert req.data["best_time"] == "today"


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
    await drain(service)
    assert not service.sessions
    ami.event({"Event": "Hold", "Uniqueid": AGENT})
    await until(lambda: CALLER in service.sessions)
    assert service.sessions[CALLER].via == "phone"
    ami.event({"Event": "Unhold", "Uniqueid": AGENT})
    assert service.sessions[CALLER].timer.state == "resumed"


async def test_hold_pressed_before_the_caller_is_bridged_starts_when_the_caller_joins(world: Any) -> None:
    """The agent's phone holds while the caller still hears the agent's number (the agent
    alone in its bridge): no hold yet, and R4 starts when the caller joins; an Unhold
    before that calls it off."""
    ami, service, *_ = world
    tracker = service.tracker
    tracker.handle({"Event": "BridgeLeave", "Uniqueid": CALLER, "Channel": "Local/c@x-00000001;1",
                    "BridgeUniqueid": "b1"})
    ami.event({"Event": "Hold", "Uniqueid": AGENT})
    await until(lambda: AGENT in service.pending)
    assert not service.sessions and not ami.sent("Originate")
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "Linkedid": CALLER, "Channel": "Local/c@x-00000001;1",
               "BridgeUniqueid": "b1", "Context": "ivr-agents"})
    await until(lambda: CALLER in service.sessions)
    assert service.sessions[CALLER].via == "phone" and not service.pending
    await until(lambda: bool(ami.sent("Redirect")))


async def test_hold_pressed_and_released_before_the_caller_is_bridged_holds_nothing(world: Any) -> None:
    ami, service, *_ = world
    service.tracker.handle({"Event": "BridgeLeave", "Uniqueid": CALLER, "Channel": "Local/c@x-00000001;1",
                            "BridgeUniqueid": "b1"})
    ami.event({"Event": "Hold", "Uniqueid": AGENT})
    await until(lambda: AGENT in service.pending)
    ami.event({"Event": "Unhold", "Uniqueid": AGENT})
    assert not service.pending
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "Linkedid": CALLER, "Channel": "Local/c@x-00000001;1",
               "BridgeUniqueid": "b1", "Context": "ivr-agents"})
    await drain(service)
    assert not service.sessions and not ami.sent("Originate")


async def test_agent_hangs_up_while_caller_held(world: Any) -> None:
    ami, service, _clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    ami.event({"Event": "Hangup", "Uniqueid": AGENT})
    await asyncio.wait_for(task, 2)
    # not "done": the dialplan sends the caller to the fallback queue (and no other node
    # is asked to go on with this hold)
    assert agi.variables["IVR_RESULT"] == "agent_left" and agi.variables["IVR_STAGE"] == ""
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
    assert (await client.get("/api/hold/messages")).status == 404  # messages: /api/messages (the records)


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
        await drain(service)
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


async def test_after_a_resume_no_hold_stage_is_left_and_the_next_hold_starts_afresh(world: Any) -> None:
    """Issue 17: the hold's stage (IVR_STAGE) is cleared when the hold ends, before the
    thanks; the same caller held again later gets a hold of its own: announced again,
    counted from 0, its first reminder 30 s after its own start, its own stage."""
    ami, service, clock, timers, *_ = world
    service.settings = dataclasses.replace(service.settings, announce=True)
    service.wall = lambda: 1.7e9 + clock.t - 1000.0
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 30.0)
    await until(lambda: agi.played() == ["hold_announce_1min", "hold_reminder"])
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)
    assert agi.variables["IVR_STAGE"] == ""
    assert agi.sent("SET VARIABLE IVR_STAGE")[-1] == 'SET VARIABLE IVR_STAGE ""'
    assert agi.commands.index('SET VARIABLE IVR_STAGE ""') < agi.commands.index(
        'STREAM FILE ivr/en-US/hold_thanks "D"')
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "BridgeUniqueid": "b1", "Channel": "Local/c@x-00000001;1",
               "Linkedid": CALLER})
    await until(lambda: ami.sent("Hangup") != [])  # the first hold's keeper
    first = len(ami.sent("UserEvent"))
    await advance(clock, timers, 100.0)
    await service.hold(CALLER)  # the same caller, held again 70 s after the resume
    again = FakeAgi(CALLER)
    again.variables.update(agi.variables)  # the same channel: what the first hold left on it
    ami.agi = again
    task = asyncio.ensure_future(service.agi_hold(again))
    await until(lambda: bool(again.sent("WAIT FOR DIGIT")))
    assert again.played() == ["hold_announce_1min"]  # its own announcement
    assert again.variables["IVR_STAGE"] == "hold@1700000100.000@0@0@api@"  # its own start, nothing played yet
    await advance(clock, timers, 129.9)
    assert again.played() == ["hold_announce_1min"]
    await advance(clock, timers, 130.0)
    await until(lambda: again.played() == ["hold_announce_1min", "hold_reminder"])
    events = ami.sent("UserEvent")[first:]
    assert [(e["State"], e["Count"]) for e in events] == [("start", "0"), ("announce", "0"), ("reminder", "1")]
    assert again.variables["IVR_STAGE"] == "hold@1700000100.000@1@0@api@"
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)
    assert again.variables["IVR_STAGE"] == ""


def test_announced_limit_follows_choices_after() -> None:
    assert HoldSettings(choices_after=60).announce_prompt == "hold_announce_1min"
    assert HoldSettings(choices_after=61).announce_prompt == "hold_announce_2min"
    assert HoldSettings(choices_after=300).announce_prompt == "hold_announce_5min"
    with pytest.raises(ValueError, match="announce"):
        HoldSettings(choices_after=301)
    assert HoldSettings(choices_after=301, announce=False).timer().announce is False


async def test_an_agi_session_for_no_held_caller_is_left_to_the_dialplan(world: Any) -> None:
    """The controller restarted while the caller was aside and the channel has no hold
    stage (issue 17): no session, IVR_RESULT unknown (the dialplan returns the caller to
    the agent), logged."""
    ami, service, *_ = world
    agi = FakeAgi("9999.1")
    with capture_logs() as logs:
        await asyncio.wait_for(service.agi_hold(agi), 2)
    assert agi.variables == {"IVR_RESULT": "unknown"} and ami.actions == []
    assert [e["uniqueid"] for e in logs if e["event"] == "hold.agi_unknown"] == ["9999.1"]


async def test_a_standby_leaves_the_hold_to_the_leader(world: Any) -> None:
    """Issue 17: a controller pair's standby sees the agent's hold (key or phone) too; it
    tries nothing (the leader acts) and logs no failure."""
    ami, service, *_ = world
    service.acting = lambda: False
    with capture_logs() as logs:
        ami.event({"Event": "UserEvent", "UserEvent": "IvrHoldKey", "Uniqueid": AGENT,
                   "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
        await drain(service)
    assert not service.sessions and ami.actions == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("hold.standby_skipped", "debug")]


# -- issue 17: another node goes on with a hold whose node died ------------------------
KEEPER = f"ivrkeep-{CALLER}-123"


async def taken_over(ami: AsideAmi, service: HoldService, stage: str) -> tuple[FakeAgi, asyncio.Task[None]]:
    """The held caller's AGI arrives at this node (its hold began on a node that died)."""
    service.tracker.handle({"Event": "BridgeEnter", "Uniqueid": KEEPER, "Linkedid": KEEPER,
                            "Channel": "Local/keep@ivr-hold-00000009;1", "BridgeUniqueid": "b1"})
    agi = FakeAgi(CALLER)
    agi.variables.update(IVR_STAGE=stage, IVR_HOLD_AGENT="PJSIP/1001-00000002")
    ami.agi = agi
    return agi, asyncio.ensure_future(service.agi_hold(agi))


async def test_a_hold_taken_over_goes_on_from_the_stage_reached(world: Any) -> None:
    """Held 40 s with one reminder on the dead node (held by the agent's key): here the
    choices come at 60 s (not sooner, not a reminder again), then the agent resumes:
    thanks, the keeper goes. The hold keeps its trigger."""
    ami, service, clock, timers, events, _ = world
    agi, task = await taken_over(ami, service, f"hold@{1.7e9 - 40:.3f}@1@0@feature@")
    await until(lambda: bool(agi.sent("WAIT FOR DIGIT")))
    assert agi.played() == [] and ami.states() == []
    assert service.sessions[CALLER].via == "feature" and service.sessions[CALLER].keeper == KEEPER
    [start] = [e for e in events if e.kind == "hold.start"]
    assert (start.data["via"], start.data["rebuilt"], start.at) == ("feature", True, 1.7e9 - 40)
    await advance(clock, timers, 19.9)
    await idle()  # the timers fired what was due: nothing to play yet
    assert agi.played() == []
    await advance(clock, timers, 20.0)
    await until(lambda: agi.played() == ["hold_choices"])
    assert ami.states() == ["choices"] and [a["Count"] for a in ami.sent("UserEvent")] == ["2"]
    assert agi.variables["IVR_STAGE"] == f"hold@{1.7e9 - 40:.3f}@2@1@feature@"
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)
    assert agi.played()[-1] == "hold_thanks" and agi.variables["IVR_RESULT"] == "resume"


async def test_a_reminder_due_during_the_takeover_is_played_at_once(world: Any) -> None:
    ami, service, *_ = world
    agi, task = await taken_over(ami, service, f"hold@{1.7e9 - 31:.3f}@0@0")
    await until(lambda: agi.played() == ["hold_reminder"])
    assert ami.states() == ["reminder"] and [a["Count"] for a in ami.sent("UserEvent")] == ["1"]
    task.cancel()


@pytest.mark.parametrize("stage", [
    "hold@abc@1@0", "hold@1700000000.000@1", "hold@1700000000.000@x@0", "hold@1700000000.000@1@2",
    "hold@1600000000.000@1@0",  # days old: not this hold's
    "hold@1800000000.000@1@0",  # in the future
    "hold@" + "9" * 25 + "@1@0",
])
async def test_a_hostile_hold_stage_is_refused_and_the_caller_goes_back(world: Any, stage: str) -> None:
    ami, service, *_ = world
    with capture_logs() as logs:
        agi, task = await taken_over(ami, service, stage)
        await asyncio.wait_for(task, 2)
    assert agi.variables["IVR_RESULT"] == "unknown" and not service.sessions and ami.actions == []
    assert any(e["event"] == "hold.stage_refused" and "IVR_STAGE" in e["error"] for e in logs)


def test_a_resumed_hold_timer_believes_no_count_beyond_its_time() -> None:
    from ivr.rules.hold import HoldTimer

    timer = HoldTimer.resumed(30.0, 60.0, started=0.0, count=99, choices_offered=True, now=45.0)
    assert (timer.count, timer.choices_offered, timer.next_deadline) == (1, False, 60.0)


async def test_a_resume_keyed_while_no_node_led_is_honoured_at_takeover(world: Any) -> None:
    """This node was a standby when the agent keyed *8 to resume (the leader had just
    died): when the held caller's AGI arrives here, the hold ends with the thanks at once."""
    ami, service, *_ = world
    service.acting = lambda: False
    ami.event({"Event": "UserEvent", "UserEvent": "IvrHoldKey", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    await until(lambda: AGENT in service.standby_keys)
    service.acting = lambda: True
    agi, task = await taken_over(ami, service, f"hold@{1.7e9 - 40:.3f}@1@0")
    await asyncio.wait_for(task, 2)
    assert agi.played() == ["hold_thanks"] and agi.variables["IVR_RESULT"] == "resume"
    assert ami.states() == ["resume"]
