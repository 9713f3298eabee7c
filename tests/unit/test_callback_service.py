"""The call-back service (ivr/callbacks/service.py) with a recording AMI, fake FastAGI
channels and the real store on SQLite: agent first, the customer only after the agent's 1,
outcomes into the store, hostile numbers never dialled, busy agents and closed hours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ivr.agi.channel import AgiError
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiNotConnected
from ivr.callbacks.model import CallbackSettings
from ivr.callbacks.service import CallbackService
from ivr.events import CallEvent
from ivr.records import CallStore
from ivr.rules.callback import CallbackPolicy, Hours
from tests.fakes import Clock, FakeAgi, RecordingAmi, until

TZ = ZoneInfo("Asia/Shanghai")
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=TZ).timestamp()


def fake_agi(uniqueid: str, arg: str) -> FakeAgi:
    """A call-back leg's FastAGI session: prompts play 5 ms, a wait lasts at most 0.2 s."""
    return FakeAgi(uniqueid, channel=f"Local/x-00000001;1 {uniqueid}", args=(arg,), prompt_s=0.005, wait_cap=0.2)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[
        tuple[CallbackService, RecordingAmi, CallStore, Clock, ChannelTracker]]:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'cb.db'}")
    ami, wall, tracker = RecordingAmi(), Clock(NOON), ChannelTracker()
    settings = CallbackSettings(
        enabled=True, policy=CallbackPolicy(max_attempts=2, backoff=(120.0,), agent_retry=30.0,
                                            hours=Hours(9 * 60, 18 * 60)),
        agents={"1001": "PJSIP/1001", "1002": "Local/1002@agents"}, names={"Two": "1002"}, tz="Asia/Shanghai",
        poll=60.0)
    service = CallbackService(ami, tracker, settings, store=lambda: store.queue, wall=wall)
    service.attach()
    yield service, ami, store, wall, tracker
    await service.close()
    await store.close()


async def ask(store: CallStore, number: str, item: str, at: float, held_by: str = "1002") -> None:
    await store.apply(CallEvent("callback.requested", f"call-{item}", {
        "item": item, "caller_number": number, "best_time": "today", "target": "", "held_by": held_by}, at=at))


async def originated(ami: RecordingAmi, n: int = 1) -> list[dict[str, Any]]:
    """The Originates sent, once the attempt's task has sent ``n`` (bounded)."""
    sent: list[dict[str, Any]] = await until(lambda: len(ami.sent("Originate")) >= n and ami.sent("Originate"),
                                             2, f"{n} Originate(s) from the attempt's task")
    return sent


async def settled(service: CallbackService) -> None:
    await until(lambda: not service.attempts, 2, "the attempt's task ends (its outcome written)")


async def test_agent_first_then_the_customer_then_connected(world: Any) -> None:
    service, ami, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    assert att.agent == "1002", "the agent who held the caller, being free"
    [orig] = await originated(ami)
    assert (orig["Channel"], orig["Context"], orig["ChannelId"]) == ("Local/1002@agents", "ivr-callback-agent", att.uid)
    assert orig["OtherChannelId"] == f"{att.uid}-2"
    assert all("\r" not in str(v) and "\n" not in str(v) for a in ami.actions for v in a.values())
    assert (await store.queue.get("cb-1"))["status"] == "dialling"

    agent = fake_agi(att.uid, att.uid)
    agent.press("1")
    await service.agent_agi(agent)
    assert agent.played()[0] == "callback_announce" and "callback_announce_menu" not in agent.played()[:1]
    assert agent.variables == {"IVR_CB_ANNOUNCED": "1", "IVR_CB_NUMBER": "13900000001", "IVR_CB_RING": "40",
                               "IVR_CB_RESULT": "accepted"}
    customer = fake_agi("9.9", att.uid)
    # during the greeting: not heard (STREAM FILE without escape digits)
    customer.on_play["agent_intro"] = lambda: customer.press("7")
    customer.on_play["callback_press"] = lambda: customer.press("5")
    await service.customer_agi(customer)
    assert customer.variables == {"IVR_CB_LIVE": "yes", "TALK_DETECT(set)": "300,512", "TALK_DETECT(remove)": ""}
    assert customer.played() == ["callback_greeting", "agent_intro", "digit_1", "digit_0", "digit_0", "digit_2",
                               "agent_service", "callback_press"], "heard whole before the key"
    await settled(service)
    row = await store.queue.get("cb-1")
    assert (row["status"], row["attempts"], row["outcome"]) == ("done", 1, "connected")
    stages = [a["Stage"] for a in ami.sent("UserEvent") if a["UserEvent"] == "IvrCallback"]
    assert stages == ["agent-ringing", "agent-answered", "agent-accepted", "customer-dialling",
                      "customer-answered", "connected", "connected"]
    assert [a.get("Live") for a in ami.sent("UserEvent") if a.get("Stage") == "connected"][:1] == ["key"]


def test_the_agent_who_held_by_number_name_or_device(world: Any) -> None:
    settings = world[0].settings
    assert [settings.agent_number(x) for x in ("1001", "Two", "Local/1002@agents", "PJSIP/1001", "Who")] == [
        "1001", "1002", "1002", "1001", "Who"]


async def test_the_agent_announcement_says_who_when_and_who_held(world: Any) -> None:
    service, _, store, _, _ = world
    await ask(store, "139", "cb-1", datetime(2026, 12, 1, 9, 5, tzinfo=TZ).timestamp(), held_by="Two")
    [att] = await service.tick()
    assert service.announcement(att) == [
        "callback_announce", "digit_1", "digit_3", "digit_9", "callback_announce_time", "digit_0", "digit_9",
        "digit_0", "digit_5", "callback_announce_agent", "digit_1", "digit_0", "digit_0", "digit_2",
        "callback_announce_menu"]
    service.handle_event({"Event": "Hangup", "Uniqueid": att.uid})
    await settled(service)


async def test_agent_declines_or_does_not_answer_keeps_the_customers_attempts(world: Any) -> None:
    service, _, store, wall, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    agent = fake_agi(att.uid, att.uid)
    agent.press("2")
    await service.agent_agi(agent)
    assert agent.variables["IVR_CB_RESULT"] == "declined", "a verdict: the dialplan does not ask again"
    await settled(service)
    row = await store.queue.get("cb-1")
    assert (row["status"], row["attempts"], row["next_attempt"]) == ("open", 0, NOON + 30)
    assert await service.tick() == [], "not before agent_retry"
    wall.t += 30
    [att] = await service.tick()
    service.handle_event({"Event": "Hangup", "Uniqueid": att.uid})  # rang out, never answered
    await settled(service)
    row = await store.queue.get("cb-1")
    assert (row["attempts"], row["outcome"]) == (0, "agent-no-answer")
    assert [(h["outcome"], h["burned"]) for h in row["history"]] == [("agent-declined", 0), ("agent-no-answer", 0)]


async def test_busy_and_no_answer_use_attempts_then_fail(world: Any) -> None:
    service, _, store, wall, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    for status, expected in (("BUSY", ("open", 1, "busy")), ("NOANSWER", ("failed", 2, "no-answer"))):
        [att] = await service.tick()
        att.accepted = True
        service.handle_event({"Event": "UserEvent", "UserEvent": "IvrCallbackDial", "CallbackId": att.uid,
                              "DialStatus": status})
        await settled(service)
        row = await store.queue.get("cb-1")
        assert (row["status"], row["attempts"], row["outcome"]) == expected
        if status == "BUSY":
            assert row["next_attempt"] == NOON + 120
            wall.t += 120


async def test_a_customer_who_neither_presses_nor_speaks_is_no_live_answer(world: Any) -> None:
    service, _, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    att.accepted = True
    customer = fake_agi("9.9", att.uid)
    await service.customer_agi(customer)
    assert customer.variables["IVR_CB_LIVE"] == "no"  # dropped by the dialplan (empty: connected unheard)
    await settled(service)
    row = await store.queue.get("cb-1")
    assert (row["outcome"], row["attempts"], row["status"]) == ("no-live-answer", 1, "open")


async def test_a_customer_connected_unheard_is_done_not_called_again(world: Any) -> None:
    """The customer's route fails before its verdict (AgiError): IVR_CB_LIVE stays empty,
    the dialplan connects the customer to the agent and sends IvrCallbackUnchecked. The
    call-back is done (connected, Live: unchecked), whoever hangs up first; the customer is
    never dialled again."""
    service, ami, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    att.accepted = att.agi = True
    customer = fake_agi("9.9", att.uid)

    def broken() -> None:
        raise AgiError("510 Invalid or unknown command")

    customer.on_play["agent_intro"] = broken
    await service.customer_agi(customer)
    assert "IVR_CB_LIVE" not in customer.variables, "no verdict: the dialplan connects them unheard"
    ami.event({"Event": "UserEvent", "UserEvent": "IvrCallbackUnchecked", "CallbackId": att.uid})
    ami.event({"Event": "Hangup", "Uniqueid": att.uid})  # the agent hangs up first, after the talk
    await settled(service)
    row = await store.queue.get("cb-1")
    assert (row["outcome"], row["status"], row["attempts"]) == ("connected", "done", 1)
    assert [a.get("Live") for a in ami.sent("UserEvent") if a.get("Stage") == "connected"][:1] == ["unchecked"]
    assert await service.tick() == [] and len(ami.sent("Originate")) == 1


async def test_a_number_on_record_that_may_not_be_dialled_never_reaches_the_dialplan(world: Any) -> None:
    """An adopted attempt takes its number from the row: the agent's 1 does not set a
    hostile one into IVR_CB_NUMBER (the Dial's options); the customer is not dialled."""
    service, _, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    att.number = "139,,U(evil)"
    agent = fake_agi(att.uid, att.uid)
    agent.press("1")
    await service.agent_agi(agent)
    assert "IVR_CB_NUMBER" not in agent.variables and agent.variables["IVR_CB_RESULT"] == "declined"
    assert not att.accepted


async def customer_speaks(world: Any, bursts: list[tuple[str, float]]) -> tuple[FakeAgi, Any]:
    """The customer's route with TALK_DETECT events fired at the given points: ``("start",
    s)`` / ``("stop:<ms>", s)`` seconds after the route armed the detector (real time, small)."""
    service, ami, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    att.accepted = True
    customer = FakeAgi("9.9", channel="Local/139@ivr-callback-number-00000001;1", args=(att.uid,),
                       prompt_s=0.45, wait_cap=3.0)

    def play_dtmf(action: dict[str, Any]) -> dict[str, str]:
        customer.press(action["Digit"])  # Receive: true, as if the customer pressed it
        return {"Response": "Success"}

    ami.replies["PlayDTMF"] = play_dtmf
    loop = asyncio.get_running_loop()

    def fire(kind: str) -> None:
        fields = {"Uniqueid": "9.9"}
        if kind.startswith("stop:"):
            fields["Duration"] = kind.split(":")[1]
        ami.fire("ChannelTalkingStart" if kind == "start" else "ChannelTalkingStop", **fields)

    def armed(call: FakeAgi, what: str) -> None:
        if not call.hooks[1:]:
            call.hooks.append(lambda *_: None)  # once
            for kind, at in bursts:
                loop.call_later(at, fire, kind)

    customer.hooks.append(armed)
    await service.customer_agi(customer)
    await settled(service)
    return customer, await store.queue.get("cb-1")


async def test_a_customer_who_says_hello_is_bridged_without_a_key(world: Any) -> None:
    """'hello?' (0.25 s) during the greeting, then quiet: a person. The greeting is heard whole,
    the "press a key" prompt is skipped, the leg is marked live."""
    customer, row = await customer_speaks(world, [("start", 0.02), ("stop:250", 0.35)])
    assert customer.variables["IVR_CB_LIVE"] == "yes"
    assert customer.played() == ["callback_greeting", "agent_intro", "digit_1", "digit_0", "digit_0", "digit_2",
                                 "agent_service"]
    assert (row["status"], row["outcome"]) == ("done", "connected")
    assert [a.get("Live") for a in world[1].sent("UserEvent") if a.get("Stage") == "connected"][:1] == ["speech"]


async def test_a_customer_who_says_hello_after_the_greeting_ends_the_wait(world: Any) -> None:
    """Quiet through the greeting (7 prompts of 0.45 s) and "press a key"; "hello?" in the
    wait for a key: the wait ends with the wake digit (PlayDTMF), connected."""
    customer, row = await customer_speaks(world, [("start", 4.0), ("stop:300", 4.4)])
    assert customer.variables["IVR_CB_LIVE"] == "yes"
    assert customer.played()[-1] == "callback_press" and customer.sent("WAIT FOR DIGIT")
    assert [a["Digit"] for a in world[1].sent("PlayDTMF")][:1] == ["D"], "woken by the wake digit"
    assert (row["status"], row["outcome"]) == ("done", "connected")


async def test_a_machine_talking_on_is_not_bridged(world: Any) -> None:
    """Speech running on past 2.5 s from the answer: a machine; the greeting stops at the next
    prompt, the leg is not marked live, the customer's attempt is used."""
    customer, row = await customer_speaks(world, [("start", 0.0), ("stop:5200", 5.5)])
    assert customer.variables["IVR_CB_LIVE"] == "no"  # dropped by the dialplan (empty: connected unheard)
    assert "callback_press" not in customer.played()
    assert (row["status"], row["attempts"], row["outcome"]) == ("open", 1, "machine")


async def test_hostile_numbers_are_never_dialled(world: Any) -> None:
    service, ami, store, _, _ = world
    for i, number in enumerate(("1390\r\nAction: Originate", "139@evil", "", "1", "13900000001&PJSIP/x")):
        await ask(store, number, f"cb-{i}", NOON - 600 + i)
    assert await service.tick() == []
    assert not ami.sent("Originate")
    assert {r["outcome"] for r in await store.callbacks()} == {"invalid-number"}


async def test_busy_agents_closed_hours_and_the_line(world: Any) -> None:
    service, ami, store, wall, tracker = world
    await ask(store, "13900000002", "cb-late", NOON - 100)
    await ask(store, "13900000001", "cb-first", NOON - 600, held_by="1009")
    tracker.handle({"Event": "Newchannel", "Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/1001-0000000a"})
    [att] = await service.tick()  # 1001 is on a call: only 1002 is free, for the first in line
    assert (att.callback.id, att.agent) == ("cb-first", "1002")
    assert await service.tick() == [], "nobody else is free"
    queue = await service.queue()
    assert [(r["callback_id"], r["place"], r["agent"]) for r in queue] == [
        ("cb-first", 1, "1002"), ("cb-late", 2, None)]
    service.handle_event({"Event": "Hangup", "Uniqueid": att.uid})
    await settled(service)
    wall.t = datetime(2026, 12, 1, 19, 0, tzinfo=TZ).timestamp()  # after hours
    assert await service.tick() == []
    assert len(ami.sent("Originate")) == 1
    await ask(store, "13900000003", "cb-window", NOON - 50)
    await store.apply(CallEvent("callback.requested", "call-w", {
        "item": "cb-w2", "caller_number": "13900000003", "best_time": "10:00-11:00", "target": ""}, at=NOON - 40))
    nxt = {r["callback_id"]: r["next_attempt_at"] for r in await service.queue()}
    assert nxt["cb-late"] is None, "a today call-back after hours: no opening left"
    assert nxt["cb-window"] == datetime(2026, 12, 2, 10, 0, tzinfo=TZ).timestamp(), "its window, tomorrow"
    wall.t = datetime(2026, 12, 2, 9, 30, tzinfo=TZ).timestamp()  # the next morning, before the window
    assert await service.tick() == []
    assert {r["callback_id"]: (r["status"], r["outcome"]) for r in await store.callbacks()
            if r["callback_id"] in ("cb-first", "cb-late")} == {
        "cb-first": ("expired", "expired"), "cb-late": ("expired", "expired")}
    assert [r["callback_id"] for r in await service.queue()] == ["cb-window"]


async def test_cancel_and_retry_now_through_the_service(world: Any) -> None:
    service, ami, store, _, _ = world
    await ask(store, "13900000001", "cb-1", NOON - 600)
    [att] = await service.tick()
    row = await service.cancel("cb-1")
    assert row["status"] == "cancelled"
    assert ami.sent("Hangup")[-1]["Channel"] == att.uid, "the agent still deciding is let go"
    service.handle_event({"Event": "Hangup", "Uniqueid": att.uid})
    await settled(service)
    assert (await store.queue.get("cb-1"))["status"] == "cancelled", "an attempt ending late does not reopen it"
    with pytest.raises(Exception, match="no call-back"):
        await service.cancel("cb-nope")


async def test_a_queue_target_rings_a_free_member_of_that_queue(world: Any) -> None:
    """Target queue:support: the switch's members (QueueStatus) are 1001 and 1002 paused;
    the caller was held by 1002. 1001 is rung, not the paused 1002. A queue the switch does
    not have rings nobody."""
    service, ami, store, _, _ = world

    def status(action: dict[str, Any]) -> list[dict[str, str]]:
        if action["Queue"] != "support":
            return [{"Response": "Success"}, {"Event": "QueueStatusComplete"}]
        return [{"Response": "Success"}, {"Event": "QueueParams", "Queue": "support"},
                {"Event": "QueueMember", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "0"},
                {"Event": "QueueMember", "Queue": "support", "Interface": "Local/1002@agents/n", "Paused": "1"},
                {"Event": "QueueMember", "Queue": "support", "Interface": "PJSIP/7777", "Paused": "0"},
                {"Event": "QueueStatusComplete"}]

    ami.replies["QueueStatus"] = status
    await store.apply(CallEvent("callback.requested", "call-q", {
        "item": "cb-q", "caller_number": "13900000009", "target": "queue:nosuch", "held_by": "1002"}, at=NOON - 60))
    assert await service.tick() == [], "no such queue: nobody rung"
    assert await service.queue_agents({"support"}) == {"support": ["1001"]}
    await store.apply(CallEvent("callback.requested", "call-s", {
        "item": "cb-s", "caller_number": "13900000010", "target": "queue:support", "held_by": "1002"}, at=NOON - 30))
    [att] = await service.tick()
    assert (att.callback.id, att.agent) == ("cb-s", "1001")
    await service.cancel("cb-s")


async def in_flight_elsewhere(store: CallStore, item: str, channel: str, number: str) -> None:
    """An attempt another controller (node "other") placed and left ``dialling``."""
    await ask(store, number, item, NOON - 300)
    assert await store.queue.start_attempt(item, "1002", NOON - 200, channel=channel, node="other")


async def test_an_attempt_still_on_the_switch_is_adopted_not_placed_again(world: Any) -> None:
    """Takeover: the attempt's agent leg is still on the switch (Status finds it): no second
    Originate; its events are followed here and its outcome written once."""
    service, ami, store, _, _ = world
    await in_flight_elsewhere(store, "cb-ring", "ivrcbother-1", "13900000011")
    ami.fire("Newchannel", Uniqueid="ivrcbother-1", Channel="Local/1002@agents-00000001;1", Linkedid="ivrcbother-1")
    assert await service.tick() == []
    assert not ami.sent("Originate"), "never a second call for an attempt still ringing"
    assert [a.adopted for a in service.attempts.values()] == [True]
    assert (await store.queue.get("cb-ring"))["status"] == "dialling"
    await service.tick()  # looked at again: still ours, still no call
    assert not ami.sent("Originate") and len(service.attempts) == 1
    # bridged and over: the dial's outcome comes as usual (the customer answered)
    ami.fire("UserEvent", UserEvent="IvrCallbackDial", CallbackId="ivrcbother-1", DialStatus="ANSWER")
    await settled(service)
    row = await store.queue.get("cb-ring")
    assert (row["status"], row["outcome"]) == ("done", "connected")
    assert [(h["agent"], h["outcome"]) for h in row["history"]] == [("1002", "connected")]


async def test_an_attempt_the_switch_no_longer_has_is_reopened_and_placed(world: Any) -> None:
    service, ami, store, _, _ = world
    await in_flight_elsewhere(store, "cb-gone", "ivrcbother-2", "13900000012")
    [att] = await service.tick()  # Status: no such channel -> interrupted, due again, placed
    assert att.callback.id == "cb-gone" and not att.adopted
    row = await store.queue.get("cb-gone")
    assert (row["history"][0]["outcome"], row["history"][0]["burned"]) == ("interrupted", 0)
    assert ami.sent("Status")[0]["Channel"] == "ivrcbother-2"
    await service.cancel("cb-gone")


async def test_a_switch_that_cannot_be_asked_resets_nothing(world: Any) -> None:
    service, ami, store, _, _ = world
    await in_flight_elsewhere(store, "cb-unknown", "ivrcbother-3", "13900000013")
    def lost(_action: dict[str, Any]) -> Any:  # AmiActionError is "no such channel"; a lost connection is not
        raise AmiNotConnected("AMI Status: not connected")

    ami.replies["Status"] = lost
    with pytest.raises(AmiNotConnected):
        await service.tick()
    assert (await store.queue.get("cb-unknown"))["status"] == "dialling" and not ami.sent("Originate")


async def test_a_standby_places_nothing_and_recovers_nothing(world: Any) -> None:
    service, ami, store, _, _ = world
    await in_flight_elsewhere(store, "cb-standby", "ivrcbother-4", "13900000014")
    service.acting = lambda: False
    assert await service.tick() == [] and not ami.sent("Status") and not ami.sent("Originate")
    assert (await store.queue.get("cb-standby"))["status"] == "dialling"
