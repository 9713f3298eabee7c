"""Issue 17, nothing twice and nothing lost: SIGKILL the leader of a controller pair (real
processes, the real switch, a real PostgreSQL) mid-silent-script and just before a ring
alarm falls due. Asserted from the switch's own AMI events and timestamps (the admin
recorder): each announcement and alarm comes exactly once, on time (or, when it fell due
while no node led, late by no more than the takeover), the caller is never dropped."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from ivr.prompts import prompt_duration
from ivr.sections import ClusterConfig
from tests import REPO
from tests.integration.amiproxy import AmiProxy
from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.test_cluster import PERIOD, TAKEOVER, fallbacks, pg, started_pair  # noqa: F401 - pg: fixture
from tests.integration.test_rings import add_actors, alarms, call

PAUSE = 5.0
BUILD = REPO / "prompts" / "build"


async def _late(node) -> bool:
    return bool((await node.health()).get("cluster", {}).get("actions", {}).get("late"))


def record(label: str, seconds: float) -> None:
    (artifacts := REPO / "test-artifacts").mkdir(exist_ok=True)
    with (artifacts / "cluster-takeover.txt").open("a") as out:
        out.write(f"{label} {seconds:.3f}\n")


async def test_leader_killed_mid_silent_script_the_next_node_resumes_at_the_stage_reached(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """A silent caller; the leader dies 0.2 s into the pause after prompt 2. [ivr-agi]
    runs ``inbound`` again on the next address (the dead session left IVR_STAGE and no
    IVR_RESULT); the new leader resumes: prompt 3 when pause 2 would have ended (within
    1 s), release 5 s after prompt 3 (never sooner), each stage announced once, the
    greeting and prompt 2 never again, no fallback, the caller never dropped."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await ami.add_dialplan("test-caller", "sk", ["Answer()", "Wait(60)", "Hangup()"])
        mine = lambda e: e.get("Channel", "").startswith("Local/sk@test-caller-") and e["Channel"].endswith(";1")
        stream = lambda e, kind="AGIExecEnd": (e.event == kind and mine(e)
                                               and e.get("Command", "").startswith("STREAM FILE"))
        since = len(ami.events)
        await ami.originate("Local/sk@test-caller", "ivr-inbound", "s")
        p2_end = (await ami.wait_for(lambda e: stream(e) and "silent_prompt2" in e["Command"],
                                     timeout=30, since=since))[0]
        await asyncio.sleep(0.2)  # pacing: the moment of the kill: 0.2 s into pause 2
        a.kill()
        killed = time.monotonic()
        await b.wait_role("leader", timeout=5)
        takeover = time.monotonic() - killed
        print(f"\ntakeover mid-silent-script: {takeover:.3f} s")
        record("sigkill-silent", takeover)
        assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
        hangup = (await ami.wait_for(lambda e: e.event == "Hangup" and mine(e), timeout=30, since=since))[0]
    ends = ami.find(stream, since)
    starts = ami.find(lambda e: stream(e, "AGIExecStart"), since)
    names = [e["Command"].split()[2].rsplit("/", 1)[1] for e in ends]
    assert names[-2:] == ["silent_prompt2", "silent_prompt3"] and names.count("silent_prompt2") == 1, names
    assert names.count("silent_prompt3") == 1 and len(names) == len(set(names)), names  # nothing twice
    p3_start, p3_end = ts(starts[-1]), ts(ends[-1])
    lang = "zh-CN"
    assert p3_end - p3_start >= prompt_duration(BUILD, lang, "silent_prompt3") - 0.1  # in full
    pause2 = p3_start - ts(p2_end)
    print(f"pause 2 across the takeover: {pause2:.3f} s")
    record("silent-pause2", pause2)
    assert PAUSE <= pause2 <= PAUSE + 1.0, f"pause 2 lasted {pause2:.3f} s"
    stages = ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrSilentCall" and mine(e), since)
    assert [e["Stage"] for e in stages] == ["prompt2", "prompt3", "release"]
    pause3 = ts(stages[-1]) - p3_end
    assert PAUSE <= pause3 <= PAUSE + 1.0, f"pause 3 lasted {pause3:.3f} s"
    assert hangup["Cause"] == "16", dict(hangup)  # released by the script, not dropped
    resumed = ami.find(lambda e: e.event == "AGIExecStart" and mine(e)
                       and e.get("Command", "").startswith("GET VARIABLE IVR_STAGE"), since)
    assert len(resumed) == 2  # the first node's session, then the resuming one
    assert not fallbacks(ami, since)


async def test_leader_killed_just_before_a_ring_alarm_the_new_leader_sends_it_late_once(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The warning (3 rings) falls due while nobody leads: the leader dies 0.5 s before
    it. The standby's own ring watch fired it and kept it; at takeover it claims the key
    (nobody sent it) and sends it at once: one warning, never early, sent within the claim's
    bound of the moment b took the lease (b's own log, not the test's polling).
    The critical alarm (6 rings) comes from the new leader on time, once."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await add_actors(ami, {})
        await ami.add_dialplan("test-agent", "r8", ["Ringing()", f"Wait({8 * PERIOD})", "Answer()",
                                                   "Wait(30)", "Hangup()"])
        since = len(ami.events)
        await call(ami, "7008=Local/r8@test-agent")
        begin = (await ami.wait_for(lambda e: e.event == "DialBegin" and "r8@test-agent" in e.get("DestChannel", ""),
                                    timeout=10, since=since))[0]
        # The kill 0.5 s before the warning is due (3 rings after the dial began).
        await asyncio.sleep(max(3 * PERIOD - 0.5 - (time.time() - ts(begin)), 0))  # pacing: the kill (as above)
        assert not alarms(ami, since), "the warning came before the kill: the test is too slow to prove anything"
        a.kill()
        killed = time.monotonic()
        await b.wait_role("leader", timeout=5)
        takeover = time.monotonic() - killed
        print(f"\ntakeover before a ring alarm: {takeover:.3f} s")
        record("sigkill-ring", takeover)
        # the new leader sent the warning late, from its pending actions (ivr.once)
        await until(lambda: _late(b), timeout=5, what="b's late action")
        critical = (await ami.wait_for(lambda e: e in alarms(ami, since) and e.get("Level") == "critical",
                                       timeout=10, since=since))[0]
        caller = lambda e: e.get("Channel", "").startswith("Local/x@test-caller") and e["Channel"].endswith(";1")
        bridged = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=20, since=since))[0]
        assert not ami.find(lambda e: e.event == "Hangup" and caller(e), since)  # never dropped
        await ami.action({"Action": "Hangup", "Channel": bridged["Channel"]})
        await ami.wait_for(lambda e: e.event == "Hangup" and caller(e), timeout=10, since=since)
    got = alarms(ami, since)
    assert sorted(e["Level"] for e in got) == ["critical", "warning"], [dict(e) for e in got]  # once each
    warning = next(e for e in got if e["Level"] == "warning")
    late = ts(warning) - ts(begin) - 3 * PERIOD
    # When b took the lease, by b's own record (its log line, this host's wall clock: the
    # switch's), not by this test's polling of /healthz: the warning is measured from it.
    led = logged_at(b, "cluster.leader")
    sent = ts(warning) - led
    print(f"warning late by {late:.3f} s (fell due during the takeover); sent {sent:.3f} s after b led")
    record("ring-warning-late", late)
    assert late >= 0, f"the warning came {-late:.3f} s before it was due"
    # The new leader sent it as soon as it led: its claim in PostgreSQL (bounded by
    # [cluster] claim_timeout: past it the action goes unrecorded) and the UserEvent.
    assert 0 <= sent <= ClusterConfig().claim_timeout + 0.2, f"warning {sent:.3f} s after b took the lease"
    assert abs(ts(critical) - ts(begin) - 6 * PERIOD) < 1.0, ts(critical) - ts(begin)


def logged_at(node: Any, event: str) -> float:
    """When ``node`` first logged ``event`` (its JSON log line's timestamp, unix time)."""
    for line in node.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                return datetime.fromisoformat(entry["timestamp"]).timestamp()
    raise AssertionError(f"node {node.name} never logged {event}")


HOLD = '[hold]\nreminder_interval = 6\nchoices_after = 60\nannounce = false\n'
INTERVAL = 6.0


async def test_leader_killed_mid_hold_the_next_node_goes_on_with_the_reminders(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The agent holds with the key (*8); reminders every 6 s. The leader dies 2 s after
    the first reminder: [ivr-agi] runs ``hold`` again on the next node, which goes on from
    the stage on the channel: reminders 2 and 3 at 12 and 18 s (within 0.5 s), each reminder
    once, music meanwhile; the agent's *8 then resumes through the new leader: thanks,
    the caller back in the agent's bridge, never dropped."""
    async with started_pair(switch, pg, tmp_path, ami, extra=HOLD) as (a, b):
        await ami.add_dialplan("test-hold-key", "s", ["SendDTMF(*8,,120)", "Wait(300)"])
        since, entered, agent = await _bridged(ami, "7010", "hk")
        uid = entered["Uniqueid"]
        key = {"Action": "Redirect", "Channel": agent[:-1] + "2", "Context": "test-hold-key", "Exten": "s",
               "Priority": "1"}
        hold = lambda e, state: (e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                                 and e.get("Uniqueid") == uid and e.get("State") == state)
        assert (await ami.action(key)).success
        start = (await ami.wait_for(lambda e: hold(e, "start"), timeout=10, since=since))[0]
        await ami.wait_for(lambda e: hold(e, "reminder"), timeout=10, since=since)
        await asyncio.sleep(max(ts(start) + 8.0 - time.time(), 0))  # pacing: the kill: 8 s into the hold
        a.kill()
        killed = time.monotonic()
        await b.wait_role("leader", timeout=5)
        takeover = time.monotonic() - killed
        print(f"\ntakeover mid-hold: {takeover:.3f} s")
        record("sigkill-hold", takeover)
        await ami.wait_for(lambda e: hold(e, "reminder"), timeout=15, since=since, count=3)
        assert (await ami.action(key)).success  # the agent resumes: *8 again
        resume = (await ami.wait_for(lambda e: hold(e, "resume"), timeout=10, since=since))[0]
        back = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid
                                   and ts(e) > ts(resume), timeout=15, since=since))[0]
        assert back["BridgeUniqueid"] == entered["BridgeUniqueid"]  # the agent's own bridge
        assert not ami.find(lambda e: e.event == "Hangup" and _caller(e), since)  # never dropped
        await ami.action({"Action": "Hangup", "Channel": entered["Channel"]})
        await ami.wait_for(lambda e: e.event == "Hangup" and _caller(e), timeout=10, since=since)

        from tests.integration.test_cluster_records import _records  # it imports this module

        async def ended() -> Any:
            events, row = await _records(pg, entered["Linkedid"])
            return (events, row) if row is not None and row["ended_at"] is not None else None

        events, row = await until(ended, timeout=10, what="the call's end on record")
        dropped = (await b.health())["records"]["dropped"]
        assert "hold.taken_over" in b.log.read_text(errors="replace")  # b rebuilt the hold (and its start)
    # The hold's start: a's write and the one b rebuilt from IVR_STAGE at the takeover are one
    # record (the leader's decisions under ids of switch data), at the hold's start.
    kinds = Counter(e["kind"] for e in events if e["kind"].startswith("hold."))
    assert kinds == {"hold.start": 1, "hold.reminder": 3, "hold.resume": 1}, kinds
    started = next(e for e in events if e["kind"] == "hold.start")
    assert abs(started["at"] - ts(start)) < 1.0 and row["hold_count"] == 1 and dropped == 0, (started, row)
    reminders = ami.find(lambda e: hold(e, "reminder"), since)
    assert [e["Count"] for e in reminders] == ["1", "2", "3"], [dict(e) for e in reminders]  # each once
    print("reminders at " + ", ".join(f"{ts(e) - ts(start):.3f}" for e in reminders) + " s")
    for e in reminders:  # R4's bound (+-0.5 s); after the takeover too: b times them by the switch's clock
        due = int(e["Count"]) * INTERVAL
        assert abs(ts(e) - ts(start) - due) < 0.5, f"reminder {e['Count']} at {ts(e) - ts(start):.3f} s"
    assert len(ami.find(lambda e: hold(e, "resume"), since)) == 1
    assert not fallbacks(ami, since)


TOKEN = "cluster-kill-test-token-0123456789abcdef"
TARGET = '[[agents]]\nnumber = "1002"\ndial = "Local/tg@test-agent"\n'


async def test_leader_killed_mid_transfer_the_new_leader_completes_it(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path, monkeypatch) -> None:  # noqa: F811 - pg: fixture
    """A warm transfer (HTTP) to an agent whose phone rings 4 s. The leader dies 1 s after
    the offer, while the target rings. The new leader takes the transfer over from the
    switch (the caller waiting in [ivr-transfer-wait], the target leg by its id): the
    target answers, hears the announcement from the new leader, presses 1; the caller is
    bridged with the target, the transferring agent released. Each IvrTransfer state
    once; the caller never dropped, never back to the queue."""
    monkeypatch.setenv("IVR_HTTP_TOKEN", TOKEN)
    async with started_pair(switch, pg, tmp_path, ami, extra=TARGET) as (a, b):
        since, entered, xfer = await _transferable_call(ami, "7011=Local/hk@test-agent", target_rings=4)
        uid = entered["Uniqueid"]
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{a.http_port}/api/calls/{uid}/transfer", json={"target": "1002"},
                headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 202, await r.text()
        offered = (await ami.wait_for(lambda e: xfer(e, "offered"), timeout=10, since=since))[0]
        await asyncio.sleep(max(ts(offered) + 1.0 - time.time(), 0))  # pacing: the kill: 1 s after the offer
        a.kill()
        await _new_leader(b, time.monotonic(), "mid-transfer", "sigkill-transfer")
        await _completed_with_the_target(ami, since, entered, xfer)
    states = [e["State"] for e in ami.find(xfer, since)]
    assert states == ["offered", "ringing", "answered", "confirmed", "completed"], states  # each once
    assert not fallbacks(ami, since)


async def _new_leader(b: Any, killed: float, what: str, label: str) -> float:
    await b.wait_role("leader", timeout=5)
    takeover = time.monotonic() - killed
    print(f"\ntakeover {what}: {takeover:.3f} s")
    record(label, takeover)
    return takeover


def _caller(e) -> bool:
    return e.get("Channel", "").startswith("Local/x@test-caller") and e["Channel"].endswith(";1")


async def _bridged(ami: AmiRecorder, number: str, exten: str) -> tuple[int, Any, str]:
    """A caller to ``number`` bridged with agent ``Local/<exten>@test-agent`` (answering
    after 1.5 s). Returns the events' index before the call, the caller's BridgeEnter and
    the agent's channel."""
    await add_actors(ami, {})
    await ami.add_dialplan("test-agent", exten, ["Ringing()", "Wait(1.5)", "Answer()", "Wait(300)"])
    since = len(ami.events)
    await call(ami, f"{number}=Local/{exten}@test-agent")
    entered = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and _caller(e), timeout=20, since=since))[0]
    agent = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and f"{exten}@test-agent" in e.get("Channel", "")
                                and e["BridgeUniqueid"] == entered["BridgeUniqueid"],
                                timeout=10, since=since))[0]["Channel"]
    return since, entered, agent


async def _transferable_call(ami: AmiRecorder, route: str, target_rings: float) -> tuple[int, Any, Any]:
    """A caller bridged with the agent of ``route`` (``<number>=Local/<exten>@test-agent``,
    answering after 1 s); the target (agent 1002, ``tg``) rings ``target_rings`` s, answers
    and presses 1 2 s later. Returns the events' index before the call, the caller's
    BridgeEnter and a predicate on its IvrTransfer events (``state``: one state only)."""
    await add_actors(ami, {})
    await ami.add_dialplan("test-agent", route.split("/")[1].split("@")[0],
                           ["Ringing()", "Wait(1)", "Answer()", "Wait(300)"])
    await ami.add_dialplan("test-agent", "tg", ["Ringing()", f"Wait({target_rings})", "Answer()", "Wait(2)",
                                               "SendDTMF(1,,200)", "Wait(300)"])
    since = len(ami.events)
    await call(ami, route)
    entered = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and _caller(e), timeout=20, since=since))[0]
    uid = entered["Uniqueid"]
    xfer = lambda e, state=None: (e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
                                  and e.get("Uniqueid") == uid and (state is None or e.get("State") == state))
    return since, entered, xfer


async def _completed_with_the_target(ami: AmiRecorder, since: int, entered: Any, xfer: Any) -> None:
    """The transfer completes: the caller in a new bridge with the target, never dropped;
    then the caller hangs up."""
    uid = entered["Uniqueid"]
    await ami.wait_for(lambda e: xfer(e, "completed"), timeout=30, since=since)
    joined = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid
                                 and e["BridgeUniqueid"] != entered["BridgeUniqueid"], timeout=15, since=since))[0]
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and "tg@test-agent" in e.get("Channel", "")
                       and e["BridgeUniqueid"] == joined["BridgeUniqueid"], timeout=10, since=since)
    assert not ami.find(lambda e: e.event == "Hangup" and _caller(e), since)  # never dropped
    await ami.action({"Action": "Hangup", "Channel": entered["Channel"]})
    await ami.wait_for(lambda e: e.event == "Hangup" and _caller(e), timeout=10, since=since)


async def test_leader_killed_between_the_redirect_and_the_originate_the_new_leader_dials_once(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path, monkeypatch) -> None:  # noqa: F811 - pg: fixture
    """A warm transfer (HTTP) whose leader dies after the caller was redirected to the
    wait and before its Originate of the target reached the switch: node a reaches AMI
    through a proxy that holds a's Originate; a is SIGKILLed while it is held (it took the
    dial's key in PostgreSQL just before). The new leader finds the caller waiting and no
    target leg, the key taken and no such leg in its own gapless view of the switch, so
    dials the target under its second key: the target rings once (one leg), answers,
    presses 1; the caller is bridged with it; each IvrTransfer state once; the caller never
    dropped, never to the queue."""
    monkeypatch.setenv("IVR_HTTP_TOKEN", TOKEN)
    async with AmiProxy(switch.ami_host, switch.ami_port) as proxy, started_pair(
            switch, pg, tmp_path, ami, extra=TARGET, a_ami=proxy.port) as (a, b):
        since, entered, xfer = await _transferable_call(ami, "7013=Local/hr@test-agent", target_rings=2)
        uid = entered["Uniqueid"]
        held = proxy.hold_action("Originate")

        async def post() -> None:  # answered only once the Originate is: never, a dies first
            async with aiohttp.ClientSession() as s, s.post(
                    f"http://127.0.0.1:{a.http_port}/api/calls/{uid}/transfer", json={"target": "1002"},
                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                await r.read()

        request = asyncio.ensure_future(post())
        try:
            await asyncio.wait_for(held.wait(), 15)
            waiting = await ami.wait_for(lambda e: e.event == "Newexten" and e.get("Uniqueid") == uid
                                         and e.get("Context") == "ivr-transfer-wait", timeout=5, since=since)
            assert waiting and ami.find(lambda e: xfer(e, "offered"), since)  # the Redirect and the offer went out
            a.kill()  # its Originate is still held: it never reaches the switch
            killed = time.monotonic()
            proxy.cut()
        finally:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
        await _new_leader(b, killed, "between the Redirect and the Originate", "sigkill-transfer-undialled")
        await _completed_with_the_target(ami, since, entered, xfer)
        actions = (await b.health())["cluster"]["actions"]
        assert actions["skipped"] >= 1, actions  # a's key for the dial: b dialled under its second one
    legs = ami.find(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith("Local/tg@test-agent")
                    and e["Channel"].endswith(";1"), since)
    assert len(legs) == 1 and legs[0]["Uniqueid"].endswith("-t"), [dict(e) for e in legs]  # dialled once
    states = [e["State"] for e in ami.find(xfer, since)]
    assert states == ["offered", "ringing", "answered", "confirmed", "completed"], states  # each once
    assert not fallbacks(ami, since)


async def test_leader_killed_mid_unclear_script_the_next_node_asks_again_once_on_time(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The agent keys *5 (the caller's line too faint; the caller stays silent). The leader
    dies 1 s into the pause after the first ask: [ivr-agi] runs ``unclear`` again on the
    next node, which goes on from the stage on the caller's channel: the ask again when
    pause 1 would have ended (within 1 s, never sooner), the goodbye, the release 5 s after
    it ended (never sooner); each stage announced once; the caller released by the script
    (cause 16), never dropped, never sent to the queue."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await ami.add_dialplan("test-unclear-key", "s", ["SendDTMF(*5,,120)", "Wait(300)"])
        since, entered, agent = await _bridged(ami, "7012", "uk")
        uid = entered["Uniqueid"]
        unclear = lambda e, stage=None: (e.event == "UserEvent" and e.get("UserEvent") == "IvrUnclearLine"
                                         and e.get("Uniqueid") == uid and stage in (None, e.get("Stage")))
        stream = lambda e, kind="AGIExecEnd": (e.event == kind and e.get("Uniqueid") == uid
                                               and e.get("Command", "").startswith("STREAM FILE")
                                               and "/unclear_" in e["Command"])
        assert (await ami.action({"Action": "Redirect", "Channel": agent[:-1] + "2", "Context": "test-unclear-key",
                                  "Exten": "s", "Priority": "1"})).success
        await ami.wait_for(lambda e: unclear(e, "ask"), timeout=10, since=since)
        ask_end = (await ami.wait_for(lambda e: stream(e) and "unclear_ask" in e["Command"],
                                      timeout=20, since=since))[0]
        await asyncio.sleep(max(ts(ask_end) + 1.0 - time.time(), 0))  # pacing: the kill: 1 s into pause 1
        assert not ami.find(lambda e: unclear(e, "ask-again"), since), "the test is too slow to prove anything"
        a.kill()
        killed = time.monotonic()
        await b.wait_role("leader", timeout=5)
        takeover = time.monotonic() - killed
        print(f"\ntakeover mid-unclear-script: {takeover:.3f} s")
        record("sigkill-unclear", takeover)
        assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
        release = (await ami.wait_for(lambda e: unclear(e, "release"), timeout=40, since=since))[0]
        hangup = (await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == uid,
                                     timeout=10, since=since))[0]
    stages = ami.find(unclear, since)
    assert [e["Stage"] for e in stages] == ["ask", "ask-again", "goodbye", "release"], [dict(e) for e in stages]
    assert [e["Via"] for e in stages[1:]] == ["takeover"] * 3  # the new leader's rebuilt session
    starts, ends = ami.find(lambda e: stream(e, "AGIExecStart"), since), ami.find(stream, since)
    names = [e["Command"].split()[2].rsplit("/", 1)[1] for e in starts]
    assert names == ["unclear_ask", "unclear_ask", "unclear_goodbye_faint"], names  # the ask again once
    pause1 = ts(starts[1]) - ts(ends[0])
    pause2 = ts(starts[2]) - ts(ends[1])
    pause3 = ts(release) - ts(ends[2])
    print(f"pause 1 across the takeover: {pause1:.3f} s; pause 2 {pause2:.3f} s; goodbye end to release "
          f"{pause3:.3f} s, to the caller's hang-up {ts(hangup) - ts(ends[2]):.3f} s")
    record("unclear-pause1", pause1)
    assert PAUSE <= pause1 <= PAUSE + 1.0, f"the ask again {pause1:.3f} s after the first ask ended"
    assert PAUSE <= pause2 <= PAUSE + 1.0, f"pause 2 lasted {pause2:.3f} s"
    assert PAUSE <= pause3 <= PAUSE + 1.0 and ts(hangup) - ts(ends[2]) >= PAUSE, "release never sooner"
    assert hangup["Cause"] == "16", dict(hangup)  # released by the script, not dropped
    assert not fallbacks(ami, since)


async def test_a_caller_who_speaks_during_the_takeover_reaches_the_agent_without_another_prompt(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The leader dies 0.2 s into the pause after the greeting; the caller says "one" at
    once, while no node listens (the dead node's session is over, the standby has just
    answered ``standby`` and the dialplan waits to try again). The node that takes the
    script over knows the caller spoke after the stage was written (the switch's
    ChannelTalkingStart, which it followed as a standby): the caller is put through to the
    agent at once, with no further prompt of the script, never dropped, never queued."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await ami.add_dialplan("test-caller", "sp", ["Answer()", "Wait(60)", "Hangup()"])
        await ami.add_dialplan("test-speak", "s", ["Playback(digits/1)", "Wait(60)"])
        await ami.add_dialplan("test-agent", "sp", ["Ringing()", "Wait(1)", "Answer()", "Wait(30)", "Hangup()"])
        mine = lambda e: e.get("Channel", "").startswith("Local/sp@test-caller-") and e["Channel"].endswith(";1")
        command = lambda e, start, kind="AGIExecStart": (e.event == kind and mine(e)
                                                         and e.get("Command", "").startswith(start))
        since = len(ami.events)
        await ami.originate("Local/sp@test-caller", "ivr-inbound", "s", variables={
            "IVR_AGENTS": "7013=Local/sp@test-agent", "IVR_AGENT_TIMEOUT": "30",
            "IVR_FALLBACK_QUEUE": "no-such-queue"})
        kept = (await ami.wait_for(lambda e: command(e, 'SET VARIABLE IVR_STAGE "greeting@', "AGIExecEnd"),
                                   timeout=30, since=since))[0]
        await asyncio.sleep(0.2)  # pacing: the kill: 0.2 s into pause 1
        a.kill()
        killed = len(ami.events)
        standby = (await ami.wait_for(lambda e: command(e, 'SET VARIABLE IVR_RESULT "standby"'),
                                      timeout=5, since=killed))[0]
        caller = kept["Channel"]
        assert (await ami.action({"Action": "Redirect", "Channel": caller[:-1] + "2", "Context": "test-speak",
                                  "Exten": "s", "Priority": "1"})).success  # the caller speaks now
        talk = (await ami.wait_for(lambda e: e.event == "ChannelTalkingStart" and e.get("Channel") == caller,
                                   timeout=5, since=killed))[0]
        resumed = (await ami.wait_for(lambda e: command(e, "GET VARIABLE IVR_STAGE"), timeout=10, since=killed))[0]
        assert (await b.health()).get("role") == "leader"  # the session is the new leader's
        responded = (await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
                                        and mine(e), timeout=10, since=killed))[0]
        bridged = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and mine(e), timeout=20, since=killed))[0]
        assert not ami.find(lambda e: e.event == "Hangup" and mine(e), since)  # never dropped
        await ami.action({"Action": "Hangup", "Channel": caller})
        await ami.wait_for(lambda e: e.event == "Hangup" and mine(e), timeout=10, since=since)
    # The speech fell in the window: after the standby's answer, before the next node's session.
    assert ts(standby) < ts(talk) < ts(resumed), (ts(standby), ts(talk), ts(resumed))
    print(f"\nspoke {ts(talk) - ts(standby):.3f} s after the standby's answer, "
          f"{ts(resumed) - ts(talk):.3f} s before the next node's session")
    assert (responded["Stage"], responded["Reason"], responded["From"]) == ("responded", "speech", "pause1")
    played = [e["Command"] for e in ami.find(lambda e: command(e, "STREAM FILE"), killed)]
    assert not [p for p in played if "/silent_" in p], played  # no further prompt of the script
    assert ts(bridged) > ts(responded)  # with the agent
    assert not fallbacks(ami, since)


async def test_clear_speech_that_ends_during_the_takeover_returns_the_unclear_line_caller_at_once(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The agent keys *5; in the pause after the first ask the caller answers clearly (the
    test speech: one burst of about 2.2 s). The leader dies 2 s into the words, so the burst
    ends (ChannelTalkingStop) while no node listens. The node that takes the script over
    kept it as a standby: the caller goes back to the agent at once (Stage returned, By
    speech, via takeover), no further prompt, never dropped."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await ami.add_dialplan("test-unclear-key", "s", ["SendDTMF(*5,,120)", "Wait(300)"])
        # the silence after the words keeps frames coming: a burst ends only on received audio
        await ami.add_dialplan("test-speak", "s", ["Playback(ivr-test/caller_speech)", "Playback(ivr-test/silence)",
                                                   "Wait(60)"])
        since, entered, agent = await _bridged(ami, "7014", "us")
        uid = entered["Uniqueid"]
        unclear = lambda e, stage=None: (e.event == "UserEvent" and e.get("UserEvent") == "IvrUnclearLine"
                                         and e.get("Uniqueid") == uid and stage in (None, e.get("Stage")))
        agi = lambda e, start: (e.event == "AGIExecStart" and e.get("Uniqueid") == uid
                                and e.get("Command", "").startswith(start))
        assert (await ami.action({"Action": "Redirect", "Channel": agent[:-1] + "2", "Context": "test-unclear-key",
                                  "Exten": "s", "Priority": "1"})).success
        await ami.wait_for(lambda e: e.event == "AGIExecEnd" and e.get("Uniqueid") == uid
                           and "/unclear_ask" in e.get("Command", ""), timeout=20, since=since)
        assert (await ami.action({"Action": "Redirect", "Channel": entered["Channel"][:-1] + "2",
                                  "Context": "test-speak", "Exten": "s", "Priority": "1"})).success
        start = (await ami.wait_for(lambda e: e.event == "ChannelTalkingStart" and e.get("Uniqueid") == uid,
                                    timeout=5, since=since))[0]
        await asyncio.sleep(max(ts(start) + 2.0 - time.time(), 0))  # pacing: the kill: 2 s into the words
        assert not ami.find(lambda e: unclear(e, "returned") or (e.event == "ChannelTalkingStop"
                                                                  and e.get("Uniqueid") == uid), since), \
            "the burst ended before the kill: the test is too slow to prove anything"
        a.kill()
        killed = len(ami.events)
        stop = (await ami.wait_for(lambda e: e.event == "ChannelTalkingStop" and e.get("Uniqueid") == uid,
                                   timeout=5, since=killed))[0]
        resumed = (await ami.wait_for(lambda e: agi(e, "GET VARIABLE IVR_STAGE"), timeout=10, since=killed))[0]
        returned = (await ami.wait_for(lambda e: unclear(e, "returned"), timeout=10, since=killed))[0]
        # (the UserEvent goes out beside the return, so either may come first)
        back = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid,
                                   timeout=15, since=killed))[0]
        assert (await b.health()).get("role") == "leader"
        assert not ami.find(lambda e: e.event == "Hangup" and _caller(e), since)  # never dropped
        await ami.action({"Action": "Hangup", "Channel": entered["Channel"]})
        await ami.wait_for(lambda e: e.event == "Hangup" and _caller(e), timeout=10, since=since)
    assert ts(stop) < ts(resumed), (ts(stop), ts(resumed))  # the burst ended while no node listened
    print(f"\nburst of {stop['Duration']} ms ended {ts(resumed) - ts(stop):.3f} s before the next node's session; "
          f"back with the agent {ts(back) - ts(resumed):.3f} s after it")
    assert (returned["During"], returned["By"], returned["Via"]) == ("pause1", "speech", "takeover"), dict(returned)
    assert back["BridgeUniqueid"] == entered["BridgeUniqueid"]  # the agent's own bridge
    played = ami.find(lambda e: agi(e, "STREAM FILE") and "/unclear_" in e["Command"], killed)
    assert not played, [e["Command"] for e in played]  # no further prompt
    assert not fallbacks(ami, since)
