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

from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.test_cluster import TAKEOVER, pg, started_pair  # noqa: F401 - pg: fixture
from tests.integration.test_cluster_kill import record
from tests.integration.test_rings import add_actors, call

ANSWER = 2.5  # s the agent rings before answering (1 s rings: ring 3, no alarm due)
KILL_BEFORE = 0.4  # s before the answer


async def _records(pg: str, call_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:  # noqa: F811 - pg: a URL here
    import asyncpg

    conn = await asyncpg.connect(pg)
    try:
        events = [dict(r) for r in await conn.fetch(
            "SELECT event_id, kind, at FROM call_events WHERE call_id = $1 ORDER BY at", call_id)]
        row = await conn.fetchrow("SELECT * FROM calls WHERE call_id = $1", call_id)
        return events, dict(row) if row is not None else None
    finally:
        await conn.close()


async def test_leader_killed_as_the_agent_answers_the_answer_is_recorded_once_and_the_call_complete(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811 - pg: fixture
    """The agent answers 0.4 s after the leader's SIGKILL, while no node leads. The
    standby recorded the answer (a switch fact) at once; after the takeover the caller is
    bridged and hung up. The records: call.started, ring.started, ring.answered and
    call.ended once each (the standby's copies of what the old leader wrote were
    skipped and counted), the call row complete: start, caller channel, agent, rings,
    answer time (the switch's), end, who hung up, cause."""
    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        await add_actors(ami, {})
        await ami.add_dialplan("test-agent", "ra", ["Ringing()", f"Wait({ANSWER})", "Answer()", "Wait(30)",
                                                   "Hangup()"])
        since = len(ami.events)
        await call(ami, "7010=Local/ra@test-agent")
        begin = (await ami.wait_for(lambda e: e.event == "DialBegin" and "ra@test-agent" in e.get("DestChannel", ""),
                                    timeout=10, since=since))[0]
        linkedid = begin["Linkedid"]
        await until(lambda: time.time() >= ts(begin) + ANSWER - KILL_BEFORE, timeout=ANSWER + 1,
                    what="the moment of the kill")
        assert not ami.find(lambda e: e.event == "DialEnd" and e.get("DestUniqueid") == begin["DestUniqueid"],
                            since), "the agent answered before the kill: the test is too slow to prove anything"
        a.kill()
        killed = time.time()
        await b.wait_role("leader", timeout=5)
        leading = time.time()
        takeover = leading - killed
        print(f"\ntakeover as the agent answers: {takeover:.3f} s")
        record("sigkill-answer", takeover)
        assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
        answer = (await ami.wait_for(lambda e: e.event == "DialEnd" and e.get("DestUniqueid") == begin["DestUniqueid"],
                                     timeout=10, since=since))[0]
        assert answer["DialStatus"] == "ANSWER", dict(answer)
        assert killed < ts(answer) < leading, "the answer did not fall in the takeover window"
        caller = lambda e: e.get("Channel", "").startswith("Local/x@test-caller") and e["Channel"].endswith(";1")
        bridged = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=20, since=since))[0]
        await ami.action({"Action": "Hangup", "Channel": bridged["Channel"]})
        hangup = (await ami.wait_for(lambda e: e.event == "Hangup" and caller(e), timeout=10, since=since))[0]

        async def ended() -> Any:
            events, row = await _records(pg, linkedid)
            return (events, row) if row is not None and row["ended_at"] is not None else None

        events, row = await until(ended, timeout=10, what="the call's end on record")
        health = await b.health()
    kinds = Counter(e["kind"] for e in events)
    print(f"recorded: {dict(kinds)}; b's records: {health['records']}")
    assert {"call.started", "ring.started", "ring.answered", "call.ended"} <= kinds.keys(), kinds
    assert all(n == 1 for n in kinds.values()), kinds  # each event once
    answered = next(e for e in events if e["kind"] == "ring.answered")
    assert abs(answered["at"] - ts(answer)) < 0.1  # the switch's time of the answer
    assert row is not None and row["state"] == "ended"
    assert abs(row["arrived_at"] - ts(begin)) < 1.0 and row["channel"], row
    assert row["agent"] == "7010" and row["rings"] == 3 and row["within_three"] == 1, row
    assert abs(row["answered_at"] - ts(answer)) < 0.1, row
    assert abs(row["ended_at"] - ts(hangup)) < 1.0 and row["duration"] > ANSWER, row
    assert row["hung_up_first"] and row["hangup_cause"], row
    # b wrote every switch fact of the call or found it written (by a: skipped and counted;
    # which node wrote first is a race), and lost nothing.
    rec = health["records"]
    assert rec["written"] + rec["duplicates"] >= 4 and rec["dropped"] == 0, rec
