"""Call-backs placed by the switch (issue 18), on the real switch with the whole controller.

Actors are Local channels added at run time: the held caller (``Local/c@test-cb-caller``,
its ;1 half Dials an agent), the agents the controller calls back from
(``Local/<n>@test-cb-agents``: answer and press 1, press 2, or never answer) and the
customers, routed at run time into the shipped-closed ``ivr-callback-number`` (an exact
extension beats its ``_[+0-9].`` Busy pattern): answer and press a key, ring out, or busy.
Short backoffs (2 s) and ring limits (3 s) from the test configuration; every wait is on an
AMI event (``UserEvent: IvrCallback`` stages) or on the store, bounded.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from ivr.catalog import digits_prompts
from ivr.prompts import prompt_duration
from tests import REPO
from tests.integration.amitools import AmiRecorder, ts, until

BACKOFF = 2.0
AGENT_RETRY = 1.0


def config(agents: list[str], max_attempts: int = 3) -> str:
    text = (
        "[hold]\nreminder_interval = 1.0\nchoices_after = 2.0\n\n"
        "[callbacks]\nenabled = true\nhours = \"00:00-24:00\"\npoll = 0.3\n"
        f"max_attempts = {max_attempts}\nbackoff = [{BACKOFF}]\nagent_retry = {AGENT_RETRY}\n"
        "agent_ring = 3.0\nagent_confirm = 4.0\ncustomer_ring = 3.0\nlive_timeout = 4.0\n\n")
    for number in agents:
        text += f'[[agents]]\nnumber = "{number}"\ndial = "Local/{number}@test-cb-agents"\n\n'
    return text


ACCEPTS = ["Answer()", "Wait(1)", "SendDTMF(1)", "Wait(60)", "Hangup()"]
DECLINES = ["Answer()", "Wait(1)", "SendDTMF(2)", "Wait(60)", "Hangup()"]
NEVER_ANSWERS = ["Ringing()", "Wait(60)", "Hangup()"]


def live(agent: str) -> list[str]:
    """A person: hears the greeting and the agent's number out, then presses a key (a key
    pressed during the greeting is not heard: the greeting is played whole)."""
    heard = sum(prompt_duration(REPO / "prompts" / "build", "zh-CN", p)
                for p in ["callback_greeting", "agent_intro", *digits_prompts(agent), "agent_service"])
    return ["Answer()", f"Wait({heard + 1.0:.1f})", "SendDTMF(5)", "Wait(4)", "Hangup()"]


RINGS_OUT = ["Ringing()", "Wait(60)", "Hangup()"]
BUSY = ["Busy(2)"]


async def setup(ami: AmiRecorder, agents: dict[str, list[str]], customers: dict[str, list[str]]) -> None:
    for number, steps in agents.items():
        await ami.add_dialplan("test-cb-agents", number, steps)
    for number, steps in customers.items():
        await ami.add_dialplan("ivr-callback-number", number, steps)


async def remove_customers(ami: AmiRecorder, numbers: list[str]) -> None:
    for n in numbers:
        await ami.action({"Action": "DialplanExtensionRemove", "Context": "ivr-callback-number", "Extension": n})


def stages(ami: AmiRecorder, callback_id: str | None = None) -> list[Any]:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallback"
                    and (callback_id is None or e.get("CallbackId") == callback_id))


async def wait_stage(ami: AmiRecorder, stage: str, *, timeout: float, count: int = 1, since: int = 0) -> list[Any]:
    return await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallback"
                              and e.get("Stage") == stage, timeout=timeout, count=count, since=since)


async def queue_of(ctl: Any) -> Any:
    await until(lambda: ctl.operations.records.store is not None, 10, "the records database open")
    return ctl.operations.records.store.queue


async def request(ctl: Any, number: str, call_id: str, item: str) -> None:
    """A call-back request as the hold feature makes it (the event is its one source)."""
    ctl.bus.emit("callback.requested", call_id, item=item, caller_number=number, best_time="today",
                 target="", held_by="1001", agent="1001")


async def stored(ctl: Any, callback_id: str) -> dict[str, Any] | None:
    """The call-back's row, None while the request is not stored yet (the bus hands it to
    the queue in a task of its own): what a bounded wait polls."""
    got: dict[str, Any] | None = await (await queue_of(ctl)).get(callback_id)
    return got


async def row(ctl: Any, callback_id: str) -> dict[str, Any]:
    """The call-back's row, which must be stored by now."""
    got = await stored(ctl, callback_id)
    assert got is not None, f"call-back {callback_id} not stored"
    return got


async def hold_and_choose(ami: AmiRecorder, ctl: Any, number: str, window_key: str) -> Any:
    """A caller talking with an agent is put on hold, presses 3 at the choices, hears the
    menu of windows and presses ``window_key``; returns the caller's BridgeEnter."""
    await ami.add_dialplan("test-cb-caller", "c", ["Answer()", "Wait(120)"])
    await ami.add_dialplan("test-cb-dial", "d", ["Dial(Local/a@test-cb-held-agent/n)", "Hangup()"])
    await ami.add_dialplan("test-cb-held-agent", "a", ["Answer()", "Wait(120)"])
    for key in {"3", window_key}:
        await ami.add_dialplan("test-cb-press", key, [f"SendDTMF({key},,120)", "Wait(30)"])
    since = len(ami.events)
    await ami.originate("Local/c@test-cb-caller/n", "test-cb-dial", "d", caller_id=f"Held <{number}>")
    [caller] = await ami.wait_for(lambda e: e.event == "BridgeEnter"
                                  and e["Channel"].startswith("Local/c@test-cb-caller")
                                  and e["Channel"].endswith(";1"), timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == caller["BridgeUniqueid"]
                       and e["Uniqueid"] != caller["Uniqueid"], timeout=10, since=since)
    await ctl.hold.hold(caller["Uniqueid"])
    await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                       and e.get("State") == "choices", timeout=15, since=since)
    caller_side = caller["Channel"][:-1] + "2"
    reply = await ami.action({"Action": "Redirect", "Channel": caller_side,
                              "Context": "test-cb-press", "Exten": "3", "Priority": "1"})
    assert reply.success, reply
    await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Uniqueid") == caller["Uniqueid"]
                       and "callback_when" in e.get("Command", ""), timeout=15, since=since)
    reply = await ami.action({"Action": "Redirect", "Channel": caller_side,
                              "Context": "test-cb-press", "Exten": window_key, "Priority": "1"})
    assert reply.success, reply
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == caller["Uniqueid"], timeout=40,
                       since=since)
    return caller


async def test_held_caller_presses_3_and_is_called_back(ami: AmiRecorder, make_controller: Any) -> None:
    """A held caller presses 3, chooses "as soon as possible" (key 1) and hangs up; an agent
    is rung, hears who and presses 1; only then the customer is dialled through
    ivr-callback-number, hears the greeting, presses a key and is bridged with that agent."""
    number = "13900000001"
    await setup(ami, {"2001": ACCEPTS}, {number: live("2001")})
    ctl = await make_controller(config(["2001"]))
    await queue_of(ctl)
    await hold_and_choose(ami, ctl, number, "1")
    hung_up = len(ami.events)
    [connected] = await wait_stage(ami, "connected", timeout=30, since=hung_up)
    cb_id = connected["CallbackId"]
    seen = [e["Stage"] for e in stages(ami, cb_id)]
    assert seen[:6] == ["agent-ringing", "agent-answered", "agent-accepted", "customer-dialling",
                        "customer-answered", "connected"], seen
    assert connected["Agent"] == "2001" and connected["Number"] == number
    # the agent heard the number before the customer was dialled
    agent_uid = connected["Uniqueid"]
    heard = ami.find(lambda e: e.event == "AGIExecStart" and e.get("Uniqueid") == agent_uid
                     and "callback_announce" in e.get("Command", ""))
    dialled = ami.find(lambda e: e.event == "DialBegin" and e.get("Uniqueid") == agent_uid
                       and f"Local/{number}@ivr-callback-number" in e.get("DestChannel", ""))
    assert heard and dialled and ts(heard[0]) < ts(dialled[0])
    # the customer heard the greeting, then agent and customer share a bridge
    [agent_in] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == agent_uid,
                                    timeout=10, since=hung_up)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == agent_in["BridgeUniqueid"]
                       and e["Channel"].startswith(f"Local/{number}@ivr-callback-number"), timeout=10, since=hung_up)
    assert ami.find(lambda e: e.event == "AGIExecStart" and "callback_greeting" in e.get("Command", "")
                    and e.get("Channel", "").startswith(f"Local/{number}@ivr-callback-number"))
    done = await until(lambda: stored(ctl, cb_id), 10, "the call-back row")
    await until(lambda: _status(ctl, cb_id, "done"), 10, "the call-back done")
    assert done["phone"] == number and done["held_by"]
    assert ctl.callbacks.metrics.value("ivr_callback_attempts_total", {"outcome": "connected"}) == 1
    # the agent's leg was watched by the ring monitor like any other (R1 alarms apply to it)
    legs = await until(lambda: _legs(ctl, "2001"), 10, "the agent's ring leg recorded")
    assert legs[0]["outcome"] == "answered" and legs[0]["rings"] >= 1
    await remove_customers(ami, [number])


async def test_a_window_tomorrow_is_kept_and_not_placed_before_it(ami: AmiRecorder, make_controller: Any) -> None:
    """The held caller presses 3, then 3 again: "tomorrow between 9 and 12". The row has that
    window, its next attempt is tomorrow 09:00 (the switch's zone); the caller hears it back;
    the scheduler looks at the queue again and again and places nothing."""
    number = "13900000011"
    await setup(ami, {"2011": ACCEPTS}, {number: live("2011")})
    ctl = await make_controller(config(["2011"]))
    await queue_of(ctl)
    tz = ZoneInfo(ctl.config.switch.timezone)
    before = datetime.now(tz).date()
    caller = await hold_and_choose(ami, ctl, number, "3")
    [r] = await until(lambda: _open_for(ctl, number), 10, "the call-back stored")
    # "tomorrow" is the day after the controller's today when the caller chose: midnight in
    # the switch's zone may fall between that and this check
    nine = {datetime.combine(day + timedelta(days=1), dtime(9), tz).timestamp()
            for day in (before, datetime.now(tz).date())}
    assert r["best_time"] == "09:00-12:00" and r["next_attempt"] in nine, (r, nine)
    played = [e["Command"].split()[2].rsplit("/", 1)[1] for e in ami.find(
        lambda e: e.event == "AGIExecStart" and e.get("Uniqueid") == caller["Uniqueid"]
        and e.get("Command", "").startswith("STREAM FILE"))]
    said = played[played.index("callback_will"):]
    assert said == ["callback_will", "callback_tomorrow", "callback_from", "hour_9", "callback_to", "hour_12",
                    "callback_end"], played
    ticks = ctl.callbacks.ticks
    await until(lambda: ctl.callbacks.ticks >= ticks + 5, 15, "five more looks at the queue")
    assert not stages(ami, r["callback_id"]), "placed before the window the caller chose"
    await ctl.callbacks.cancel(r["callback_id"])
    await remove_customers(ami, [number])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _open_for(ctl: Any, number: str) -> list[dict[str, Any]]:
    return [r for r in await (await queue_of(ctl)).open() if r["phone"] == number]


async def test_a_call_back_created_by_the_api_is_placed(ami: AmiRecorder, make_controller: Any) -> None:
    """POST /api/callbacks (a number, an agent, as soon as possible): 201 with the row; the
    switch places it agent first and bridges the customer; a hostile body is a 400."""
    number = "13900000012"
    await setup(ami, {"2012": ACCEPTS}, {number: live("2012")})
    port = _free_port()
    ctl = await make_controller(f'[http]\nport = {port}\ntoken = "callback-test-token-0123"\n\n' + config(["2012"]))
    await queue_of(ctl)
    url = f"http://127.0.0.1:{port}/api/callbacks"
    since = len(ami.events)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     headers={"Authorization": "Bearer callback-test-token-0123"}) as http:
        async with http.post(url, json={"phone": "139\r\nAction: Originate"}) as reply:
            assert reply.status == 400 and "phone" in (await reply.json())["message"]
        async with http.post(url, json={"phone": number, "target": "2012", "best_time": "asap"}) as reply:
            assert reply.status == 201, await reply.text()
            created = await reply.json()
    assert (created["phone"], created["target"], created["status"]) == (number, "2012", "open")
    [connected] = await wait_stage(ami, "connected", timeout=30, since=since)
    assert (connected["CallbackId"], connected["Agent"], connected["Number"]) == (
        created["callback_id"], "2012", number)
    [agent_in] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == connected["Uniqueid"],
                                    timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == agent_in["BridgeUniqueid"]
                       and e["Channel"].startswith(f"Local/{number}@ivr-callback-number"), timeout=10, since=since)
    await until(lambda: _status(ctl, created["callback_id"], "done"), 10, "the call-back done")
    await remove_customers(ami, [number])


async def test_a_queue_call_back_goes_to_a_free_member_of_that_queue(ami: AmiRecorder,
                                                                     make_controller: Any) -> None:
    """Target queue:agents (the shipped queue); the caller was held by 2014, who is not a
    member. The switch's member 2015 is rung and bridged, never 2014."""
    number = "13900000014"
    await setup(ami, {"2014": ACCEPTS, "2015": ACCEPTS}, {number: live("2015")})
    iface = "Local/2015@test-cb-agents/n"
    reply = await ami.action({"Action": "QueueAdd", "Queue": "agents", "Interface": iface}, as_list=False)
    assert reply.success, reply
    try:
        ctl = await make_controller(config(["2014", "2015"]))
        await queue_of(ctl)
        since = len(ami.events)
        ctl.bus.emit("callback.requested", "test-cb-14", item="cb-queue", caller_number=number, best_time="today",
                     target="queue:agents", held_by="2014")
        [c] = await wait_stage(ami, "connected", timeout=30, since=since)
        assert (c["CallbackId"], c["Agent"]) == ("cb-queue", "2015")
        assert not ami.find(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith("Local/2014@"),
                            since), "the agent who is no member of the queue was never rung"
        await until(lambda: _status(ctl, "cb-queue", "done"), 10, "the call-back done")
    finally:
        await ami.action({"Action": "QueueRemove", "Queue": "agents", "Interface": iface}, as_list=False)
        await remove_customers(ami, [number])


async def test_a_restart_while_the_agent_rings_adopts_the_attempt(ami: AmiRecorder, make_controller: Any) -> None:
    """The controller stops while the agent's phone rings for a call-back; the next one asks
    the switch, finds the ringing leg and adopts it: no second call to the agent; the agent
    answers, is told by the new controller, accepts, and the customer is bridged."""
    number = "13900000013"
    ring = ["Ringing()", "Wait(6)", "Answer()", "Wait(1)", "SendDTMF(1)", "Wait(60)", "Hangup()"]
    await setup(ami, {"2013": ring}, {number: live("2013")})
    slow = config(["2013"]).replace("agent_ring = 3.0", "agent_ring = 12.0")
    ctl = await make_controller(slow)
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, "test-cb-13", "cb-adopt")
    [ringing] = await wait_stage(ami, "agent-ringing", timeout=15, since=since)
    await ami.wait_for(lambda e: e.event == "Newchannel" and e.get("Uniqueid") == ringing["Uniqueid"],
                       timeout=10, since=since)
    await ctl.stop()
    ctl2 = await make_controller(slow)
    [c] = await wait_stage(ami, "connected", timeout=30, since=since)
    assert (c["CallbackId"], c["Uniqueid"]) == ("cb-adopt", ringing["Uniqueid"]), "the same attempt, adopted"
    assert len(ami.find(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith("Local/2013@"),
                        since)) == 2, "one call to the agent (a Local channel's two halves)"
    assert len(stages(ami, "cb-adopt")) >= 1 and [e["Stage"] for e in stages(ami, "cb-adopt")].count(
        "agent-ringing") == 1
    await until(lambda: _status(ctl2, "cb-adopt", "done"), 15, "done by the controller that adopted it")
    r = await row(ctl2, "cb-adopt")
    assert [h["outcome"] for h in r["history"]] == ["connected"], r["history"]
    await remove_customers(ami, [number])


async def _legs(ctl: Any, agent: str) -> list[dict[str, Any]]:
    return [leg for leg in await ctl.operations.records.store.ring_legs(None, None)
            if leg["agent"] == agent and leg["outcome"]]


async def _status(ctl: Any, cb_id: str, status: str) -> bool:
    got = await stored(ctl, cb_id)
    return got is not None and got["status"] == status


async def test_no_answer_and_busy_retry_on_schedule(ami: AmiRecorder, make_controller: Any) -> None:
    """No answer, then busy: each uses one of the customer's attempts and the next comes
    after the backoff; after max_attempts the call-back has failed."""
    rings_out, busy = "13900000002", "13900000003"
    await setup(ami, {"2002": ACCEPTS}, {rings_out: RINGS_OUT, busy: BUSY})
    ctl = await make_controller(config(["2002"], max_attempts=2))
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, rings_out, "test-cb-2", "cb-rings")
    first = (await wait_stage(ami, "no-answer", timeout=30, since=since))[0]
    second = (await wait_stage(ami, "agent-ringing", timeout=30, since=len(ami.events)))[0]
    assert ts(second) - ts(first) >= BACKOFF - 0.3, "the retry waited for the backoff"
    final = (await wait_stage(ami, "no-answer", timeout=30, count=2, since=since))[-1]
    assert final["Status"] == "failed"
    r = await row(ctl, "cb-rings")
    assert (r["status"], r["attempts"]) == ("failed", 2)
    assert [(h["outcome"], h["burned"]) for h in r["history"]] == [("no-answer", 1), ("no-answer", 1)]

    since = len(ami.events)
    await request(ctl, busy, "test-cb-3", "cb-busy")
    [b1] = await wait_stage(ami, "busy", timeout=30, since=since)
    assert b1["Status"] == "open"
    r = await row(ctl, "cb-busy")
    assert r["attempts"] == 1 and r["next_attempt"] >= float(b1["Timestamp"]) + BACKOFF - 0.5
    await wait_stage(ami, "busy", timeout=30, count=2, since=since)
    await until(lambda: _status(ctl, "cb-busy", "failed"), 10, "failed after two busy attempts")

    # answered, but nobody presses a key or speaks after the greeting: no live answer, one attempt used
    machine = "13900000005"
    await ami.add_dialplan("ivr-callback-number", machine, ["Answer()", "Wait(40)", "Hangup()"])
    since = len(ami.events)
    await request(ctl, machine, "test-cb-9", "cb-machine")
    [m] = await wait_stage(ami, "no-live-answer", timeout=40, since=since)
    assert m["Status"] == "open" and (await row(ctl, "cb-machine"))["attempts"] == 1
    assert not ami.find(lambda e: e.event == "BridgeEnter" and machine in e.get("Channel", ""), since), "never bridged"
    await ctl.callbacks.cancel("cb-machine")
    await remove_customers(ami, [rings_out, busy, machine])


async def test_agent_decline_and_no_answer_do_not_use_the_customers_attempt(
        ami: AmiRecorder, make_controller: Any) -> None:
    """The agent presses 2, or never answers: the customer is never dialled and keeps all
    their attempts; the call-back comes round again after agent_retry."""
    number = "13900000004"
    await setup(ami, {"2003": DECLINES}, {number: live("2003")})
    ctl = await make_controller(config(["2003"]))
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, "test-cb-4", "cb-declined")
    await wait_stage(ami, "agent-declined", timeout=30, count=2, since=since)
    r = await row(ctl, "cb-declined")
    assert r["attempts"] == 0 and r["status"] in ("open", "dialling")
    assert {h["burned"] for h in r["history"] if h["outcome"]} == {0}
    assert not ami.find(lambda e: e.event == "DialBegin" and number in e.get("DestChannel", ""))
    await ctl.callbacks.cancel("cb-declined")
    await ctl.stop()

    await setup(ami, {"2004": NEVER_ANSWERS}, {})
    ctl = await make_controller(config(["2004"]))
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, "test-cb-5", "cb-noanswer")
    [e] = await wait_stage(ami, "agent-no-answer", timeout=30, since=since)
    assert e["Status"] == "open"
    r = await row(ctl, "cb-noanswer")
    assert r["attempts"] == 0 and [h["burned"] for h in r["history"]][:1] == [0]
    await ctl.callbacks.cancel("cb-noanswer")
    await remove_customers(ami, [number])


async def test_duplicates_merged_and_a_restart_loses_nothing(ami: AmiRecorder, make_controller: Any) -> None:
    """Two requests from one number are one call-back in its first place; a busy attempt,
    the controller restarts, and the next controller calls back from the same store."""
    number = "13900000006"
    await setup(ami, {"2005": ACCEPTS}, {number: BUSY})
    ctl = await make_controller(config(["2005"]))
    store = await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, "test-cb-6", "cb-first")
    await request(ctl, number, "test-cb-7", "cb-second")
    await wait_stage(ami, "busy", timeout=30, since=since)
    rows = [r for r in await store.open() if r["phone"] == number]
    assert [r["callback_id"] for r in rows] == ["cb-first"]
    assert rows[0]["requests"] == 2
    await ctl.stop()

    await ami.add_dialplan("ivr-callback-number", number, live("2005"))  # the customer is back home
    since = len(ami.events)
    ctl2 = await make_controller(config(["2005"]))
    [c] = await wait_stage(ami, "connected", timeout=30, since=since)
    assert c["CallbackId"] == "cb-first"
    await until(lambda: _status(ctl2, "cb-first", "done"), 10, "done after the restart")
    r = await row(ctl2, "cb-first")
    outcomes = [h["outcome"] for h in r["history"]]
    assert outcomes[0] == "busy" and outcomes[-1] == "connected", outcomes
    await remove_customers(ami, [number])


async def test_the_number_calling_in_and_reaching_an_agent_cancels(ami: AmiRecorder, make_controller: Any) -> None:
    """The customer calls in before being called back and reaches an agent through the
    inbound flow: the call-back is cancelled (outcome called-in)."""
    number = "13900000007"
    await ami.add_dialplan("test-cb-agents", "2006", ["Ringing()", "Wait(1)", "Answer()", "Wait(60)"])
    # the caller responds to the greeting (R3) by key and by speech: either routes it to the agents
    await ami.add_dialplan("test-cb-caller", "speaker", [
        "Answer()", "Wait(2)", "SendDTMF(1)", "Playback(ivr-test/caller_speech)", "SendDTMF(1)", "Wait(60)"])
    ctl = await make_controller(config(["2006"]).replace("enabled = true", "enabled = false"))
    await request(ctl, number, "test-cb-8", "cb-calls-in")
    await until(lambda: stored(ctl, "cb-calls-in"), 10, "the call-back stored")
    since = len(ami.events)
    await ami.originate("Local/speaker@test-cb-caller", "ivr-inbound", "s", caller_id=number)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Channel", "").startswith("Local/2006@"),
                                   timeout=30, since=since)
    await until(lambda: _status(ctl, "cb-calls-in", "cancelled"), 10, "cancelled once the number reached an agent")
    assert (await row(ctl, "cb-calls-in"))["outcome"] == "called-in"
    for ch in await ami.channels():
        if ch["Channel"].startswith(("Local/speaker@test-cb-caller", "Local/2006@test-cb-agents")):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


async def test_the_controller_gone_while_the_customer_is_greeted_connects_them_unheard(
        ami: AmiRecorder, make_controller: Any) -> None:
    """The customer answered and hears the greeting when the controller stops (its FastAGI
    session cut): no verdict, so the dialplan connects the customer to the agent who
    accepted (UserEvent IvrCallbackUnchecked) instead of hanging up on them."""
    number = "13900000016"
    await setup(ami, {"2016": ACCEPTS}, {number: ["Answer()", "Wait(40)", "Hangup()"]})
    ctl = await make_controller(config(["2016"]))
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, "test-cb-16", "cb-unchecked")
    [answered] = await wait_stage(ami, "customer-answered", timeout=30, since=since)
    await ami.wait_for(lambda e: e.event == "AGIExecStart" and "callback_greeting" in e.get("Command", ""),
                       timeout=10, since=since)
    await ctl.stop(grace=0.2)  # mid-greeting (callback_greeting alone is longer than that)
    [unchecked] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallbackUnchecked",
                                     timeout=10, since=since)
    assert unchecked["CallbackId"] == answered["Uniqueid"]  # the attempt (IVR_CB_ID), as IvrCallbackDial
    customer = unchecked["Channel"]
    assert customer.startswith(f"Local/{number}@ivr-callback-number")
    [agent_in] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Channel") == customer,
                                    timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == agent_in["BridgeUniqueid"]
                       and e["Channel"].startswith("Local/2016@test-cb-agents"), timeout=10, since=since)
    assert not ami.find(lambda e: e.event == "Hangup" and e.get("Channel") == customer, since), \
        "the customer was not hung up on"
    # The stopping controller may still see IvrCallbackUnchecked and record the attempt
    # connected: then it says nobody heard them (Live: unchecked), never key or speech.
    heard = [e.get("Live") for e in stages(ami, "cb-unchecked") if e.get("Stage") == "connected"]
    assert not {"key", "speech"} & set(heard), f"no controller heard them: {heard}"
    await ami.action({"Action": "Hangup", "Channel": customer})
    await remove_customers(ami, [number])
