"""Call records when a part fails: calls that ended during an AMI outage are closed,
queued events are written at stop (bounded), and a database that is down at start is
tried again until it opens."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ivr.ami.channels import Channel
from ivr.ami.connection import Backoff
from ivr.events import CallEvent, EventBus
from ivr.hangups import HangupTracker
from ivr.records import CallRecorder, CallStore, DatabaseError
from ivr.records.keeper import RecordsKeeper
from ivr.sections import DatabaseConfig
from tests.fakes import idle, until
from tests.unit.test_hangups import events, recording_bus

T0 = 1_760_000_000.0


def newchannels(linkedid: str, *uids: str, context: str = "ivr-inbound") -> list[dict[str, str]]:
    return [{"Event": "Newchannel", "Channel": f"Local/x-{u};1", "Uniqueid": u, "Linkedid": linkedid,
             "Context": context, "Timestamp": str(T0)} for u in uids]


# -- HangupTracker.reconcile ---------------------------------------------------------

def test_a_call_whose_channels_vanished_is_closed_as_unknown() -> None:
    bus, published = recording_bus(only="call.ended")
    tracker = HangupTracker(bus, clock=lambda: T0 + 60)
    for e in newchannels("1.0", "1.0", "1.1") + newchannels("2.0", "2.0"):
        tracker.on_event(e)
    closed = tracker.reconcile([Channel("2.0", "2.0", "Local/x-2.0;1")])
    assert closed == ["1.0"]
    (ended,) = published
    assert (ended.kind, ended.call_id, ended.at) == ("call.ended", "1.0", T0 + 60)
    assert ended.data == {"hung_up_first": "unknown", "reason": "ended-while-disconnected", "started_at": T0}
    assert list(tracker.calls) == ["2.0"]


def test_a_call_partly_gone_stays_open_and_ends_on_its_last_hangup() -> None:
    bus, published = recording_bus(only="call.ended")
    tracker = HangupTracker(bus)
    for e in newchannels("1.0", "1.0", "1.1"):
        tracker.on_event(e)
    # 1.1 vanished in the outage, 1.2 appeared meanwhile (its Newchannel was lost).
    assert tracker.reconcile([Channel("1.0", "1.0", "a"), Channel("1.2", "1.0", "b")]) == []
    tracker.on_event({"Event": "Hangup", "Uniqueid": "1.0", "Linkedid": "1.0", "Timestamp": str(T0 + 5)})
    assert published == []  # 1.2 is still up
    tracker.on_event({"Event": "Hangup", "Uniqueid": "1.2", "Linkedid": "1.0", "Timestamp": str(T0 + 6)})
    (ended,) = published
    assert ended.call_id == "1.0" and ended.data["hung_up_first"] == "system"


def test_recorded_calls_gone_from_the_switch_are_closed_and_live_ones_adopted() -> None:
    bus, published = recording_bus(only="call.ended")
    tracker = HangupTracker(bus, clock=lambda: T0)
    # Records left open by a previous controller: 7.0 is over, 8.0 still on the switch.
    closed = tracker.reconcile([Channel("8.0", "8.0", "Local/x-8.0;1")], ["7.0", "8.0", "7.0"])
    assert closed == ["7.0"] and [e.call_id for e in published] == ["7.0"]
    tracker.on_event({"Event": "Hangup", "Uniqueid": "8.0", "Linkedid": "8.0", "Context": "ivr-fallback",
                      "Timestamp": str(T0 + 9)})
    assert [e.call_id for e in published] == ["7.0", "8.0"]  # adopted: its hang-up closed it
    assert published[1].at == T0 + 9


def test_a_call_that_ended_normally_is_not_closed_twice() -> None:
    bus, published = recording_bus(only="call.ended")
    tracker = HangupTracker(bus)
    for e in events("caller_first"):
        tracker.on_event(e)
    (ended,) = published
    # Its record may still look open (the recorder is behind): no second call.ended.
    assert tracker.reconcile([], [ended.call_id]) == []
    assert len(published) == 1


def test_channels_that_are_not_calls_are_forgotten_silently() -> None:
    bus, published = recording_bus(only="call.ended")
    tracker = HangupTracker(bus)
    for e in newchannels("5.0", "5.0", context="test-other"):
        tracker.on_event(e)
    assert tracker.reconcile([]) == [] and published == [] and tracker.calls == {}


# -- the store keeps the first verdict --------------------------------------------------

async def test_the_first_call_ended_is_final(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        await store.apply(CallEvent("call.arrived", "1.0", {}, at=T0))
        await store.apply(CallEvent("call.arrived", "2.0", {}, at=T0))
        assert sorted(await store.open_calls()) == ["1.0", "2.0"]
        await store.apply(CallEvent("call.ended", "1.0", {"hung_up_first": "caller", "cause": "16"}, at=T0 + 30))
        await store.apply(CallEvent("call.ended", "1.0", {"hung_up_first": "unknown",
                                                          "reason": "ended-while-disconnected"}, at=T0 + 90))
        await store.apply(CallEvent("call.ended", "2.0", {"hung_up_first": "unknown",
                                                          "reason": "ended-while-disconnected"}, at=T0 + 90))
        one, two = await store.call("1.0"), await store.call("2.0")
        assert one is not None and two is not None
        assert (one["hung_up_first"], one["ended_at"], one["duration"]) == ("caller", T0 + 30, 30)
        assert len(one["events"]) == 3  # the late one is in the event log all the same
        assert (two["state"], two["hung_up_first"], two["ended_at"]) == ("ended", "unknown", T0 + 90)
        assert await store.open_calls() == []
    finally:
        await store.close()


# -- the recorder drains its queue at stop, with a bound ---------------------------------

class SlowStore:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.written: list[CallEvent] = []

    async def apply(self, event: CallEvent) -> None:
        await asyncio.sleep(self.delay)  # pacing: a database this slow to write
        self.written.append(event)


async def test_stop_writes_every_event_still_queued() -> None:
    bus, store = EventBus(), SlowStore(0.005)
    recorder = CallRecorder(store, bus)
    await recorder.start()
    sent = [bus.emit("call.arrived", f"{i}.0") for i in range(40)]
    await recorder.stop()  # at once: nearly all 40 are still queued
    assert store.written == sent and recorder.applied == 40
    assert bus.subscribers == 0


async def test_stop_gives_up_after_the_drain_timeout() -> None:
    bus, store = EventBus(), SlowStore(3600)
    recorder = CallRecorder(store, bus, drain_timeout=0.2)
    await recorder.start()
    bus.emit("call.arrived", "1.0")
    started = time.monotonic()
    await recorder.stop()
    assert time.monotonic() - started < 1.0
    assert store.written == [] and bus.subscribers == 0


async def test_stop_with_nothing_queued_is_quick() -> None:
    bus = EventBus()
    recorder = CallRecorder(SlowStore(0), bus)
    await recorder.start()
    started = time.monotonic()
    await recorder.stop()
    assert time.monotonic() - started < 0.5 and bus.subscribers == 0


async def test_events_wait_for_a_store_that_opens_later() -> None:
    bus, store = EventBus(), SlowStore(0)
    recorder = CallRecorder(None, bus)
    await recorder.start()
    sent = [bus.emit("call.arrived", "1.0"), bus.emit("call.ended", "1.0")]
    await idle()  # the recorder's task has gone as far as it can: waiting for a store
    assert recorder.applied == 0  # nothing can be written yet (and nothing is lost: below)
    recorder.use_store(store)
    await recorder.wait_applied(2)
    assert store.written == sent
    await recorder.stop()


# -- a database down at start is tried again ---------------------------------------------

async def test_records_resume_when_the_database_comes_back(tmp_path: Path) -> None:
    blocker = tmp_path / "not-yet"
    blocker.write_text("a file where the database directory must be")
    url = f"sqlite:///{blocker / 'ivr.db'}"
    bus = EventBus()
    opened: list[CallStore] = []
    keeper = RecordsKeeper(url, bus, backoff=Backoff(initial=0.02, maximum=0.05), on_open=opened.append,
                           settings=DatabaseConfig(spool_dir=str(tmp_path / "spool")))
    await keeper.start()
    try:
        with pytest.raises(DatabaseError, match=r"unavailable .*retrying"):
            await keeper.ping()
        bus.emit("call.arrived", "1.0", caller="13800000000")  # during the outage
        first = keeper.attempts
        await until(lambda: keeper.attempts >= first + 2, 5, "it keeps trying to open the database")
        assert keeper.store is None
        blocker.unlink()  # the database can be opened now
        store = await keeper.wait_open(5)
        assert opened == [store] and await keeper.ping() is True
        await keeper.recorder.wait_applied(1)
        call = await store.call("1.0")
        assert call is not None and call["caller"] == "13800000000"
        attempts = keeper.attempts
        bus.emit("call.ended", "1.0", hung_up_first="caller")
        await keeper.recorder.wait_applied(2)
        assert keeper.attempts == attempts  # no retries once open
    finally:
        await keeper.stop()
    assert keeper.store is None and bus.subscribers == 0


async def test_stopping_while_the_database_is_down_is_quick(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    bus = EventBus()
    keeper = RecordsKeeper(f"sqlite:///{blocker / 'ivr.db'}", bus, backoff=Backoff(initial=60),
                           settings=DatabaseConfig(spool_dir=str(tmp_path / "spool")))
    await keeper.start()
    bus.emit("call.arrived", "1.0")
    started = time.monotonic()
    await keeper.stop()
    assert time.monotonic() - started < 1.0 and bus.subscribers == 0
