"""Issue 17, nothing lost across a leader's death: every node of a pair records what the
switch reports (switch facts) under ids made of the switch's own data, and the actions it
sent under their once keys; the records keep each once (insert-if-absent), and count what
they skipped. SQLite and PostgreSQL (the ``db_url`` fixture of test_records)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.alarms.sinks import RecordSink, RingAlarmNotice, alarm_key
from ivr.ami.channels import ChannelTracker
from ivr.events import ACTION, NODE, SWITCH, CallEvent, EventBus, event_id
from ivr.once import action_key
from ivr.records import CallRecorder, CallStore
from ivr.records.spool import decode, encode
from ivr.rings import RingMonitor, RingSettings
from ivr.rules.rings import Cadence
from ivr.timers import TimerService
from tests.fakes import Clock, RecordingAmi, until
from tests.unit.test_records import db_url, postgres  # noqa: F401 - fixtures
from tests.unit.test_records_outage import BOUND, keeper_for, locked

T0 = 1_760_000_000.0
LEG = {"Uniqueid": "sw-100.1", "Linkedid": "sw-100.1", "Channel": "Local/x@c-00000001;1",
       "Context": "ivr-agents", "DestUniqueid": "sw-100.2", "DestLinkedid": "sw-100.1",
       "DestChannel": "PJSIP/1001-00000002"}


class Recording(EventBus):
    def __init__(self, switch: str) -> None:
        super().__init__(switch=switch)
        self.published: list[CallEvent] = []

    def publish(self, event: CallEvent) -> None:
        self.published.append(event)
        super().publish(event)


def test_ids_come_from_the_switch_and_its_data_only() -> None:
    assert event_id("east", "fact", "sw-1.1", "call.ended") == event_id("east", "fact", "sw-1.1", "call.ended")
    assert event_id("east", "fact", "sw-1.1", "call.ended") != event_id("west", "fact", "sw-1.1", "call.ended")
    assert event_id("east", "a", "bc") != event_id("east", "ab", "c")  # parts are kept apart
    a, b = EventBus(switch="east"), EventBus(switch="east")
    fa, fb = a.fact("ring.started", "sw-1.1", ("sw-1.2", "ring.started")), b.fact(
        "ring.started", "sw-1.1", ("sw-1.2", "ring.started"))
    assert fa.id == fb.id and fa.origin == SWITCH and len(fa.id) == 32
    key = action_key("sw-1.1", "silent", "prompt2")
    ka, kb = a.keyed("silent.stage", "sw-1.1", key), b.keyed("silent.stage", "sw-1.1", key)
    assert ka.id == kb.id and ka.origin == ACTION
    assert a.keyed("call.released", "sw-1.1", key).id != ka.id  # two kinds under one key
    assert a.emit("ring.reroute", "sw-1.1").origin == NODE
    assert a.emit("ring.reroute", "sw-1.1").id != a.emit("ring.reroute", "sw-1.1").id


def _monitor(bus: EventBus, clock: Clock) -> RingMonitor:
    settings = RingSettings(Cadence(1000, 4000), agents={"PJSIP/1001": "1001"})
    return RingMonitor(RecordingAmi(), ChannelTracker(), TimerService(clock=clock), settings, bus=bus,  # type: ignore[arg-type]  # the in-process AMI
                       wall=clock, sinks=[RecordSink(bus)])


async def test_two_nodes_following_the_same_ring_make_the_same_fact_ids() -> None:
    """Leader and standby follow one agent leg (the same AMI events), each on its own
    clock: ring.started and ring.answered have the same ids and the switch's times; the
    alarm a node sends is recorded under its once key."""
    runs = []
    for offset in (0.0, 7.5):  # the two nodes' clocks disagree
        clock = Clock(T0 + offset)
        bus = Recording("east")
        monitor = _monitor(bus, clock)
        monitor._dial_begin({**LEG, "Timestamp": f"{T0:.6f}", "DestChannelState": "5"})
        clock.advance(16.0)  # past the warning (3 rings of 5 s)
        await monitor.timers.settle()
        monitor._newstate({"Uniqueid": LEG["DestUniqueid"], "ChannelState": "6", "Timestamp": f"{T0 + 16:.6f}"})
        runs.append([(e.kind, e.id, e.origin, round(e.at, 3)) for e in bus.published])
        await monitor.timers.close()
    a, b = runs
    assert [k for k, *_ in a] == ["ring.started", "ring.alarm", "ring.answered"], a
    assert [(k, i, o) for k, i, o, _ in a] == [(k, i, o) for k, i, o, _ in b]
    started, alarm, answered = a
    assert started[2] == SWITCH and answered[2] == SWITCH and alarm[2] == ACTION
    assert started[3] == round(T0, 3)  # the switch's time, whichever node's clock
    notice = RingAlarmNotice("1001", LEG["DestChannel"], LEG["DestUniqueid"], LEG["Linkedid"], 3, "warning")
    assert alarm[1] == event_id("east", "action", alarm_key(notice), "ring.alarm")


def test_the_spool_keeps_the_ids() -> None:
    bus = EventBus(switch="east")
    fact = bus.fact("call.ended", "sw-1.1", ("call.ended",), at=T0, hung_up_first="caller")
    back = decode(encode(fact))
    assert back is not None and (back.id, back.kind, back.at, back.data) == (fact.id, fact.kind, fact.at, fact.data)


def _call(bus: EventBus, call_id: str = "sw-1.1") -> list[CallEvent]:
    """One call's switch facts, as each node of a pair makes them."""
    leg = ("sw-1.2",)
    return [
        bus.fact("call.started", call_id, ("call.started",), at=T0, caller="555", channel="PJSIP/trunk-1"),
        bus.fact("ring.started", call_id, (*leg, "ring.started"), at=T0 + 2, agent="1001"),
        bus.fact("ring.answered", call_id, (*leg, "ring.end"), at=T0 + 6, agent="1001", rings=2,
                 within_three=True, late=False),
        bus.fact("call.ended", call_id, ("call.ended",), at=T0 + 60, hung_up_first="caller", cause="16",
                 started_at=T0),
    ]


async def test_two_nodes_write_the_same_facts_once_each(db_url: str) -> None:  # noqa: F811 - fixture
    """Two stores on one database (the two nodes of a pair), the same facts from each,
    each node in the order it saw them, the two racing on each: each event once, the
    figures once, the call row complete; the second write of each says False."""
    a, b = await CallStore.open(db_url, switch="east"), await CallStore.open(db_url, switch="east")
    try:
        ours, theirs = _call(EventBus(switch="east")), _call(EventBus(switch="east"))
        assert await a.apply(ours[0]) is True
        assert await b.apply(theirs[0]) is False
        for mine, other in zip(ours[1:], theirs[1:], strict=True):  # each node in its own order
            assert sorted(await asyncio.gather(a.apply(mine), b.apply(other))) == [False, True]
        rows = await a.db.fetchall("SELECT kind FROM call_events WHERE call_id = ? ORDER BY at", ("sw-1.1",))
        assert [r["kind"] for r in rows] == ["call.started", "ring.started", "ring.answered", "call.ended"]
        legs = await a.db.fetchall("SELECT outcome, rings FROM ring_legs WHERE call_id = ?", ("sw-1.1",))
        assert legs == [{"outcome": "answered", "rings": 2}]
        call = await a.db.fetchone("SELECT * FROM calls WHERE call_id = ?", ("sw-1.1",))
        assert call is not None
        assert (call["arrived_at"], call["caller"], call["channel"], call["agent"], call["answered_at"]) == (
            T0, "555", "PJSIP/trunk-1", "1001", T0 + 6)
        assert (call["state"], call["ended_at"], call["duration"], call["hung_up_first"], call["hangup_cause"]) == (
            "ended", T0 + 60, 60.0, "caller", "16")
        # a batch (a spool replayed) with both nodes' copies: once each, too
        assert await b.apply_many(_call(EventBus(switch="east"), "sw-2.1") * 2) == [True] * 4 + [False] * 4
    finally:
        await a.close()
        await b.close()


async def test_a_standby_records_switch_facts_and_what_it_sent_and_counts_duplicates(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}", switch="east")
    bus, leading = EventBus(switch="east"), [False]
    counted: list[int] = []
    recorder = CallRecorder(store, bus, accept=lambda: leading[0], on_duplicate=counted.append)
    await recorder.start()
    try:
        bus.emit("ring.reroute", "sw-1.1", agent="1001")  # the leader's decision: not the standby's to record
        facts = _call(bus)
        bus.keyed("silent.stage", "sw-1.1", action_key("sw-1.1", "silent", "prompt3"), stage="3")
        for ev in _call(EventBus(switch="east")):  # the other node's copies, written here too
            bus.publish(ev)
        await recorder.wait_applied(len(facts) * 2 + 1)
        kinds = [r["kind"] for r in await store.db.fetchall("SELECT kind FROM call_events ORDER BY at")]
        assert sorted(kinds) == sorted([*(f.kind for f in facts), "silent.stage"])
        assert recorder.status()["duplicates"] == 4 and sum(counted) == 4
        leading[0] = True
        bus.emit("ring.reroute", "sw-1.1", agent="1001")  # the leader's own: recorded
        await recorder.wait_applied(len(facts) * 2 + 2)
        assert await store.db.fetchone("SELECT 1 AS x FROM call_events WHERE kind = 'ring.reroute'")
    finally:
        await recorder.stop()
        await store.close()


async def test_a_standby_with_its_database_away_spools_the_facts_under_their_ids(tmp_path: Path) -> None:
    """The spool path: the standby's database is away (locked) while the facts come; it
    spools them with their ids and, once back, skips what the other node wrote meanwhile
    (counted) and writes the rest: each fact once."""
    db = tmp_path / "ivr.db"
    a = await CallStore.open(f"sqlite:///{db}", switch="east")
    try:
        for ev in _call(EventBus(switch="east"))[:2]:  # the leader wrote the first two
            assert await a.apply(ev) is True
    finally:
        await a.close()
    bus = EventBus(switch="east")
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path, accept=lambda: False, switch="east")
    with locked(db):
        await keeper.start()
        facts = _call(bus)
        bus.emit("ring.reroute", "sw-1.1")  # the leader's own decision: not spooled by a standby
        await keeper.recorder.wait_state("down", BOUND)
        await until(lambda: keeper.status()["spooled"] == len(facts), BOUND, "the facts spooled")
        assert keeper.status()["spooled"] == len(facts)
    try:
        store = await keeper.wait_open(BOUND)
        rows = await store.db.fetchall("SELECT event_id FROM call_events ORDER BY at")
        assert [r["event_id"] for r in rows] == [f.id for f in facts]
        status = keeper.status()
        assert (status["duplicates"], status["written"], status["spooled"], status["dropped"]) == (2, 2, 0, 0)
    finally:
        await keeper.stop()


def test_a_deadlock_between_two_nodes_is_tried_again_not_an_outage() -> None:
    """Two nodes writing the same call's rows in another order may deadlock in PostgreSQL;
    it rolls one back: that write is tried again at once (not transient: the pool stays
    open, nothing goes to the spool)."""
    import asyncpg

    from ivr.records.db import translate

    err = translate(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert err is not None and err.reason == "conflict" and not err.transient
