"""Issue 17 follow-up: the leader's own records (a hold's start, a transfer's states, an
unclear line's start, the greeting) survive its death, or are counted. The leader records
them under ids made of switch data (``EventBus.decided``); the node that takes the state
over from the switch writes what that state proves under the same ids, so the two writes
are one record (the second a counted duplicate); what it cannot rebuild is
``record.unrebuilt``, counted lost (``leader_died``) only when it is not on record.

Two nodes here are two services with their own fake switch link, clock and bus, and the
records one store for both (SQLite: the store's SQL is the same on PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.ami.channels import ChannelTracker
from ivr.events import UNREBUILT, CallEvent, EventBus
from ivr.flows.inbound import InboundFlow
from ivr.flows.speech import TalkDetector
from ivr.hold import HoldService, HoldSettings
from ivr.metrics import Metrics
from ivr.records import CallStore
from ivr.sections import ClusterConfig, Config, SilenceConfig
from ivr.timers import TimerService
from ivr.transfer import take_over
from ivr.transfer.service import TransferService
from ivr.transfer.settings import TransferSettings
from ivr.unclear import UnclearService
from ivr.unclear.session import UnclearSettings
from tests.fakes import AsideAmi, BusLog, Clock, FakeAgi, RecordingAmi, until
from tests.unit.test_hold_service import advance, start_held
from tests.unit.test_inbound import AFTERNOON, PAUSE, MemoryOnce
from tests.unit.test_records_outage import BOUND, keeper_for
from tests.unit.test_takeover_speech import GREETING_END, SWITCH0, SwitchCall
from tests.unit.test_transfer_service import AGENTS
from tests.unit.test_transfer_service import FakeAmi as TransferAmi
from tests.unit.test_unclear_service import FakeAmi as UnclearAmi

CALLER, AGENT = "100.1", "100.3"
WALL = 1.7e9
SWITCH = "east"


def on_bus(events: BusLog, kind: str) -> list[CallEvent]:
    return [e for e in events if e.kind == kind]


Closers = list[Callable[[], Any]]


@pytest.fixture
async def closers() -> AsyncIterator[Closers]:
    """What each node built here needs closed at the end (its service, timers, bus log)."""
    todo: Closers = []
    yield todo
    for close in reversed(todo):
        result = close()
        if asyncio.iscoroutine(result):
            await result


def bridged(tracker: ChannelTracker) -> None:
    for uid, name in ((CALLER, "Local/c@x-00000001;1"), (AGENT, "PJSIP/1001-00000002")):
        tracker.handle({"Event": "BridgeEnter", "Uniqueid": uid, "Linkedid": CALLER, "Channel": name,
                        "BridgeUniqueid": "b1", "Context": "ivr-agents"})


def hold_node(tmp_path: Path, wall: float, closers: Closers) -> tuple[AsideAmi, HoldService, Clock, TimerService,
                                                                      BusLog]:
    ami, tracker, clock = AsideAmi("Local/keep@ivr-hold-00000009;1"), ChannelTracker(), Clock()
    timers, bus = TimerService(clock), EventBus(switch=SWITCH)
    settings = HoldSettings(language="en-US", messages_dir=tmp_path / "messages",
                            agents={"PJSIP/1001": "Alice"}, announce=False)
    service = HoldService(ami, tracker, timers, settings, bus=bus, wall=lambda: wall)
    tracker.attach(ami)
    service.attach()
    bridged(tracker)
    events = BusLog(bus)
    closers.extend([timers.close, service.close, events.close])
    return ami, service, clock, timers, events


async def store_of(path: Path) -> CallStore:
    return await CallStore.open(f"sqlite:///{path}", switch=SWITCH)


async def write(store: CallStore, events: list[CallEvent]) -> list[bool]:
    return [await store.apply(e) for e in events]


# -- hold ---------------------------------------------------------------------------------
async def test_a_hold_taken_over_is_recorded_once_whether_or_not_the_dead_leader_wrote_it(
        tmp_path: Path, closers: Closers) -> None:
    """The leader holds the caller 61 s (the choices offered at 60 s, the caller presses 1
    to wait on) and dies. The next node takes the hold over from IVR_STAGE and the keeper on
    the switch, and writes the hold's start (at the start IVR_STAGE keeps, with its trigger),
    its choices and the caller's choice under the leader's own ids: with the leader's writes
    on record they are duplicates (skipped, counted); without them, the hold is on record
    all the same, from its true start, with what the caller chose."""
    ami, leader, clock, timers, led = hold_node(tmp_path, WALL, closers)
    agi, task = await start_held(ami, leader)
    await advance(clock, timers, 61)
    await until(lambda: agi.played() == ["hold_choices"])
    agi.press("1")
    await until(lambda: agi.variables["IVR_STAGE"].endswith("@keep"))
    stage, keeper = agi.variables["IVR_STAGE"], leader.sessions[CALLER].keeper
    assert stage == f"hold@{WALL:.3f}@2@1@api@keep"
    task.cancel()  # the leader dies

    ami2, successor, *_, took = hold_node(tmp_path, WALL + 70, closers)
    successor.tracker.handle({"Event": "BridgeEnter", "Uniqueid": keeper, "Linkedid": keeper,
                              "Channel": "Local/keep@ivr-hold-00000009;1", "BridgeUniqueid": "b1"})
    agi2 = FakeAgi(CALLER)
    agi2.variables.update(IVR_STAGE=stage, IVR_HOLD_AGENT="PJSIP/1001-00000002")
    ami2.agi = agi2
    task2 = asyncio.ensure_future(successor.agi_hold(agi2))
    closers.append(task2.cancel)
    await until(lambda: bool(on_bus(took, "hold.choice")))

    (start,), (choices,), (chose,) = (on_bus(led, k) for k in ("hold.start", "hold.choices", "hold.choice"))
    (start2,), (choices2,), (chose2,) = (on_bus(took, k) for k in ("hold.start", "hold.choices", "hold.choice"))
    assert (start2.id, choices2.id, chose2.id) == (start.id, choices.id, chose.id)
    assert (start2.at, choices2.at, chose2.at) == (WALL, WALL + 60, WALL + 60) and start.at == WALL
    assert start2.data["rebuilt"] is True and start2.origin == "node"  # recorded while leading
    assert start2.data["via"] == start.data["via"] == "api"  # the trigger, not "takeover"
    assert chose2.data["choice"] == chose.data["choice"] == "keep" and successor.sessions[CALLER].choice == "keep"

    both = await store_of(tmp_path / "both.db")
    only_new = await store_of(tmp_path / "new.db")
    try:
        assert await write(both, [start, choices, chose]) == [True, True, True]
        assert await write(both, [start2, choices2, chose2]) == [False] * 3  # the recorder counts them duplicates
        assert await write(only_new, [start2, choices2, chose2]) == [True, True, True]
        for store in (both, only_new):
            call = await store.call(CALLER)
            assert call is not None
            [hold] = call["holds"]
            assert (hold["started_at"], hold["choices_offered"], hold["choice"], hold["hold_id"]) == (
                WALL, 1, "keep", start.id)
    finally:
        await both.close()
        await only_new.close()


# -- unclear line -------------------------------------------------------------------------
async def test_an_unclear_line_taken_over_is_recorded_under_the_leaders_id(closers: Closers) -> None:
    """The leader takes the caller aside (unclear.start) and dies; the next node goes on
    from IVR_STAGE and writes the start again, under the same id, at the start kept there."""
    ami, tracker = UnclearAmi(), ChannelTracker()
    bus = EventBus(switch=SWITCH)
    leader = UnclearService(ami, tracker, UnclearSettings(agents={"PJSIP/1001": "Alice"}), bus=bus,
                            clock=Clock(), wall=lambda: WALL)
    tracker.attach(ami)
    leader.attach()
    bridged(tracker)
    led = BusLog(bus)
    closers.extend([leader.close, led.close])
    await leader.start(CALLER, "faint")
    keeper = leader.sessions[CALLER].keeper
    (start,) = on_bus(led, "unclear.start")

    ami2, tracker2, clock2 = UnclearAmi(), ChannelTracker(), Clock()
    bus2 = EventBus(switch=SWITCH)
    successor = UnclearService(ami2, tracker2, UnclearSettings(agents={"PJSIP/1001": "Alice"}), bus=bus2,
                               clock=clock2, wall=lambda: WALL + 8)
    tracker2.attach(ami2)
    successor.attach()
    bridged(tracker2)
    tracker2.handle({"Event": "BridgeEnter", "Uniqueid": keeper, "Linkedid": keeper,
                     "Channel": "Local/keep@ivr-unclear-00000009;1", "BridgeUniqueid": "b1"})
    took = BusLog(bus2)
    closers.extend([successor.close, took.close])
    agi = FakeAgi(CALLER, channel="Local/c@x-00000001;1", clock=clock2, prompt_s=1.0)
    agi.variables.update(IVR_STAGE=f"unclear@{WALL + 0.2:.3f}@faint@pause1@{WALL + 5:.3f}",
                         IVR_UNCLEAR_AGENT="PJSIP/1001-00000002")
    ami2.agi = agi
    task = asyncio.ensure_future(successor.agi_unclear(agi))
    closers.append(task.cancel)
    await until(lambda: bool(on_bus(took, "unclear.start")))
    (start2,) = on_bus(took, "unclear.start")
    assert start2.id == start.id and start2.at == WALL + 0.2 and start2.data["rebuilt"] is True


# -- transfer -----------------------------------------------------------------------------
def transfer_node(closers: Closers) -> tuple[TransferService, TransferAmi]:
    clock = Clock(100.0)
    timers, ami = TimerService(clock=clock), TransferAmi()
    service = TransferService(ami, TransferSettings(sounds="ivr/en-US", ring_limit=20, confirm_timeout=10,
                                                    agents=AGENTS), timers=timers, bus=EventBus(switch=SWITCH))
    service.attach()
    closers.extend([timers.close, service.close])
    return service, ami


@pytest.mark.parametrize(("target", "proven"), [("5", ["offered", "ringing"]), ("6", ["offered", "answered"]),
                                                (None, ["offered"])])
async def test_a_transfer_taken_over_records_the_states_the_switch_proves(
        tmp_path: Path, closers: Closers, target: str | None, proven: list[str]) -> None:
    """The leader offers a transfer, the target rings, the leader dies. The new leader finds
    the caller waiting (offered since IVR_XFER_T0) and the target leg ringing or up (or
    none), and records those states under the leader's ids: one transfer row, whichever
    node's writes land."""
    leader, ami = transfer_node(closers)
    led = BusLog(leader.bus)
    closers.append(led.close)
    xfer = await leader.transfer("c1", "1002")
    ami.event(Event="Newstate", Uniqueid=xfer.target_uid, ChannelState="5")
    await until(lambda: len(on_bus(led, "transfer.state")) == 2)
    offered, ringing = on_bus(led, "transfer.state")
    assert (offered.data["state"], ringing.data["state"]) == ("offered", "ringing")
    t0 = str(int(offered.at))  # what [ivr-transfer-wait] set (${EPOCH}) as the caller began to wait

    successor, ami2 = transfer_node(closers)
    took = BusLog(successor.bus)
    closers.append(took.close)
    rows = [{**r, "Context": ctx, "BridgeId": ""} for r, ctx in
            ((ami.rows[0], "ivr-transfer-wait"), (ami.rows[1], "ivr-transfer-agent"))]
    if target is not None:
        rows.append({"Event": "CoreShowChannel", "Uniqueid": xfer.target_uid, "Linkedid": xfer.target_uid,
                     "Channel": "PJSIP/1002-00000009", "ChannelState": target, "Context": "ivr-transfer-target"})
    else:  # gone: this node saw it (dialled, then ended)
        successor.legs.saw({"Event": "Newchannel", "Uniqueid": xfer.target_uid})
    ami2.rows = rows
    values = {"IVR_XFER_ID": xfer.id, "IVR_XFER_TO": "1002", "IVR_XFER_AGENT": "PJSIP/1001-00000002",
              "IVR_XFER_T0": t0}
    ami2.replies["Getvar"] = lambda action: {"Response": "Success", "Value": values.get(action["Variable"], "")}
    assert await take_over(successor, wall=lambda: int(t0) + 5.0) == [xfer.id]
    rebuilt = [e for e in on_bus(took, "transfer.state") if e.data.get("rebuilt")]
    assert [e.data["state"] for e in rebuilt] == proven
    ids = {e.data["state"]: e.id for e in (offered, ringing)}
    for e in rebuilt:
        assert e.id == successor.bus.decided_id("c1", (xfer.id, e.data["state"]))
        assert e.id == ids.get(e.data["state"], e.id)  # the leader's id where the leader had it
    assert rebuilt[0].at == int(t0)

    store = await store_of(tmp_path / "r.db")
    try:
        assert await write(store, [offered]) == [True]  # the leader's last write before it died
        assert await write(store, rebuilt) == [False] + [True] * (len(rebuilt) - 1)
        call = await store.call("c1")
        assert call is not None
        [row] = call["transfers"]
        assert (row["transfer_id"], row["state"]) == (offered.id, proven[-1])
    finally:
        await store.close()


# -- the greeting of a silent-call script --------------------------------------------------
def inbound_node(call: SwitchCall, once: MemoryOnce, bus: EventBus) -> InboundFlow:
    config = Config(silence=SilenceConfig(pause=PAUSE), cluster=ClusterConfig(node="n"))
    return InboundFlow(config, lambda: datetime(2027, 3, 10, 15), clock=call.clock, once=once, bus=bus,
                       speech=TalkDetector(RecordingAmi()),
                       choose_greeting=lambda _at, _cfg: AFTERNOON, wall=lambda: SWITCH0 + call.clock.t)


@pytest.mark.parametrize(("die_at", "rebuilt"), [(GREETING_END + 0.2, True), (GREETING_END + PAUSE + 2.5, False)])
async def test_a_script_taken_over_records_its_greeting_or_says_it_cannot(die_at: float, rebuilt: bool) -> None:
    """Killed in the pause after the greeting: the next node records greeting.played under
    the leader's id, at the stage's time, with the prompts the call kept (IVR_GREETING).
    Killed later: when the greeting was played is not kept, so it asks the records to count
    it lost if the leader did not write it (record.unrebuilt, naming the leader's id)."""
    call, once = SwitchCall(Clock(0.0)), MemoryOnce()
    call.die_at = die_at
    first, second = EventBus(switch=SWITCH), EventBus(switch=SWITCH)
    led, took = BusLog(first), BusLog(second)
    with pytest.raises(ConnectionError):
        await inbound_node(call, once, first)(call)
    await inbound_node(call, once, second)(call)
    led.close()
    took.close()
    (played,) = on_bus(led, "greeting.played")
    if rebuilt:
        (again,) = on_bus(took, "greeting.played")
        assert again.id == played.id and again.data["prompts"] == played.data["prompts"] == ["hello", "welcome"]
        assert again.at == pytest.approx(SWITCH0 + GREETING_END, abs=0.01) and not on_bus(took, UNREBUILT)
    else:
        (lost,) = on_bus(took, UNREBUILT)
        assert not on_bus(took, "greeting.played")
        assert (lost.data["missing"], lost.data["event_id"]) == ("greeting.played", played.id)


# -- what cannot be rebuilt is counted, once, only when it is missing ------------------------
async def test_an_unrebuilt_record_is_counted_lost_only_when_not_on_record(tmp_path: Path) -> None:
    """record.unrebuilt through the records keeper: the leader's greeting on record, nothing
    is counted; not on record, it is counted once in ivr_records_dropped_total
    (reason leader_died) and /healthz, and written twice (two nodes) it is counted once."""
    bus, metrics = EventBus(switch=SWITCH), Metrics()
    keeper = keeper_for(f"sqlite:///{tmp_path / 'r.db'}", bus, tmp_path, metrics=metrics)
    await keeper.start()
    try:
        await keeper.wait_open(BOUND)
        on = ("1.1", "greeting.played")
        bus.decided("greeting.played", "1.1", on, at=WALL, prompts=["hello"])
        bus.unrebuilt("greeting.played", "1.1", on, reason="greeting-time-unknown")
        lost_on = ("2.1", "greeting.played")
        bus.unrebuilt("greeting.played", "2.1", lost_on, reason="greeting-time-unknown")
        bus.unrebuilt("greeting.played", "2.1", lost_on, reason="greeting-time-unknown")  # a second node
        await keeper.recorder.wait_applied(4, BOUND)
        assert keeper.recorder.duplicates == 1
        assert keeper.status()["dropped_by_reason"] == {"leader_died": 1}
        assert metrics.value("ivr_records_dropped_total", {"reason": "leader_died"}) == 1
        assert keeper.store is not None and keeper.store.lost == {"greeting.played": 1}
    finally:
        await keeper.stop()
