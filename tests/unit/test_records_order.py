"""A call's records do not depend on the order its events reach the database (issue 17
follow-up): in a pair the standby writes the switch facts (``call.ended``) while the leader
writes its own decisions (``hold.resume``), and a node back from an outage writes its spool
late. Holds, transfers, ring legs and the call's figures are read from the events' own
times (records/spans.py). SQLite and PostgreSQL (the ``db_url`` fixture of test_records)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from ivr.events import CallEvent, EventBus
from ivr.once import action_key
from ivr.records import CallStore
from ivr.records.spans import Logged, fold_holds
from tests.fakes import until
from tests.unit.test_records import db_url, postgres  # noqa: F401 - fixtures
from tests.unit.test_records_outage import BOUND, keeper_for, locked

T0 = 1_760_000_000.0
ID_COLUMNS = ("hold_id", "transfer_id", "leg_id", "call_id")


def scenario(call_id: str) -> list[CallEvent]:
    """One call as a pair records it, in time order: the switch's facts, the actions sent
    under once keys, the leader's own decisions; a hold resumed, a transfer, a second hold
    still open at the hang-up, a resume that came after the end, and a new leader's
    resync that guessed the end later."""
    bus = EventBus(switch="east")

    def key(*parts: str) -> str:
        return action_key(call_id, parts[0], "/".join(parts[1:]))

    leg1, leg2 = (f"{call_id}-L1",), (f"{call_id}-L2",)
    return [
        bus.fact("call.started", call_id, ("call.started",), at=T0, caller="555", channel="PJSIP/trunk-1"),
        bus.keyed("silent.stage", call_id, key("silent", "1"), at=T0 + 1, stage="1"),
        bus.keyed("silent.stage", call_id, key("silent", "speech"), at=T0 + 1.6, stage="speech"),
        bus.fact("ring.started", call_id, (*leg1, "ring.started"), at=T0 + 2, agent="1001", uniqueid=leg1[0]),
        bus.fact("ring.noanswer", call_id, (*leg1, "ring.end"), at=T0 + 17, agent="1001", uniqueid=leg1[0],
                 rings=3, reason="noanswer"),
        bus.fact("ring.started", call_id, (*leg2, "ring.started"), at=T0 + 17, agent="1002", uniqueid=leg2[0]),
        bus.fact("ring.answered", call_id, (*leg2, "ring.end"), at=T0 + 21, agent="1002", uniqueid=leg2[0],
                 rings=1, within_three=True, late=False),
        CallEvent("hold.start", call_id, {"via": "key"}, at=T0 + 30),
        bus.keyed("hold.reminder", call_id, key("hold", "1"), at=T0 + 60, count=1),
        bus.decided("hold.choices", call_id, ("ivrkeep-1", "hold.choices"), at=T0 + 90),
        bus.decided("hold.choice", call_id, ("ivrkeep-1", "hold.choice/keep"), at=T0 + 91, choice="keep"),
        bus.keyed("hold.resume", call_id, key("hold", "thanks", "1"), at=T0 + 95, held_seconds=65.0),
        CallEvent("transfer.state", call_id, {"state": "offered", "target": "2001", "transfer_id": "x1"},
                  at=T0 + 100),
        CallEvent("transfer.state", call_id, {"state": "ringing", "transfer_id": "x1"}, at=T0 + 101),
        CallEvent("transfer.state", call_id, {"state": "completed", "transfer_id": "x1"}, at=T0 + 110),
        CallEvent("unclear.start", call_id, {"reason": "faint"}, at=T0 + 112),
        CallEvent("unclear.stage", call_id, {"stage": "returned"}, at=T0 + 118),
        CallEvent("hold.start", call_id, {"via": "key"}, at=T0 + 120),
        bus.fact("call.ended", call_id, ("call.ended",), at=T0 + 150, hung_up_first="caller", cause="16"),
        bus.keyed("hold.resume", call_id, key("hold", "thanks", "2"), at=T0 + 151, held_seconds=31.0),
        CallEvent("call.ended", call_id, {"hung_up_first": "unknown", "reason": "ended-while-disconnected"},
                  at=T0 + 160),  # a resync's guess: the switch's own end stands
    ]


async def snapshot(store: CallStore, call_id: str) -> dict[str, Any]:
    """The call's figures, without ids and the time of writing."""
    call = await store.call(call_id)
    assert call is not None
    call.pop("updated_at")
    call.pop("call_id")
    call.pop("events")
    for table in ("holds", "transfers", "ring_legs"):
        call[table] = sorted(({k: v for k, v in r.items() if k not in ID_COLUMNS} for r in call[table]),
                             key=lambda r: (r["started_at"], sorted((k, str(v)) for k, v in r.items())))
    return call


def orders(events: list[CallEvent]) -> dict[str, list[int]]:
    """The orders (indices into ``events``) two nodes' writers can produce, and some at random."""
    every = list(range(len(events)))
    ended = next(i for i, e in enumerate(events) if e.kind == "call.ended")  # the switch's
    facts = [i for i in every if events[i].origin == "switch"]
    out = {"time": every, "reversed": every[::-1], "end first": [ended, *(i for i in every if i != ended)],
           "standby's facts, then the leader's spool": facts + [i for i in every if i not in facts]}
    rnd = random.Random(17)  # noqa: S311 - a fixed shuffle, not a secret
    for n in range(6):
        shuffled = every[:]
        rnd.shuffle(shuffled)
        out[f"random {n}"] = shuffled
    return out


async def test_any_order_gives_the_same_rows(db_url: str) -> None:  # noqa: F811 - fixture
    """Every order of one call's events gives the rows its times say: the first hold
    resumed after 65 s (the resume was before the hang-up), the second closed by the
    hang-up after 30 s; the late resume (1 s after the end) counted once and ignored;
    one transfer, completed; two ring legs; the answering agent."""
    store = await CallStore.open(db_url, switch="east")
    try:
        seen = {}
        for n, (name, order) in enumerate(orders(scenario("sw-0.0")).items()):
            call_id = f"sw-{n}.1"
            events = scenario(call_id)  # the same call under an id of its own, in this order
            for i in order:
                assert await store.apply(events[i]) is True
            seen[name] = await snapshot(store, call_id)
        first = seen["time"]
        for name, snap in seen.items():
            assert snap == first, name
        assert store.after_end == {"hold.resume": len(seen)}  # once per call, whichever came first
    finally:
        await store.close()
    assert (first["state"], first["ended_at"], first["duration"], first["arrived_at"]) == (
        "ended", T0 + 150, 150.0, T0)
    assert (first["hung_up_first"], first["hangup_cause"]) == ("caller", "16")
    assert (first["agent"], first["rings"], first["answered_at"], first["silent_stage"]) == (
        "1002", 1, T0 + 21, "speech")
    assert (first["hold_count"], first["hold_seconds"], first["transfer_state"]) == (2, 95.0, "completed")
    assert [(h["started_at"], h["ended_at"], h["duration"], h["reminders"], h["choice"], h["outcome"])
            for h in first["holds"]] == [(T0 + 30, T0 + 95, 65.0, 1, "keep", "resumed"),
                                         (T0 + 120, T0 + 150, 30.0, 0, None, "ended")]
    assert [(t["target"], t["state"], t["started_at"], t["updated_at"], t["finished"])
            for t in first["transfers"]] == [("2001", "completed", T0 + 100, T0 + 110, 1)]
    assert [(r["agent"], r["started_at"], r["ended_at"], r["rings"], r["outcome"])
            for r in first["ring_legs"]] == [("1001", T0 + 2, T0 + 17, 3, "noanswer"),
                                             ("1002", T0 + 17, T0 + 21, 1, "answered")]


async def test_the_standbys_end_before_the_leaders_resume(db_url: str) -> None:  # noqa: F811 - fixture
    """The defect of issue 17's pairs: the standby's ``call.ended`` written before the
    leader's ``hold.resume``. The hold is closed ``resumed`` with its 65 s (it was closed
    ``ended`` with 120 s, the resume ignored); a resume after the end is counted, not applied."""
    store = await CallStore.open(db_url, switch="east")
    try:
        bus = EventBus(switch="east")
        start = CallEvent("hold.start", "sw-5.1", {}, at=T0 + 30)
        ended = bus.fact("call.ended", "sw-5.1", ("call.ended",), at=T0 + 150, hung_up_first="caller")
        resume = bus.keyed("hold.resume", "sw-5.1", action_key("sw-5.1", "hold", "thanks1"), at=T0 + 95,
                           held_seconds=65.0)
        for event in (start, ended, resume):
            await store.apply(event)
        call = await store.call("sw-5.1")
        assert call is not None
        assert [(h["outcome"], h["ended_at"], h["duration"]) for h in call["holds"]] == [
            ("resumed", T0 + 95, 65.0)]
        assert (call["hold_count"], call["hold_seconds"], call["state"]) == (1, 65.0, "ended")
        late = bus.keyed("hold.resume", "sw-5.1", action_key("sw-5.1", "hold", "thanks2"), at=T0 + 151)
        assert await store.apply(late) is True  # on record in the event log, figures unchanged
        again = await store.call("sw-5.1")
        assert again is not None and again["holds"] == call["holds"] and again["hold_seconds"] == 65.0
        assert store.after_end == {"hold.resume": 1}
    finally:
        await store.close()


async def test_two_nodes_racing_end_and_resume(db_url: str) -> None:  # noqa: F811 - fixture
    """Two stores on one database: the leader writes the resume while the standby writes
    the end, at the same moment, for 12 calls: every hold is closed ``resumed`` (on
    PostgreSQL each write holds its call's row until it commits, so the second reads the
    first's event)."""
    leader, standby = await CallStore.open(db_url, switch="east"), await CallStore.open(db_url, switch="east")
    try:
        calls = [f"sw-{n}.7" for n in range(12)]
        for call_id in calls:
            await leader.apply(CallEvent("hold.start", call_id, {}, at=T0 + 30))
        bus = EventBus(switch="east")
        await asyncio.gather(*(
            w for call_id in calls for w in (
                leader.apply(bus.keyed("hold.resume", call_id, action_key(call_id, "hold", "thanks1"),
                                       at=T0 + 95, held_seconds=65.0)),
                standby.apply(bus.fact("call.ended", call_id, ("call.ended",), at=T0 + 150)))))
        holds = await leader.db.fetchall("SELECT outcome, duration FROM holds ORDER BY call_id")
        assert holds == [{"outcome": "resumed", "duration": 65.0}] * len(calls)
        sums = await leader.db.fetchall("SELECT hold_count, hold_seconds FROM calls")
        assert sums == [{"hold_count": 1, "hold_seconds": 65.0}] * len(calls)
    finally:
        await leader.close()
        await standby.close()


async def test_a_transfer_finished_after_the_end_keeps_one_row(db_url: str) -> None:  # noqa: F811 - fixture
    """A transfer's last state written after the call's end (the caller hung up while the
    target rang: the service says ``abandoned`` once it hears of it) updates its row; it
    made a second row before."""
    store = await CallStore.open(db_url)
    try:
        for event in (CallEvent("transfer.state", "1.9", {"state": "offered", "target": "2001"}, at=T0 + 1),
                      CallEvent("call.ended", "1.9", {"hung_up_first": "caller"}, at=T0 + 5),
                      CallEvent("transfer.state", "1.9", {"state": "abandoned"}, at=T0 + 5.2),
                      CallEvent("transfer.state", "1.9", {"state": "offered", "target": "2002"}, at=T0 + 6)):
            await store.apply(event)
        call = await store.call("1.9")
        assert call is not None
        assert [(t["target"], t["state"], t["finished"]) for t in call["transfers"]] == [
            ("2001", "abandoned", 1)]
        assert call["transfer_state"] == "abandoned" and store.after_end == {"transfer.state": 1}
    finally:
        await store.close()


@pytest.mark.parametrize(("kind", "outcome"), [("hold.abandon", "abandoned"), ("message.recorded", "message"),
                                               ("callback.requested", "callback")])
def test_the_callers_own_leaving_seen_after_the_end_says_how_the_hold_ended(kind: str, outcome: str) -> None:
    """The caller's hang-up on hold, a message or a call-back are seen just after the
    hang-up that ends the call: they close the hold with their outcome, at the end; a
    resume then is after the end. A call-back asked for through the API closes nothing."""
    start = Logged("a", "hold.start", T0, {})
    left = Logged("b", kind, T0 + 40.2, {"held_seconds": 40.0})
    holds, after = fold_holds([start, left], T0 + 40)
    assert [(h["outcome"], h["ended_at"], h["duration"]) for h in holds] == [(outcome, T0 + 40, 40.0)]
    assert after == []
    api = Logged("d", "callback.requested", T0 + 10, {"via": "api"})  # the agent's, through the API
    holds, after = fold_holds([start, api, Logged("c", "hold.resume", T0 + 40.2, {})], T0 + 40)
    assert [(h["outcome"], h["duration"]) for h in holds] == [("ended", 40.0)] and [e.id for e in after] == ["c"]


async def test_the_leaders_spool_written_after_the_standbys_end(tmp_path: Path) -> None:
    """The leader's database was away (locked) while its hold was resumed: it spooled the
    start, the resume and a resume 1 s after the end, and writes them once back, after the
    standby wrote the call's end. The hold is closed ``resumed``; the late resume counted in
    ``/healthz`` ``records.after_end``."""
    db = tmp_path / "ivr.db"
    standby = await CallStore.open(f"sqlite:///{db}", switch="east")
    try:
        await standby.apply(EventBus(switch="east").fact("call.ended", "sw-8.1", ("call.ended",), at=T0 + 150))
    finally:
        await standby.close()
    bus = EventBus(switch="east")
    counted: list[str] = []  # what the controller hands to ivr_records_after_end_total{kind}
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path, switch="east", on_after_end=counted.append)
    with locked(db):
        await keeper.start()
        await keeper.recorder.wait_state("down", BOUND)
        bus.publish(CallEvent("hold.start", "sw-8.1", {}, at=T0 + 30))
        bus.keyed("hold.resume", "sw-8.1", action_key("sw-8.1", "hold", "thanks1"), at=T0 + 95, held_seconds=65.0)
        bus.keyed("hold.resume", "sw-8.1", action_key("sw-8.1", "hold", "thanks2"), at=T0 + 151)
        await until(lambda: keeper.spool is not None and keeper.spool.pending >= 3, BOUND,
                    "the three events spooled while the database is locked")
    try:
        store = await keeper.wait_open(BOUND)
        call = await store.call("sw-8.1")
        assert call is not None
        assert [(h["outcome"], h["duration"]) for h in call["holds"]] == [("resumed", 65.0)]
        status = keeper.status()
        assert (status["written"], status["after_end"], status["dropped"]) == (3, 1, 0)
        assert counted == ["hold.resume"]
    finally:
        await keeper.stop()


async def test_two_answers_the_call_keeps_the_later_whichever_is_written_last(db_url: str) -> None:  # noqa: F811
    """The caller answered by 1001 after 5 rings, back in the queue (a failed transfer),
    answered by 1002 after 1: the call's rings, answer time and "within three" are the later
    answer's, in either order of writing."""
    bus = EventBus(switch="east")

    def answers(call_id: str) -> tuple[CallEvent, CallEvent]:
        return (bus.fact("ring.answered", call_id, (f"{call_id}-L1", "ring.end"), at=T0 + 20, agent="1001",
                         uniqueid=f"{call_id}-L1", rings=5, within_three=False),
                bus.fact("ring.answered", call_id, (f"{call_id}-L2", "ring.end"), at=T0 + 90, agent="1002",
                         uniqueid=f"{call_id}-L2", rings=1, within_three=True))

    store = await CallStore.open(db_url, switch="east")
    try:
        rows = []
        for call_id, reverse in (("sw-9.1", False), ("sw-9.2", True)):
            first, second = answers(call_id)
            for event in ((second, first) if reverse else (first, second)):
                await store.apply(event)
            call = await store.call(call_id)
            assert call is not None
            rows.append((call["rings"], call["answered_at"], bool(call["within_three"])))
    finally:
        await store.close()
    assert rows == [(1, T0 + 90, True), (1, T0 + 90, True)], rows
