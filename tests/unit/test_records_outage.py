"""The records database can never stop call handling, and nothing is lost uncounted
(issue 13, items 5 and 6).

Each failure mode of the database, faked as it happens: a SQLite file another writer
holds locked (at start and mid-run), a "PostgreSQL" that accepts TCP and never answers,
a real PostgreSQL frozen mid-run behind a proxy, raw driver errors; and each way the
records could lose events: a queue that overflows, a replay cut short, a spool that is
full or cannot be written. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.ami.connection import Backoff
from ivr.events import CallEvent, EventBus
from ivr.metrics import Metrics
from ivr.records.db import DatabaseError, connect, translate
from ivr.records.keeper import RecordsKeeper
from ivr.records.recorder import CallRecorder
from ivr.records.spool import FILE_NAME, Spool
from ivr.records.store import CallStore
from ivr.sections import DatabaseConfig
from tests import present
from tests.fakes import until
from tests.integration.amiproxy import AmiProxy
from tests.pgserver import throwaway_database
from tests.unit.test_records import postgres  # noqa: F401 - the session's PostgreSQL fixture

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)
QUICK = DatabaseConfig(timeout=0.5, connect_timeout=0.5)


@contextmanager
def locked(path: Path, mode: str = "EXCLUSIVE") -> Iterator[sqlite3.Connection]:
    """Another writer holding the SQLite file's lock (as the sqlite3 shell would)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        conn.execute(f"BEGIN {mode}")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


# Every wait here is for an event of the recorder, bounded generously: a loaded CI machine
# (fsync per commit, synchronous = FULL) can take seconds where an idle one takes ms.
BOUND = 20.0


def keeper_for(url: str, bus: EventBus, tmp_path: Path, *, settings: DatabaseConfig = QUICK,
               metrics: Metrics | None = None, **kw: Any) -> RecordsKeeper:
    from dataclasses import replace

    settings = replace(settings, spool_dir=settings.spool_dir or str(tmp_path / "spool"))
    on_drop = (lambda reason, n: metrics.records_dropped.labels(reason).inc(n)) if metrics else None
    return RecordsKeeper(url, bus, backoff=FAST, settings=settings, on_drop=on_drop, **kw)


async def calls_on_record(store: CallStore) -> list[str]:
    rows = await store.db.fetchall("SELECT event_id FROM call_events ORDER BY at, event_id")
    return [r["event_id"] for r in rows]


def emit(bus: EventBus, n: int, start: int = 0) -> list[CallEvent]:
    """``n`` events of distinct calls, ``at`` increasing (their order on record)."""
    sent = []
    for i in range(start, start + n):
        event = CallEvent("call.arrived", f"{i}.0", {"caller": f"1380000{i:04d}"}, at=1_760_000_000.0 + i)
        bus.publish(event)
        sent.append(event)
    return sent


# -- at start: the database never holds the controller up -----------------------------

async def test_locked_sqlite_at_start_spools_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "ivr.db"
    bus = EventBus()
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path)
    with locked(db):
        started = time.monotonic()
        await keeper.start()
        assert time.monotonic() - started < 0.3  # start() never waits on the database (0.5 s timeouts)
        sent = emit(bus, 20)
        await keeper.recorder.wait_state("down", BOUND)
        await until(lambda: keeper.status()["spooled"] == 20, 3, "20 events spooled")
        status = keeper.status()
        assert (status["state"], status["spooled"], status["dropped"]) == ("down", 20, 0)
        assert "locked" in status["error"]
        with pytest.raises(DatabaseError, match="unavailable"):
            await keeper.ping()
    try:
        store = await keeper.wait_open(BOUND)  # the lock is gone: replayed, then up
        assert await calls_on_record(store) == [e.id for e in sent]
        assert keeper.status()["spooled"] == 0 and (tmp_path / "spool" / FILE_NAME).stat().st_size == 0
    finally:
        await keeper.stop()


async def test_controller_serves_fastagi_while_sqlite_is_locked(tmp_path: Path) -> None:
    """The finding: a locked SQLite made Controller.start() raise; FastAGI never listened."""
    from ivr.config import load_config
    from ivr.controller import Controller

    db = tmp_path / "ivr.db"
    path = tmp_path / "ivr.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{db}"\ntimeout = 0.5\nconnect_timeout = 0.5\n\n'
                    f'[agi]\nport = {_free_port()}\n\n[ami]\nport = {_free_port()}\n\n'
                    f'[http]\nport = {_free_port()}\n')
    ctl = Controller(load_config(path, env={"IVR_HTTP_TOKEN": "t" * 32, "IVR_AMI_SECRET": "x"}))
    with locked(db):
        try:
            async with asyncio.timeout(2):
                await ctl.start()
            assert ctl.agi.listening
            _reader, writer = await asyncio.open_connection("127.0.0.1", ctl.config.agi.port)
            writer.close()
            await writer.wait_closed()
            await ctl.operations.records.recorder.wait_state("down", BOUND)
        finally:
            await ctl.stop()


async def test_a_server_that_accepts_and_never_answers_is_down_within_the_timeout(tmp_path: Path) -> None:
    """A "PostgreSQL" that accepts TCP and says nothing: the finding held start 30 s."""
    held: list[asyncio.StreamWriter] = []

    async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql://ivr:secret@127.0.0.1:{port}/ivr"
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"no answer within 0.5 s") as caught:
            await CallStore.open(url, timeout=0.5, connect_timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert caught.value.reason == "timeout" and "secret" not in str(caught.value)

        bus = EventBus()
        keeper = keeper_for(url, bus, tmp_path)
        started = time.monotonic()
        await keeper.start()
        assert time.monotonic() - started < 0.3  # not the 0.5 s connect_timeout
        sent = emit(bus, 3)
        await keeper.recorder.wait_state("down", BOUND)
        first = keeper.attempts
        await until(lambda: keeper.attempts >= first + 2, 3, "it keeps trying, each attempt bounded")
        started = time.monotonic()
        await keeper.stop()
        assert time.monotonic() - started < 1.0
        spool = Spool(tmp_path / "spool")
        assert spool.load() == 0 and [e.event.id for e in spool.read() if e.event] == [e.id for e in sent]
    finally:
        for w in held:
            w.transport.abort()
        server.close()
        await server.wait_closed()


# -- mid-run ------------------------------------------------------------------------

async def test_sqlite_locked_mid_run_spools_then_replays_in_order(tmp_path: Path) -> None:
    db = tmp_path / "ivr.db"
    bus, metrics = EventBus(), Metrics()
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path, metrics=metrics)
    await keeper.start()
    try:
        await keeper.wait_open(BOUND)
        before = emit(bus, 5)
        await keeper.recorder.wait_applied(5)
        with capture_logs() as logs, locked(db, "IMMEDIATE"):
            during = emit(bus, 30, start=5)
            await keeper.recorder.wait_state("down", BOUND)  # the write waited 0.4 s on the lock
            await until(lambda: keeper.status()["spooled"] == 30, 3, "30 events spooled")
            first = keeper.attempts
            await until(lambda: keeper.attempts >= first + 2, 3, "several attempts while locked")
        store = await keeper.wait_open(BOUND)
        after = emit(bus, 5, start=35)
        await keeper.recorder.wait_applied(40)
        assert await calls_on_record(store) == [e.id for e in before + during + after]
        # ... and one log line per state change, not per attempt.
        states = [e["state"] for e in logs if e["event"] == "records.state"]
        assert states.count("down") == 1
        assert keeper.status()["dropped"] == 0
        assert metrics.value("ivr_records_dropped_total", {"reason": "spool_full"}) == 0
    finally:
        await keeper.stop()


async def test_postgres_frozen_mid_run_spools_then_replays(tmp_path: Path, postgres: str) -> None:  # noqa: F811
    """A real PostgreSQL behind a proxy that stops forwarding (a hung server, a cut
    network): the write times out, events go to the spool; thawed, they are written."""
    sock = postgres.split("host=", 1)[1]
    async with AmiProxy(f"{sock}/.s.PGSQL.5432", 0) as proxy:
        name = f"outage{abs(hash(str(tmp_path))) % 10**8}"
        bus = EventBus()
        async with throwaway_database(postgres, name):
            keeper = keeper_for(f"postgresql://ivr@127.0.0.1:{proxy.port}/{name}", bus, tmp_path)
            try:
                await keeper.start()
                await keeper.wait_open(BOUND)
                before = emit(bus, 3)
                await keeper.recorder.wait_applied(3)
                proxy.freeze()
                during = emit(bus, 10, start=3)
                await keeper.recorder.wait_state("down", BOUND)
                await until(lambda: keeper.status()["spooled"] == 10, 3, "10 events spooled")
                proxy.thaw()
                proxy.cut()  # the old connections are gone for good
                store = await keeper.wait_open(BOUND)
                assert await calls_on_record(store) == [e.id for e in before + during]
                assert keeper.status()["dropped"] == 0
            finally:
                await keeper.stop()


# -- raw driver errors ---------------------------------------------------------------

def test_driver_errors_are_translated_in_one_place() -> None:
    assert present(translate(sqlite3.OperationalError("database is locked"))).reason == "locked"
    assert present(translate(sqlite3.OperationalError("disk I/O error"))).reason == "error"
    assert present(translate(sqlite3.OperationalError("no such table: x"))).reason == "rejected"
    assert present(translate(sqlite3.IntegrityError("UNIQUE"))).reason == "rejected"
    assert present(translate(ConnectionRefusedError())).reason == "unreachable"
    assert present(translate(TimeoutError())).reason == "timeout"
    assert translate(ValueError("a bug")) is None
    err = translate(sqlite3.OperationalError("database is locked"), "postgresql://u:pw@h/db")
    assert err is not None and err.transient and "pw" not in str(err)


class FlakyOpener:
    """Raises raw driver errors (as a driver would, untranslated) until ``healed``."""

    def __init__(self, store: CallStore | None = None) -> None:
        self.errors = [sqlite3.OperationalError("unable to open database file"), OSError(28, "No space left"),
                       RuntimeError("a bug in the driver")]
        self.calls = 0
        self.store = store

    async def __call__(self) -> CallStore:
        self.calls += 1
        if self.store is None or self.calls <= len(self.errors):
            raise self.errors[(self.calls - 1) % len(self.errors)]
        return self.store


async def test_the_retry_loop_survives_raw_driver_errors(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'ivr.db'}")
    opener = FlakyOpener(store)
    bus = EventBus()
    recorder = CallRecorder(None, bus, opener=opener, spool=Spool(tmp_path / "spool"), backoff=FAST)
    await recorder.start()
    try:
        sent = emit(bus, 4)
        await recorder.wait_state("up", BOUND)  # after three raw errors, the fourth try opens
        await recorder.wait_applied(4)
        assert opener.calls == 4 and await calls_on_record(store) == [e.id for e in sent]
    finally:
        await recorder.stop()
        await store.close()


class RawFailingStore:
    """A store whose writes raise a raw sqlite3 error (a disk failing) ``fail`` times."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.written: list[CallEvent] = []

    async def apply(self, event: CallEvent) -> bool:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("disk I/O error")
        self.written.append(event)
        return True

    async def close(self) -> None:
        pass


async def test_a_raw_driver_error_mid_run_is_an_outage_not_a_lost_event(tmp_path: Path) -> None:
    store = RawFailingStore(fail=2)

    async def opener() -> RawFailingStore:
        return store

    bus = EventBus()
    recorder = CallRecorder(None, bus, opener=opener, spool=Spool(tmp_path / "spool"), backoff=FAST)
    await recorder.start()
    try:
        sent = emit(bus, 5)
        await recorder.wait_applied(5)
        assert store.written == sent and recorder.dropped == {} and recorder.attempts == 3
    finally:
        await recorder.stop()


async def test_an_event_the_database_refuses_is_retried_then_counted(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'ivr.db'}")
    bus, metrics = EventBus(), Metrics()
    recorder = CallRecorder(store, bus, spool=Spool(tmp_path / "spool"),
                            on_drop=lambda r, n: metrics.records_dropped.labels(r).inc(n))
    await recorder.start()
    try:
        with capture_logs() as logs:
            bad = CallEvent("ring.alarm", "1.0", {"rings": "three"})  # int("three") fails every time
            bus.publish(bad)
            good = emit(bus, 1)
            await recorder.wait_applied(2)
        assert recorder.failed == 1 and recorder.dropped == {"rejected": 1}
        assert metrics.value("ivr_records_dropped_total", {"reason": "rejected"}) == 1
        assert [e["event_id"] for e in logs if e["event"] == "records.dropped"] == [bad.id]
        assert len([e for e in logs if e["event"] == "records.write_error"]) == 3  # tried 3 times
        assert await calls_on_record(store) == [good[0].id]
    finally:
        await recorder.stop()
        await store.close()


# -- nothing lost without being counted -----------------------------------------------

class GatedStore:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.written: list[CallEvent] = []

    async def apply(self, event: CallEvent) -> bool:
        await self.gate.wait()
        self.written.append(event)
        return True


async def test_queue_overflow_is_spooled_not_dropped(tmp_path: Path) -> None:
    """The finding: 1,500 events during an outage, 500 gone without a trace."""
    store = GatedStore()
    bus = EventBus()
    recorder = CallRecorder(store, bus, spool=Spool(tmp_path / "spool"), queue_size=1000)
    await recorder.start()
    try:
        sent = emit(bus, 1500)  # all at once: 1000 fill the queue, 500 overflow
        assert recorder.spool is not None and recorder.spool.pending == 500
        store.gate.set()
        await recorder.wait_applied(1500, timeout=20)
        assert store.written == sent and recorder.dropped == {} and bus.dropped == 0
        assert recorder.spool.pending == 0
    finally:
        await recorder.stop()


async def test_a_replay_cut_short_writes_nothing_twice(tmp_path: Path) -> None:
    """A crash mid-replay leaves the spool whole: replayed again, what is on record is skipped."""
    url = f"sqlite:///{tmp_path / 'ivr.db'}"
    spool = Spool(tmp_path / "spool")
    events = [CallEvent("call.arrived", "1.0", {"caller": "1"}, at=1.0),
              CallEvent("ring.started", "1.0", {"agent": "1001"}, at=2.0),
              CallEvent("ring.answered", "1.0", {"agent": "1001", "rings": 2}, at=3.0),
              CallEvent("call.ended", "1.0", {"hung_up_first": "caller"}, at=4.0)]
    for e in events:
        spool.append(e)
    spool.close()
    with open(spool.path, "ab") as f:
        f.write(b'{"id":"torn","kind":"call.ar')  # the power went out mid-line
    store = await CallStore.open(url)
    for e in events[:2]:  # the previous run wrote these, then died before truncating
        await store.apply(e)
    await store.close()

    bus = EventBus()
    keeper = keeper_for(url, bus, tmp_path)
    await keeper.start()
    try:
        store = await keeper.wait_open(BOUND)
        assert keeper.recorder.duplicates == 2 and keeper.recorder.applied == 2
        assert keeper.recorder.dropped == {"spool_corrupt": 1}
        call = await store.call("1.0")
        assert call is not None and [e["event_id"] for e in call["events"]] == [e.id for e in events]
        assert len(call["ring_legs"]) == 1 and call["rings"] == 2 and call["hung_up_first"] == "caller"
    finally:
        await keeper.stop()


async def test_events_queued_at_stop_survive_in_the_spool(tmp_path: Path) -> None:
    """Stopping while the database is away: the queue goes to disk, the next run writes it."""
    db = tmp_path / "ivr.db"
    url = f"sqlite:///{db}"
    bus = EventBus()
    with locked(db):
        keeper = keeper_for(url, bus, tmp_path, settings=DatabaseConfig(timeout=0.5, connect_timeout=0.5,
                                                                         retry_initial=60))
        await keeper.start()
        await keeper.recorder.wait_state("down", BOUND)
        sent = emit(bus, 7)
        await keeper.stop()
    assert keeper.status()["dropped"] == 0
    keeper = keeper_for(url, EventBus(), tmp_path)
    await keeper.start()
    try:
        store = await keeper.wait_open(BOUND)
        assert await calls_on_record(store) == [e.id for e in sent]
    finally:
        await keeper.stop()


async def test_a_full_spool_counts_what_it_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "no-db"
    blocker.write_text("a file where the database directory must be")
    bus, metrics = EventBus(), Metrics()
    settings = DatabaseConfig(spool_max_mb=1 / 1024, spool_dir=str(tmp_path / "spool"))  # 1 KiB
    keeper = keeper_for(f"sqlite:///{blocker / 'ivr.db'}", bus, tmp_path, settings=settings, metrics=metrics)
    await keeper.start()
    try:
        with capture_logs() as logs:
            emit(bus, 40)  # ~100 bytes each
            await until(lambda: keeper.status()["spooled"] + keeper.status()["dropped"] == 40, 3,
                        "all 40 spooled or dropped")
        status = keeper.status()
        assert 0 < status["spooled"] < 40 and status["dropped_by_reason"] == {"spool_full": 40 - status["spooled"]}
        assert metrics.value("ivr_records_dropped_total", {"reason": "spool_full"}) == 40 - status["spooled"]
        lines = [e for e in logs if e["event"] == "records.dropped"]
        assert lines and lines[0]["reason"] == "spool_full"  # logged (at most once a second)
    finally:
        await keeper.stop()


async def test_an_unwritable_spool_counts_what_it_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "no-db"
    blocker.write_text("x")
    bad_spool = tmp_path / "spool-is-a-file"
    bad_spool.write_text("x")
    bus, metrics = EventBus(), Metrics()
    keeper = keeper_for(f"sqlite:///{blocker / 'ivr.db'}", bus, tmp_path,
                        settings=DatabaseConfig(spool_dir=str(bad_spool)), metrics=metrics)
    await keeper.start()
    try:
        emit(bus, 4)
        bus.emit("message.recorded", "9.0", item="m-9", caller_number="13800000009", recorded=True,
                 held_seconds=61.0)  # a held caller's message: counted like any event (issue 15)
        await until(lambda: keeper.status()["dropped"] == 5, 3, "all 5 dropped")
        assert keeper.status()["dropped_by_reason"] == {"spool_unwritable": 5}
        assert metrics.value("ivr_records_dropped_total", {"reason": "spool_unwritable"}) == 5
    finally:
        await keeper.stop()


# -- durability settings ---------------------------------------------------------------

async def test_sqlite_commits_are_fsynced(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path / 'ivr.db'}")
    try:
        assert present(await db.fetchone("PRAGMA synchronous"))["synchronous"] == 2  # FULL
        assert present(await db.fetchone("PRAGMA journal_mode"))["journal_mode"] == "wal"
    finally:
        await db.close()


def test_spool_lines_are_plain_json(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    event = CallEvent("hold.start", "9.0", {"n": 1}, at=5.0)
    spool.append(event)
    spool.close()
    (line,) = spool.path.read_text().splitlines()
    assert json.loads(line) == {"id": event.id, "kind": "hold.start", "call_id": "9.0", "at": 5.0, "data": {"n": 1}}
    assert oct(spool.path.stat().st_mode & 0o777) == "0o600"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_health_ping_reopens_the_database_without_waiting_for_an_event(tmp_path: Path) -> None:
    db = tmp_path / "ivr.db"
    bus = EventBus()
    opened: list[CallStore] = []
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path, on_open=opened.append)
    await keeper.start()
    try:
        await keeper.wait_open(BOUND)
        assert len(opened) == 1
        with locked(db, "IMMEDIATE"):
            with pytest.raises(DatabaseError, match="locked"):
                await keeper.ping()
            await keeper.recorder.wait_state("down", BOUND)  # no event needed to notice
        await keeper.wait_open(BOUND)
        assert len(opened) == 2 and await keeper.ping() is True
    finally:
        await keeper.stop()


async def test_on_open_runs_once_the_spool_is_written(tmp_path: Path) -> None:
    """The controller closes the records of calls that ended meanwhile when the database
    opens: it must see the spooled events on record by then, not the records before them."""
    url = f"sqlite:///{tmp_path / 'ivr.db'}"
    spool = Spool(tmp_path / "spool")
    spool.append(CallEvent("call.arrived", "1.0", at=1.0))
    spool.append(CallEvent("call.ended", "1.0", {"hung_up_first": "caller"}, at=2.0))
    spool.close()
    seen: list[list[str]] = []

    async def on_open(store: CallStore) -> None:
        seen.append(await store.open_calls())

    keeper = keeper_for(url, EventBus(), tmp_path, on_open=on_open)
    await keeper.start()
    try:
        await keeper.wait_open(BOUND)
        assert seen == [[]]  # 1.0 is closed already: nothing for the controller to close
    finally:
        await keeper.stop()


async def test_1500_events_during_an_outage_are_all_written_after_it(tmp_path: Path) -> None:
    """The finding, as found: 1,500 events while the database was away, 500 of them gone."""
    blocker = tmp_path / "var"
    blocker.write_text("a file where the database directory must be")
    bus = EventBus()
    keeper = keeper_for(f"sqlite:///{blocker / 'ivr.db'}", bus, tmp_path)
    await keeper.start()
    try:
        await keeper.recorder.wait_state("down", BOUND)
        sent = emit(bus, 1500)  # in one go: more than the queue holds
        blocker.unlink()
        started = time.monotonic()
        store = await keeper.wait_open(30)
        print(f"1500 spooled events written {time.monotonic() - started:.2f} s after the database came back")
        assert await calls_on_record(store) == [e.id for e in sent]
        assert keeper.status()["dropped"] == 0 and bus.dropped == 0
    finally:
        await keeper.stop()


def test_a_slow_subscriber_without_a_spool_loses_events_counted_and_logged() -> None:
    bus = EventBus(queue_size=2)
    queue = bus.open_queue()  # a dashboard stream, say
    with capture_logs() as logs:
        for i in range(5):
            bus.emit("call.arrived", f"{i}.0")
    assert bus.dropped == 3 and [e.call_id for e in [queue.get_nowait(), queue.get_nowait()]] == ["3.0", "4.0"]
    assert [e["event"] for e in logs] == ["events.subscriber_overflow"]  # once per overflowing stretch
    bus.close_queue(queue)


async def test_a_refused_event_in_the_spool_costs_only_itself(tmp_path: Path) -> None:
    """The spool is written in batches (one commit each); a batch the database refuses is
    written again one by one, so only the bad event is dropped, and counted."""
    spool = Spool(tmp_path / "spool")
    good = [CallEvent("call.arrived", f"{i}.0", at=float(i)) for i in range(5)]
    bad = CallEvent("ring.answered", "2.0", {"rings": "four"}, at=2.5)
    for e in [*good[:3], bad, *good[3:]]:
        spool.append(e)
    spool.close()
    keeper = keeper_for(f"sqlite:///{tmp_path / 'ivr.db'}", EventBus(), tmp_path)
    await keeper.start()
    try:
        store = await keeper.wait_open(BOUND)
        assert await calls_on_record(store) == [e.id for e in good]
        assert keeper.recorder.dropped == {"rejected": 1} and keeper.status()["spooled"] == 0
    finally:
        await keeper.stop()


class HangsThenFails:
    """Holds its first write until ``release``, then fails it as a lost connection would."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def apply(self, event: CallEvent) -> bool:
        self.holding.set()
        await self.release.wait()
        raise DatabaseError("connection lost", reason="unreachable")

    async def close(self) -> None:
        pass


async def test_the_event_being_written_when_the_database_goes_stays_first(tmp_path: Path) -> None:
    """Events overflowed to the spool while one was being written; that write then fails:
    it goes before them in the spool, so the order on record is the order of the calls."""
    first, good = HangsThenFails(), GatedStore()
    good.gate.set()
    stores: Iterator[HangsThenFails | GatedStore] = iter([first, good])

    async def opener() -> HangsThenFails | GatedStore:
        return next(stores)

    bus = EventBus()
    recorder = CallRecorder(None, bus, opener=opener, spool=Spool(tmp_path / "spool"), backoff=FAST,
                            queue_size=3)
    await recorder.start()
    try:
        sent = emit(bus, 1)
        async with asyncio.timeout(3):
            await first.holding.wait()
        sent += emit(bus, 9)  # 3 wait in the queue, 6 overflow to the spool
        assert recorder.spool is not None and recorder.spool.pending == 6
        first.release.set()
        await recorder.wait_applied(10)
        assert good.written == sent and recorder.dropped == {}
    finally:
        await recorder.stop()
