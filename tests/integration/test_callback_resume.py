"""A call-back's agent announcement across the controller's death (README "Call-backs"), on
the real switch with the whole controller: the controller stops while the agent hears who
is called back; ``[ivr-callback-agent]`` asks again (``[callbacks] agent_reasks`` times,
``agent_reask_interval`` apart, set here as each test needs them) while the agent hears
"one moment please" and music; the next controller adopts the attempt on that session,
plays the announcement again from the top, takes the agent's 1 and the customer is dialled
once and bridged. A graceful stop hands the session back at once (the old controller plays
nothing more of it during its grace). With no controller within the bound the agent is let
go with ``UserEvent: IvrCallbackUnserved`` and the attempt ends ``interrupted``; a bound
the dialplan cannot read as a number is its default.

Actors as in test_callbacks.py; the agent presses 1 only when told (a Redirect of its
Local channel's ;2 half once the second announcement has started), so the test decides
which announcement is answered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.test_callbacks import (
    NEVER_ANSWERS,
    config,
    live,
    queue_of,
    remove_customers,
    request,
    row,
    setup,
    stages,
    stored,
    wait_stage,
)
from tests.integration.test_cluster import TAKEOVER, pg, started_pair  # noqa: F401 - pg: fixture
from tests.integration.test_cluster_kill import record

LISTENS = ["Answer()", "Wait(120)", "Hangup()"]  # hears the announcement, presses only when redirected
TOKEN = "callback-resume-token-0123"


def asking(text: str, reasks: int, interval: float) -> str:
    """The test configuration ``text`` with the re-ask bound set explicitly."""
    return text.replace("poll = 0.3\n", f"poll = 0.3\nagent_reasks = {reasks}\nagent_reask_interval = {interval}\n")


def played(uid: str) -> Any:
    """Any prompt the controller starts on the agent's leg ``uid`` (AGI STREAM FILE)."""
    return lambda e: (e.event == "AGIExecStart" and e.get("Uniqueid") == uid
                      and e.get("Command", "").startswith("STREAM FILE"))


def prompt(e: Any) -> str:
    return str(e["Command"].split()[2].rsplit("/", 1)[1])


def waiting(uid: str) -> Any:
    """The dialplan's "one moment please" on the agent's leg (a Playback, no controller)."""
    return lambda e: (e.event == "Newexten" and e.get("Uniqueid") == uid and e.get("Application") == "Playback"
                      and e.get("AppData", "").endswith("/callback_agent_wait"))


def music(uid: str) -> Any:
    return lambda e: e.event == "MusicOnHoldStart" and e.get("Uniqueid") == uid


def announced(uid: str) -> Any:
    """The announcement's first prompt starting on the agent's leg ``uid``."""
    return lambda e: (e.event == "AGIExecStart" and e.get("Uniqueid") == uid
                      and e.get("Command", "").startswith("STREAM FILE")
                      and e["Command"].split()[2].endswith("/callback_announce"))


async def answered_and_announced(ami: AmiRecorder, ctl: Any, number: str, item: str) -> tuple[int, str]:
    since = len(ami.events)
    await request(ctl, number, f"test-{item}", item)
    [answered] = await wait_stage(ami, "agent-answered", timeout=30, since=since)
    await ami.wait_for(announced(answered["Uniqueid"]), timeout=10, since=since)
    return since, str(answered["Uniqueid"])


async def press_1(ami: AmiRecorder, uid: str, since: int) -> None:
    """The agent presses 1 (its Local channel's ;2 half, ChannelId ``<uid>-2``)."""
    [half] = ami.find(lambda e: e.event == "Newchannel" and e.get("Uniqueid") == f"{uid}-2", since)
    await ami.add_dialplan("test-cb-agent-key", "1", ["SendDTMF(1,,120)", "Wait(60)", "Hangup()"])
    reply = await ami.action({"Action": "Redirect", "Channel": half["Channel"], "Context": "test-cb-agent-key",
                              "Exten": "1", "Priority": "1"})
    assert reply.success, reply


async def connected_once(ami: AmiRecorder, uid: str, cb_id: str, number: str, agent: str, since: int) -> None:
    """The customer greeted and bridged with the agent; one call to the agent, one to the
    customer, the announcement begun once and resumed once, the outcome written once."""
    [connected] = await wait_stage(ami, "connected", timeout=30, since=since)
    assert (connected["CallbackId"], connected["Uniqueid"]) == (cb_id, uid), "the same attempt, resumed"
    [agent_in] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid,
                                    timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == agent_in["BridgeUniqueid"]
                       and e["Channel"].startswith(f"Local/{number}@ivr-callback-number"), timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallback"
                       and e.get("CallbackId") == cb_id and e.get("Status") == "done", timeout=15, since=since)
    seen = [e["Stage"] for e in stages(ami, cb_id)]
    assert [seen.count(s) for s in ("agent-ringing", "agent-answered", "agent-resumed")] == [1, 1, 1], seen
    assert seen.index("agent-resumed") < seen.index("agent-accepted") < seen.index("customer-dialling"), seen
    assert len([e for e in stages(ami, cb_id) if e.get("Status")]) == 1, "one outcome"
    assert len(ami.find(lambda e: e.event == "DialBegin" and e.get("Uniqueid") == uid
                        and f"Local/{number}@ivr-callback-number" in e.get("DestChannel", ""), since)) == 1
    assert len(ami.find(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith(f"Local/{agent}@"),
                        since)) == 2, "one call to the agent (a Local channel's two halves)"
    assert not ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallbackUnserved", since)


async def test_a_restart_mid_announcement_is_announced_again_by_the_next_controller(
        ami: AmiRecorder, make_controller: Any) -> None:
    """Stopped 0.2 s into the announcement; a second controller started, whose look at the
    queue is 30 s away: the agent's session asked again adopts the attempt there and then,
    and the announcement is replayed (stage agent-resumed); the agent presses 1, the
    customer is dialled once, greeted and bridged; one call to the agent, one
    ``connected``, written once."""
    number, agent = "13900000017", "2017"
    await setup(ami, {agent: LISTENS}, {number: live(agent)})
    ctl = await make_controller(asking(config([agent]), 10, 1.0))  # 10 s for the next one to start
    await queue_of(ctl)
    since, uid = await answered_and_announced(ami, ctl, number, "cb-resume")
    await ctl.stop(grace=0.2)  # mid-announcement: its FastAGI session is cut, no verdict
    ctl2 = await make_controller(asking(config([agent]), 10, 1.0).replace("poll = 0.3", "poll = 30"))
    again = (await ami.wait_for(announced(uid), timeout=15, count=2, since=since))[-1]
    assert ctl2.callbacks.ticks == 0 and list(ctl2.callbacks.attempts) == [uid], "adopted on the agent's session"
    first = ami.find(announced(uid), since)[0]
    print(f"\nannouncement replayed {ts(again) - ts(first):.3f} s after it began on the stopped controller")
    await press_1(ami, uid, since)
    await connected_once(ami, uid, "cb-resume", number, agent, since)
    await until(lambda: _done(ctl2, "cb-resume"), 15, "done by the controller that resumed it")
    r = await row(ctl2, "cb-resume")
    assert [h["outcome"] for h in r["history"]] == ["connected"], r["history"]
    await remove_customers(ami, [number])


async def _done(ctl: Any, cb_id: str) -> bool:
    got = await stored(ctl, cb_id)
    return got is not None and got["status"] == "done"


async def test_a_graceful_stop_hands_the_announcement_back_and_it_is_heard_once_from_the_top(
        ami: AmiRecorder, make_controller: Any) -> None:
    """Stopped (SIGTERM's path: the 5 s grace) a few prompts into the announcement: the
    controller hands the agent's session back at once: it plays no further prompt on that
    leg (with the grace it would have gone on for 5 s, then the whole announcement again
    from the next controller). The agent hears "one moment please" and music; the next
    controller adopts the attempt on the session asked again, plays the announcement from
    the top and whole, the agent presses 1 at its menu, the customer is dialled once."""
    number, agent = "13900000020", "2020"
    await setup(ami, {agent: LISTENS}, {number: live(agent)})
    ctl = await make_controller(asking(config([agent]), 10, 1.0))
    await queue_of(ctl)
    since, uid = await answered_and_announced(ami, ctl, number, "cb-handback")
    await ami.wait_for(played(uid), timeout=10, count=3, since=since)  # mid-announcement
    stopping = len(ami.events)
    began = time.monotonic()
    await ctl.stop()  # the default grace, 5 s
    took = time.monotonic() - began
    [wait_prompt] = await ami.wait_for(waiting(uid), timeout=10, since=stopping)
    await ami.wait_for(music(uid), timeout=10, since=stopping)
    ctl2 = await make_controller(asking(config([agent]), 10, 1.0).replace("poll = 0.3", "poll = 30"))
    again = (await ami.wait_for(announced(uid), timeout=15, count=2, since=since))[-1]
    assert ctl2.callbacks.ticks == 0 and list(ctl2.callbacks.attempts) == [uid], "adopted on the agent's session"
    cut = [prompt(e) for e in ami.find(played(uid), stopping) if ts(e) < ts(wait_prompt)]
    assert len(cut) <= 1, f"the stopped controller played on after its stop: {cut}"  # at most one in flight
    att = ctl2.callbacks.attempts[uid]
    whole = ctl2.callbacks.announcement(att)
    [menu] = await ami.wait_for(lambda e: played(uid)(e) and prompt(e) == "callback_announce_menu"
                                and ts(e) >= ts(again), timeout=30, since=since)
    replay = [prompt(e) for e in ami.find(played(uid), since) if ts(again) <= ts(e) <= ts(menu)]
    assert replay == whole, f"the announcement again, from the top and whole: {replay}"
    second = next(e for e in ami.find(played(uid), since) if ts(e) > ts(again))
    assert ami.find(lambda e: e.event == "MusicOnHoldStop" and e.get("Uniqueid") == uid
                    and ts(wait_prompt) < ts(e) <= ts(second), stopping), "the music ends as the announcement begins"
    first = [prompt(e) for e in ami.find(played(uid), since) if ts(e) < ts(wait_prompt)]
    print(f"\nstop took {took:.3f} s (grace 5 s); {len(first)} of {len(whole)} prompts before the hand-back; "
          f"the announcement again {ts(again) - ts(wait_prompt):.3f} s after the wait prompt began")
    await press_1(ami, uid, since)
    await connected_once(ami, uid, "cb-handback", number, agent, since)
    assert len(ami.find(announced(uid), since)) == 2, "begun once, begun again once"
    assert len(ami.find(waiting(uid), since)) == 1, "one moment please: once"
    await until(lambda: _done(ctl2, "cb-handback"), 15, "done by the controller that resumed it")
    await remove_customers(ami, [number])


async def test_no_controller_within_the_bound_lets_the_agent_go_and_says_so(
        ami: AmiRecorder, make_controller: Any) -> None:
    """Stopped mid-announcement and nobody comes back: after the configured asks (here 2
    more, 0.5 s apart: 3 in all; the agent hearing "one moment please" once, then music)
    the agent's leg is hung up with UserEvent IvrCallbackUnserved; the customer was never
    dialled; the next controller ends the attempt ``interrupted`` without using the
    customer's attempt."""
    number, agent = "13900000018", "2018"
    await setup(ami, {agent: LISTENS}, {number: live(agent)})
    ctl = await make_controller(asking(config([agent]), 2, 0.5))
    await queue_of(ctl)
    since, uid = await answered_and_announced(ami, ctl, number, "cb-unserved")
    await ctl.stop(grace=0.2)
    [unserved] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallbackUnserved",
                                    timeout=30, since=since)
    assert (unserved["CallbackId"], unserved["Asks"], unserved["Uniqueid"]) == (uid, "3", uid)
    assert len(ami.find(waiting(uid), since)) == 1 and ami.find(music(uid), since)
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == uid, timeout=10, since=since)
    assert not ami.find(lambda e: e.event == "DialBegin" and number in e.get("DestChannel", ""), since)
    await setup(ami, {agent: NEVER_ANSWERS}, {})  # the agent is not rung into another announcement
    ctl2 = await make_controller(config([agent]))
    await until(lambda: _history(ctl2, "cb-unserved"), 15, "the attempt resolved by the next controller")
    r = await row(ctl2, "cb-unserved")
    assert (r["history"][0]["outcome"], r["history"][0]["burned"], r["attempts"]) == ("interrupted", 0, 0)
    await ctl2.callbacks.cancel("cb-unserved")
    await remove_customers(ami, [number])


@pytest.mark.parametrize(("n", "reasks", "wait", "moh"), [(1, "2 + 40", "0.5;Hangup()", ",IVR_CB_MOH=../x"),
                                                         (2, "", "x", "")])
async def test_a_bound_the_dialplan_cannot_read_is_its_default(ami: AmiRecorder, n: int, reasks: str,
                                                                wait: str, moh: str) -> None:
    """No controller at all, and the agent's leg originated with a re-ask bound that is not
    a number (as a misconfigured or forged Originate would): the dialplan asks 5 times in
    all, its default, and lets the agent go; nothing of the values is evaluated. A music
    class that is not a class name, or none: the default class."""
    uid = f"ivrcb00000bad{n}-1"
    await ami.add_dialplan("test-cb-bound", "a", ["Answer()", "Wait(30)", "Hangup()"])
    since = len(ami.events)
    reply = await ami.action({"Action": "Originate", "Channel": "Local/a@test-cb-bound",
                              "Context": "ivr-callback-agent", "Exten": "s", "Priority": "1", "Async": "true",
                              "ChannelId": uid,
                              "Variable": f"IVR_CB_ID={uid},IVR_CB_REASKS={reasks},IVR_CB_REASK_WAIT={wait}{moh}"},
                             as_list=False)
    assert reply.success, reply
    [started] = await ami.wait_for(music(uid), timeout=30, since=since)
    assert started.get("Class") == "default", dict(started)
    [unserved] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrCallbackUnserved"
                                    and e.get("CallbackId") == uid, timeout=30, since=since)
    assert (unserved["Asks"], unserved["AgiStatus"]) == ("5", "FAILURE"), dict(unserved)
    assert not ami.find(waiting(uid), since), "no sound path given: music only"
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == uid, timeout=10, since=since)


async def _history(ctl: Any, cb_id: str) -> bool:
    history = (await row(ctl, cb_id))["history"]
    return bool(history and history[0]["outcome"])


async def test_a_leader_killed_mid_announcement_the_new_leader_announces_again(
        switch: Any, ami: AmiRecorder, pg: str, tmp_path: Path,  # noqa: F811 - pg: fixture
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller pair on PostgreSQL: the leader is SIGKILLed while the agent hears the
    announcement; the dialplan asks again through [ivr-agi] (the dead node refused, the
    standby answering "standby" until it leads); the new leader adopts the attempt, replays
    the announcement, the agent presses 1, the customer is dialled once and bridged."""
    number, agent = "13900000019", "2019"
    monkeypatch.setenv("IVR_HTTP_TOKEN", TOKEN)  # the nodes' API (they inherit the environment)
    async with started_pair(switch, pg, tmp_path, ami, extra=config([agent])) as (a, b):
        await setup(ami, {agent: LISTENS}, {number: live(agent)})
        since = len(ami.events)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as http, http.post(
                f"http://127.0.0.1:{a.http_port}/api/callbacks",
                json={"phone": number, "target": agent, "best_time": "asap"}) as reply:
            assert reply.status == 201, await reply.text()
            cb_id = (await reply.json())["callback_id"]
        [answered] = await wait_stage(ami, "agent-answered", timeout=30, since=since)
        uid = answered["Uniqueid"]
        await ami.wait_for(announced(uid), timeout=10, since=since)
        a.kill()
        killed = time.monotonic()
        await b.wait_role("leader", timeout=5)
        takeover = time.monotonic() - killed
        assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
        await ami.wait_for(announced(uid), timeout=20, count=2, since=since)
        replayed = time.monotonic() - killed
        print(f"\ntakeover {takeover:.3f} s; the call-back announcement replayed {replayed:.3f} s after the kill")
        record("callback-announcement-replayed", replayed)
        await press_1(ami, uid, since)
        await connected_once(ami, uid, cb_id, number, agent, since)
        await remove_customers(ami, [number])
