"""Issue 17, nothing lost from the call records across a leader's death (README
"Controller pairs"): two ``ivr run`` nodes on the real switch and a real PostgreSQL; the
leader is SIGKILLed so that the agent's answer falls in the takeover window (no node
leads). The standby followed the call over AMI and recorded the switch's facts all along
under ids made of the switch's data, so the answer is on record, every event once, and
the call row complete."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.test_cluster import TAKEOVER, pg, started_pair  # noqa: F401 - pg: fixture
from tests.integration.test_cluster_kill import record

ANSWER = 2.5  # s the agent rings before answering (1 s rings: ring 3, no alarm due)
TALK = 8.0  # s: the caller hangs up this long after the agent answered ("hangup"): bridged by then
KILL_BEFORE = 0.4  # s before the answer or the caller's hang-up


async def _records(pg: str, call_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:  # noqa: F811 - pg: a URL here
    import asyncpg

    conn = await asyncpg.connect(pg)
    try:
        # One snapshot for both reads: an event and its row change commit together, so two
        # separate reads could see the row ended and not yet the call.ended event.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            events = [dict(r) for r in await conn.fetch(
                "SELECT event_id, kind, at FROM call_events WHERE call_id = $1 ORDER BY at", call_id)]
            row = await conn.fetchrow("SELECT * FROM calls WHERE call_id = $1", call_id)
        return events, dict(row) if row is not None else None
    finally:
        await conn.close()


@pytest.mark.parametrize("moment", ["answer", "hangup"])
async def test_leader_killed_just_before_a_switch_fact_it_is_recorded_once_and_the_call_complete(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path, moment: str) -> None:  # noqa: F811 - pg: fixture
    """The leader is SIGKILLed 0.4 s before the agent answers (``answer``) or before the
    caller hangs up (``hangup``), so that switch fact happens while no node leads. The
    standby recorded it as it happened (and what the old leader had written is skipped,
    counted). The records: call.started, ring.started, ring.answered and call.ended once
    each, the call row complete: start, channel, agent, rings, answer (the switch's time),
    end, who hung up (the caller, for ``hangup``: the switch's verdict, not a resync's
    "unknown"), cause."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        answer_after = ANSWER if moment == "answer" else 1.5
        await ami.add_dialplan("test-agent", "ra", ["Ringing()", f"Wait({answer_after})", "Answer()", "Wait(30)",
                                                   "Hangup()"])
        talk = 60.0 if moment == "answer" else answer_after + TALK
        await ami.add_dialplan("test-caller", "xr", ["Answer()", f"Wait({talk})", "Hangup()"])
        since = len(ami.events)
        await ami.originate("Local/xr@test-caller", "ivr-agents", "s", timeout_ms=5000, variables={
            "IVR_AGENTS": "7010=Local/ra@test-agent", "IVR_AGENT_TIMEOUT": "60",
            "IVR_FALLBACK_QUEUE": "no-such-queue", "IVR_LANGUAGE": "en-US"})
        leg = lambda e: "ra@test-agent" in e.get("DestChannel", "")
        begin = (await ami.wait_for(lambda e: e.event == "DialBegin" and leg(e), timeout=10, since=since))[0]
        linkedid = begin["Linkedid"]
        caller = lambda e: e.get("Channel", "").startswith("Local/xr@test-caller") and e["Channel"].endswith(";1")
        if moment == "answer":
            due = ts(begin) + ANSWER
        else:  # the caller's own side (;2) hangs up `talk` s after its Wait began
            waiting = (await ami.wait_for(lambda e: e.event == "Newexten" and e.get("Application") == "Wait"
                                          and e.get("Channel", "").startswith("Local/xr@test-caller")
                                          and e["Channel"].endswith(";2"), timeout=10, since=since))[0]
            due = ts(waiting) + talk
            await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=talk, since=since)
        await until(lambda: time.time() >= due - KILL_BEFORE, timeout=talk + 2, what="the moment of the kill")
        fact = (lambda e: e.event == "DialEnd" and e.get("DestUniqueid") == begin["DestUniqueid"]) if (
            moment == "answer") else (lambda e: e.event == "Hangup" and caller(e))
        assert not ami.find(fact, since), f"the {moment} came before the kill: the test is too slow to prove anything"
        a.kill()
        killed = time.time()
        await b.wait_role("leader", timeout=5)
        leading = time.time()
        takeover = leading - killed
        print(f"\ntakeover around the {moment}: {takeover:.3f} s")
        record(f"sigkill-{moment}", takeover)
        assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
        happened = (await ami.wait_for(fact, timeout=10, since=since))[0]
        assert killed < ts(happened) < leading, f"the {moment} did not fall in the takeover window"
        answer = (await ami.wait_for(lambda e: e.event == "DialEnd" and e.get("DestUniqueid") == begin["DestUniqueid"],
                                     timeout=10, since=since))[0]
        assert answer["DialStatus"] == "ANSWER", dict(answer)
        if moment == "answer":
            bridged = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=20, since=since))[0]
            await ami.action({"Action": "Hangup", "Channel": bridged["Channel"]})
        hangup = (await ami.wait_for(lambda e: e.event == "Hangup" and caller(e), timeout=10, since=since))[0]

        async def ended() -> Any:
            events, row = await _records(pg, linkedid)
            return (events, row) if row is not None and row["ended_at"] is not None else None

        events, row = await until(ended, timeout=10, what="the call's end on record")

        seen: list[Any] = []  # the last reads, for the failure message

        async def accounted() -> Any:
            # b's counters move once its write's commit has come back to it, which can be
            # after this test saw the commit in PostgreSQL; and /healthz and /metrics are two
            # reads: so both are read again until b has accounted for the call's four switch
            # facts and they agree (then nothing of this call is left to move them).
            health = await b.health()
            rec = health.get("records", {})
            duplicates = await b.metric("ivr_records_duplicates_total")
            seen[:] = [rec, duplicates]
            settled = (rec.get("written", 0) + rec.get("duplicates", 0) >= 4
                       and duplicates == f"ivr_records_duplicates_total {float(rec.get('duplicates', 0))}")
            return (health, duplicates) if settled else None

        try:
            health, duplicates = await until(accounted, timeout=10, what="b's counters of the call's records")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last read: {seen}") from None
    kinds = Counter(e["kind"] for e in events)
    print(f"recorded: {dict(kinds)}; call: {row}; b's records: {health['records']}")
    assert {"call.started", "ring.started", "ring.answered", "call.ended"} <= kinds.keys(), kinds
    assert all(n == 1 for n in kinds.values()), kinds  # each event once
    answered = next(e for e in events if e["kind"] == "ring.answered")
    assert abs(answered["at"] - ts(answer)) < 0.1  # the switch's time of the answer
    assert row is not None and row["state"] == "ended"
    assert abs(row["arrived_at"] - ts(begin)) < 1.0 and row["channel"], row
    assert row["agent"] == "7010" and row["rings"] == (3 if moment == "answer" else 2), row
    assert row["within_three"] == 1 and abs(row["answered_at"] - ts(answer)) < 0.1, row
    assert abs(row["ended_at"] - ts(hangup)) < 1.0 and row["duration"] > answer_after, row
    assert row["hung_up_first"] == ("caller" if moment == "hangup" else "system") and row["hangup_cause"], row
    # b wrote every switch fact of the call or found it written (by a: skipped and counted;
    # which node wrote first is a race), and lost nothing.
    rec = health["records"]
    assert rec["written"] + rec["duplicates"] >= 4 and rec["dropped"] == 0, rec
    assert duplicates == f"ivr_records_duplicates_total {float(rec['duplicates'])}", duplicates
