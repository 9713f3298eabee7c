"""A call-back's agent announcement resumed across a controller's death (ivr/callbacks/agent.py,
ivr/callbacks/recovery.py): the session cut without a verdict is asked again by the dialplan
and the node that serves it then adopts the attempt on the spot, plays the announcement
again and takes the agent's key; never a second Originate, one outcome; a session it cannot
look up yet gets no verdict (asked again), an unknown or hostile one is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from ivr.agi.testing import environment, wire
from ivr.ami.channels import ChannelTracker
from ivr.callbacks.model import Attempt, CallbackQueueStore, CallbackSettings, to_callback
from ivr.callbacks.service import CallbackService
from ivr.events import CallEvent
from ivr.records import CallStore
from ivr.rules.callback import CallbackPolicy, Hours
from tests.fakes import Clock, FakeAgi, RecordingAmi, until
from tests.unit.test_callback_service import settled
from tests.unit.test_records_outage import _free_port

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
SETTINGS = CallbackSettings(
    enabled=True, policy=CallbackPolicy(max_attempts=2, backoff=(120.0,), agent_retry=30.0,
                                        hours=Hours(9 * 60, 18 * 60)),
    agents={"1002": "Local/1002@agents"}, tz="Asia/Shanghai", poll=60.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = await CallStore.open(f"sqlite:///{tmp_path / 'cb.db'}")
    yield s
    await s.close()


@contextlib.asynccontextmanager
async def node(store: Callable[[], CallbackQueueStore | None], name: str,
               acting: Callable[[], bool] = lambda: True) -> AsyncIterator[tuple[CallbackService, RecordingAmi]]:
    ami = RecordingAmi()
    service = CallbackService(ami, ChannelTracker(), SETTINGS, store=store, wall=Clock(NOON), acting=acting,
                              node=name)
    service.attach()
    try:
        yield service, ami
    finally:
        await service.close()


def session(uid: str, *, announced: bool = False, arg: str | None = None) -> FakeAgi:
    call = FakeAgi(uid, channel=f"Local/1002@agents-00000001;1 {uid}", args=(uid if arg is None else arg,),
                   prompt_s=0.005, wait_cap=0.2)
    if announced:  # a previous controller began the announcement on this channel
        call.variables["IVR_CB_ANNOUNCED"] = "1"
    return call


async def placed_by_a(store: CallStore) -> str:
    """Node a places a call-back, the agent answers and hears the announcement; a stops
    mid-announcement (its FastAGI session cancelled, its tasks too). Returns the leg's id."""
    await store.apply(CallEvent("callback.requested", "call-1", {
        "item": "cb-1", "caller_number": "13900000001", "best_time": "today", "target": "", "held_by": "1002"},
        at=NOON - 600))
    async with node(lambda: store.queue, "a") as (a, ami):
        [att] = await a.tick()
        await until(lambda: ami.sent("Originate"), what="the attempt's task sends its Originate")
        assert len(ami.sent("Originate")) == 1
        cut = session(att.uid)
        task = asyncio.ensure_future(a.agent_agi(cut))
        cut.on_play["digit_3"] = task.cancel  # mid-announcement: the controller stops
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "IVR_CB_RESULT" not in cut.variables, "no verdict: the dialplan asks again"
        assert cut.variables["IVR_CB_ANNOUNCED"] == "1"
    assert (await row_of(store, "cb-1"))["status"] == "dialling"
    return att.uid


async def row_of(store: CallStore, callback_id: str) -> dict[str, Any]:
    row = await store.queue.get(callback_id)
    assert row is not None, callback_id
    return row


def stages(ami: RecordingAmi) -> list[str]:
    return [a["Stage"] for a in ami.sent("UserEvent") if a["UserEvent"] == "IvrCallback"]


async def test_the_next_node_adopts_on_the_agents_session_replays_and_connects_once(store: CallStore) -> None:
    uid = await placed_by_a(store)
    async with node(lambda: store.queue, "b") as (b, ami):
        agent = session(uid, announced=True)
        agent.on_play["callback_announce_menu"] = lambda: agent.press("1")
        with capture_logs() as logs:
            await b.agent_agi(agent)
        assert [e.get("by") for e in logs if e["event"] == "callbacks.adopted"] == ["agent-session"]
        assert agent.played()[0] == "callback_announce" and agent.played()[-1] == "callback_announce_menu"
        assert agent.variables["IVR_CB_RESULT"] == "accepted"
        await b.tick()  # its look at the queue: the attempt is running here, not adopted again
        assert list(b.attempts) == [uid] and not ami.sent("Originate"), "never a second call"
        customer = session("9.9", arg=uid)
        customer.on_play["callback_press"] = lambda: customer.press("5")
        await b.customer_agi(customer)
        assert customer.variables["IVR_CB_LIVE"] == "yes"
        await settled(b)
        assert stages(ami)[:5] == ["agent-resumed", "agent-accepted", "customer-dialling", "customer-answered",
                                   "connected"]
    row = await row_of(store, "cb-1")
    assert (row["status"], row["outcome"]) == ("done", "connected")
    assert [h["outcome"] for h in row["history"]] == ["connected"], "one attempt, one outcome"


async def test_a_session_and_the_look_at_the_queue_at_once_adopt_once(store: CallStore) -> None:
    uid = await placed_by_a(store)
    async with node(lambda: store.queue, "b") as (b, ami):
        ami.fire("Newchannel", Uniqueid=uid, Channel="Local/1002@agents-00000001;1", Linkedid=uid)
        agent = session(uid, announced=True)
        agent.press("1")
        with capture_logs() as logs:
            await asyncio.gather(b.tick(), b.agent_agi(agent))
        assert len([e for e in logs if e["event"] == "callbacks.adopted"]) == 1
        assert list(b.attempts) == [uid] and agent.variables["IVR_CB_RESULT"] == "accepted"
        b.handle_event({"Event": "UserEvent", "UserEvent": "IvrCallbackDial", "CallbackId": uid,
                        "DialStatus": "BUSY"})
        await settled(b)
    assert [h["outcome"] for h in (await row_of(store, "cb-1"))["history"]] == ["busy"]


@pytest.mark.parametrize("why", ["no database yet", "a standby", "AMI not connected"])
async def test_a_session_that_cannot_be_looked_up_yet_gets_no_verdict(store: CallStore, why: str) -> None:
    """The dialplan asks again a second later (the database opening, the lease not yet
    taken, AMI logging in)."""
    uid = await placed_by_a(store)
    queue = (lambda: None) if why == "no database yet" else (lambda: store.queue)
    async with node(queue, "b", acting=lambda: why != "a standby") as (b, ami):
        ami.connected = why != "AMI not connected"
        agent = session(uid, announced=True)
        await b.agent_agi(agent)
        assert "IVR_CB_RESULT" not in agent.variables and not agent.played() and not b.attempts
        assert not ami.sent("UserEvent")
    assert (await row_of(store, "cb-1"))["status"] == "dialling"


@pytest.mark.parametrize(("arg", "uniqueid"), [
    ("{uid}\r\nAction: Originate", "{uid}\r\nAction: Originate"),  # hostile argument
    ("../../etc", "../../etc"),
    ("{uid}", "1700000000.5"),  # another channel's session naming this attempt
    ("ivrcb0123456789-77", "ivrcb0123456789-77"),  # well formed, no such attempt under way
])
async def test_unknown_or_hostile_attempts_are_refused(store: CallStore, arg: str, uniqueid: str) -> None:
    uid = await placed_by_a(store)
    async with node(lambda: store.queue, "b") as (b, ami):
        agent = session(uniqueid.format(uid=uid), arg=arg.format(uid=uid))
        await b.agent_agi(agent)
        assert agent.variables == {"IVR_CB_RESULT": "refused"} and not agent.played()
        assert not b.attempts and not ami.sent("UserEvent")
    assert (await row_of(store, "cb-1"))["status"] == "dialling"


async def test_an_attempt_already_decided_is_refused_when_asked_again(store: CallStore) -> None:
    """The agent declined on this node; a later session for that leg (its verdict lost) is
    refused, not announced again."""
    await store.apply(CallEvent("callback.requested", "call-2", {
        "item": "cb-2", "caller_number": "13900000002", "best_time": "today", "target": "", "held_by": "1002"},
        at=NOON - 600))
    async with node(lambda: store.queue, "a") as (a, _):
        [att] = await a.tick()
        first = session(att.uid)
        first.press("2")
        await a.agent_agi(first)
        again = session(att.uid, announced=True)
        await a.agent_agi(again)
        assert again.variables["IVR_CB_RESULT"] == "refused" and not again.played()
        await settled(a)


# -- a graceful stop hands the announcement back ---------------------------------------


async def announcing(store: CallStore, a: CallbackService, ami: RecordingAmi,
                     **agi: Any) -> tuple[Any, FakeAgi, asyncio.Task[None]]:
    """Node ``a`` places cb-3; the agent answers and its announcement is playing."""
    await store.apply(CallEvent("callback.requested", "call-3", {
        "item": "cb-3", "caller_number": "13900000003", "best_time": "today", "target": "", "held_by": "1002"},
        at=NOON - 600))
    [att] = await a.tick()
    await until(lambda: ami.sent("Originate"), what="the attempt's task sends its Originate")
    call = FakeAgi(att.uid, channel=f"Local/1002@agents-00000001;1 {att.uid}", args=(att.uid,), **agi)
    task = asyncio.ensure_future(a.agent_agi(call))
    await until(call.played, what="the announcement begins")
    return att, call, task


async def test_a_graceful_stop_hands_the_announcement_back_at_once(store: CallStore) -> None:
    """Prompts of 30 s each: without the hand-back the session would play on through any
    grace. Handed back, it ends at once without a verdict (the dialplan asks again), the
    attempt stays under way for the next controller, and a session asked meanwhile gets no
    verdict either."""
    async with node(lambda: store.queue, "a") as (a, ami):
        att, call, task = await announcing(store, a, ami, prompt_s=30.0)
        with capture_logs() as logs:
            assert a.hand_back() == 1
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert [e["uniqueid"] for e in logs if e["event"] == "callbacks.agent_handed_back"] == [att.uid]
        assert "IVR_CB_RESULT" not in call.variables and call.played() == ["callback_announce"]
        assert not att.done.done() and not a.announcing and not a.attempts, "no longer followed here"
        a.handle_event({"Event": "Hangup", "Uniqueid": att.uid})  # during the grace: not this one's outcome
        await store.apply(CallEvent("callback.requested", "call-5", {
            "item": "cb-5", "caller_number": "13900000005", "best_time": "today", "target": "",
            "held_by": "1002"}, at=NOON - 60))
        assert not att.done.done() and await a.tick() == [], "a stopping controller places nothing more"
        assert len(ami.sent("Originate")) == 1 and not a.attempts, "nor adopts what it handed back"
        again = FakeAgi(att.uid, channel=call.channel, args=(att.uid,))
        await a.agent_agi(again)
        assert "IVR_CB_RESULT" not in again.variables and not again.played()
    assert (await row_of(store, "cb-3"))["status"] == "dialling", "adopted by the next controller"


async def test_a_stop_while_the_agent_is_asked_for_the_key_hands_back_too(store: CallStore) -> None:
    async with node(lambda: store.queue, "a") as (a, ami):
        att, call, task = await announcing(store, a, ami, prompt_s=0.001, wait_cap=30.0)
        await until(lambda: call.sent("WAIT FOR DIGIT"), what="the announcement played, the key awaited")
        assert a.hand_back() == 1
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert "IVR_CB_RESULT" not in call.variables and not att.done.done()


async def test_an_agent_who_pressed_1_is_not_handed_back(store: CallStore) -> None:
    """The stop comes while the verdict is being set (the agent's 1 is in): nothing is
    cancelled, the verdict is ``accepted``, the customer is dialled by the dialplan."""
    async with node(lambda: store.queue, "a") as (a, ami):
        handed: list[int] = []
        att, call, task = await announcing(store, a, ami, prompt_s=0.001)
        call.press("1")
        plain = call.set_variable

        async def set_then_stop(name: str, value: str) -> None:
            if name == "IVR_CB_NUMBER":
                handed.append(a.hand_back())  # the controller begins to stop right now
            await plain(name, value)

        call.set_variable = set_then_stop  # type: ignore[method-assign]  # the stop at that very step
        await asyncio.wait_for(task, 5)
        assert handed == [0] and call.variables["IVR_CB_RESULT"] == "accepted" and att.accepted
        assert stages(ami)[-2:] == ["agent-accepted", "customer-dialling"]


async def test_the_controller_hands_back_before_the_fastagi_grace(tmp_path: Path) -> None:
    """The whole controller, its FastAGI socket and a fake switch: the agent's session is
    stuck in the announcement (the switch never answers); ``stop(grace=60)`` ends it at
    once (the socket closed without IVR_CB_RESULT), not after the grace."""
    from ivr.config import load_config
    from ivr.controller import Controller

    agi_port = _free_port()
    path = tmp_path / "ivr.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "ivr.db"}"\n\n[agi]\nport = {agi_port}\n\n'
                    f'[ami]\nport = {_free_port()}\n\n[http]\nport = {_free_port()}\n')
    key = "k" * 32
    ctl = Controller(load_config(path, env={"IVR_HTTP_TOKEN": "t" * 32, "IVR_AMI_SECRET": "x", "IVR_AGI_KEY": key}))
    await ctl.start()
    uid = "ivrcb0123456789-1"
    try:
        ctl.callbacks.attempts[uid] = Attempt(
            uid=uid, attempt_id="1", callback=to_callback({"callback_id": "cb-9", "phone": "13900000009",
                                                            "at": NOON, "status": "dialling"}),
            call_id="", agent="1002", device="Local/1002@agents", number="13900000009",
            done=asyncio.get_running_loop().create_future())
        reader, writer = await asyncio.open_connection("127.0.0.1", agi_port)
        writer.write(wire(environment("callback-agent", key, args=(uid,), port=agi_port, uniqueid=uid,
                                      channel="Local/1002@agents-00000001;1")))
        seen: list[str] = []
        while not seen or not seen[-1].startswith("GET VARIABLE IVR_CB_ANNOUNCED"):
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line, f"the session ended early: {seen}"
            seen.append(line.decode().rstrip("\n"))
            if seen[-1].startswith("GET FULL VARIABLE ivrsync-"):
                writer.write(f"200 result=1 ({seen[-1].split()[-1]})\n".encode())
        # the switch never answers: the session sits in the announcement
        await asyncio.wait_for(ctl.stop(grace=60), 10)
        rest = await asyncio.wait_for(reader.read(), 5)  # the socket closed by the controller
        assert b"IVR_CB_RESULT" not in rest and not any("IVR_CB_RESULT" in c for c in seen)
        writer.close()
    finally:
        await ctl.stop()


# -- the re-ask bound: settings, validation, the Originate ----------------------------------


def test_the_reask_bound_defaults_to_five_asks_a_second_apart_and_is_validated(tmp_path: Path) -> None:
    from ivr.config import load_config
    from ivr.errors import ConfigError
    from ivr.sections import Config

    cb = load_config(None, env={}).callbacks
    assert (cb.agent_reasks, cb.agent_reask_interval) == (4, 1.0)
    for ok in ("agent_reasks = 0\nagent_reask_interval = 0.2", "agent_reasks = 20\nagent_reask_interval = 10"):
        (tmp_path / "ok.toml").write_text(f"[callbacks]\n{ok}\n")
        load_config(tmp_path / "ok.toml", env={})
    (tmp_path / "bad.toml").write_text("[callbacks]\nagent_reasks = 21\nagent_reask_interval = 0.1\n")
    with pytest.raises(ConfigError) as bad:
        load_config(tmp_path / "bad.toml", env={})
    assert "callbacks.agent_reasks (line 2): must be between 0 and 20, got 21" in str(bad.value)
    assert "callbacks.agent_reask_interval (line 3): must be between 0.2 and 10, got 0.1" in str(bad.value)
    (tmp_path / "float.toml").write_text("[callbacks]\nagent_reasks = 2.5\n")
    with pytest.raises(ConfigError, match=r"callbacks\.agent_reasks"):
        load_config(tmp_path / "float.toml", env={})
    config = Config()
    settings = CallbackSettings.from_config(config.callbacks, config.switch, config.prompts, [])
    assert (settings.agent_reasks, settings.agent_reask_interval, settings.moh_class) == (4, 1.0, "default")
    (tmp_path / "moh.toml").write_text('[hold]\nmoh_class = "calm"\n')
    config = load_config(tmp_path / "moh.toml", env={})
    settings = CallbackSettings.from_config(config.callbacks, config.switch, config.prompts, [], config.hold)
    assert settings.moh_class == "calm" and ",IVR_CB_MOH=calm," in settings.agent_variables


@pytest.mark.parametrize(("reasks", "interval", "sounds", "moh", "variables"), [
    (4, 1.0, "ivr/zh-CN", "default", "IVR_CB_REASKS=4,IVR_CB_REASK_WAIT=1,IVR_CB_MOH=default,IVR_CB_SOUNDS=ivr/zh-CN"),
    (10, 0.25, "ivr/en-US", "quiet_2-b", "IVR_CB_REASKS=10,IVR_CB_REASK_WAIT=0.25,IVR_CB_MOH=quiet_2-b,"
     "IVR_CB_SOUNDS=ivr/en-US"),
    # a prefix or a class that would break the list, or no class: left out (the dialplan's defaults)
    (0, 2.5, "my,prompts/zh-CN", "a,IVR_CB_ID=x", "IVR_CB_REASKS=0,IVR_CB_REASK_WAIT=2.5"),
    (1, 1.0, "ivr/zh-CN", "", "IVR_CB_REASKS=1,IVR_CB_REASK_WAIT=1,IVR_CB_SOUNDS=ivr/zh-CN"),
    (1, 1.0, "ivr/zh-CN", "../x", "IVR_CB_REASKS=1,IVR_CB_REASK_WAIT=1,IVR_CB_SOUNDS=ivr/zh-CN"),
])
async def test_the_agents_originate_carries_the_bound(store: CallStore, reasks: int, interval: float, sounds: str,
                                                      moh: str, variables: str) -> None:
    """Per call, on the agent leg (no global state): an attempt adopted elsewhere keeps it.
    The agent's music while asked again is the [hold] moh_class, validated."""
    from dataclasses import replace

    await store.apply(CallEvent("callback.requested", "call-4", {
        "item": "cb-4", "caller_number": "13900000004", "best_time": "today", "target": "", "held_by": "1002"},
        at=NOON - 600))
    ami = RecordingAmi()
    settings = replace(SETTINGS, agent_reasks=reasks, agent_reask_interval=interval, sounds=sounds, moh_class=moh)
    service = CallbackService(ami, ChannelTracker(), settings, store=lambda: store.queue, wall=Clock(NOON))
    try:
        [att] = await service.tick()
        [orig] = await until(lambda: ami.sent("Originate"), what="the attempt's task sends its Originate")
        assert orig["Variable"] == f"IVR_CB_ID={att.uid},{variables}"
    finally:
        await service.close()
