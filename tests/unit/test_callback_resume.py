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

from ivr.ami.channels import ChannelTracker
from ivr.callbacks.model import CallbackQueueStore, CallbackSettings
from ivr.callbacks.service import CallbackService
from ivr.events import CallEvent
from ivr.records import CallStore
from ivr.rules.callback import CallbackPolicy, Hours
from tests.fakes import Clock, FakeAgi, RecordingAmi, until
from tests.unit.test_callback_service import settled

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
