"""Call records: migrations, events to rows, restart mid-call, the recorder on the bus.

The store tests run against SQLite and, where Debian's PostgreSQL server binaries are
installed (tests/run installs them), against a throw-away PostgreSQL cluster that listens
on a Unix socket only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.events import CallEvent, EventBus
from ivr.records import CallFilter, CallRecorder, CallStore, DatabaseError, connect
from ivr.records import db as db_module
from ivr.records.migrations import Migration, bundled, current_version, migrate
from tests import present
from tests.fakes import idle
from tests.pgserver import postgres_server, throwaway_database

T0 = 1_760_000_000.0  # a fixed wall-clock time for events


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster on a Unix socket (no TCP), for the session: its base URL (in CI
    a missing server is a failure, not a skip: tests/run installs it)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'calls.db'}"
        return
    base: str = request.getfixturevalue("postgres")
    name = f"t{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    async with throwaway_database(base, name) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[CallStore]:
    s = await CallStore.open(db_url)
    yield s
    await s.close()


def ev(kind: str, t: float, call_id: str = "1.0", **data: object) -> CallEvent:
    return CallEvent(kind, call_id, dict(data), at=T0 + t)


A_CALL = [
    ev("call.arrived", 0, caller="13800000000", channel="PJSIP/trunk-1"),
    ev("greeting.played", 1, greeting=["morning", "welcome"], holiday=None),
    ev("ring.started", 4, agent="1001"),
    ev("ring.alarm", 19, agent="1001", level="warning", rings=3),
    ev("ring.noanswer", 20, agent="1001", rings=4, reason="reroute"),
    ev("ring.started", 20, agent="1002"),
    ev("ring.answered", 26, agent="1002", rings=2, within_three=True, late=False),
    ev("hold.start", 40),
    ev("hold.reminder", 70),
    ev("hold.choices", 100),
    ev("hold.choice", 102, choice="keep"),
    ev("hold.resume", 105),
    ev("transfer.state", 120, state="offered", target="1003"),
    ev("transfer.state", 121, state="ringing"),
    ev("transfer.state", 125, state="timeout"),
    ev("transfer.state", 126, state="returned"),
    ev("call.ended", 300, hung_up_first="agent", cause="16"),
]


async def test_migrations_from_empty(db_url: str) -> None:
    db = await connect(db_url)
    try:
        assert await current_version(db) == 0
        assert await migrate(db) == [m.version for m in bundled()]
        assert await current_version(db) == bundled()[-1].version
        assert await migrate(db) == []  # applied once only
        for table in ("calls", "call_events", "ring_legs", "alarms", "holds", "transfers", "messages", "callbacks"):
            assert await db.fetchall(f"SELECT * FROM {table}") == []  # noqa: S608 - the schema's own table names
    finally:
        await db.close()


async def test_failed_migration_leaves_the_previous_version(db_url: str) -> None:
    db = await connect(db_url)
    try:
        good = Migration(1, "one", "CREATE TABLE one (x INTEGER);")
        bad = Migration(2, "two", "CREATE TABLE two (x INTEGER); CREATE TABLE one (x INTEGER);")
        with pytest.raises(Exception, match="one"):
            await migrate(db, [good, bad])
        assert await current_version(db) == 1
        assert await db.fetchall("SELECT * FROM one") == []
        with pytest.raises(Exception, match="two"):  # table two was rolled back with it
            await db.fetchall("SELECT * FROM two")
    finally:
        await db.close()


async def test_a_newer_schema_is_refused(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await migrate(db, [Migration(1, "a", "CREATE TABLE a (x INTEGER)"),
                           Migration(7, "b", "CREATE TABLE b (x INTEGER)")])
        with pytest.raises(DatabaseError, match="version 7, newer than this controller knows"):
            await migrate(db, [Migration(1, "a", "")])
    finally:
        await db.close()


async def test_a_whole_call(store: CallStore) -> None:
    for e in A_CALL:
        await store.apply(e)
    call = await store.call("1.0")
    assert call is not None
    assert call["caller"] == "13800000000" and call["greeting"] == "morning,welcome"
    assert (call["agent"], call["rings"], call["within_three"]) == ("1002", 2, 1)
    assert call["state"] == "ended" and call["hung_up_first"] == "agent" and call["hangup_cause"] == "16"
    assert call["duration"] == pytest.approx(300.0)
    assert call["hold_count"] == 1 and call["hold_seconds"] == pytest.approx(65.0)
    assert [(leg["agent"], leg["rings"], leg["outcome"]) for leg in call["ring_legs"]] == [
        ("1001", 4, "reroute"), ("1002", 2, "answered")]
    assert [(a["agent"], a["level"], a["rings"]) for a in call["alarms"]] == [("1001", "warning", 3)]
    (hold,) = call["holds"]
    assert (hold["reminders"], hold["choice"], hold["outcome"], hold["duration"]) == (1, "keep", "resumed", 65.0)
    (transfer,) = call["transfers"]
    assert (transfer["target"], transfer["state"], transfer["finished"]) == ("1003", "returned", 1)
    assert [e["kind"] for e in call["events"]] == [e.kind for e in A_CALL]
    assert call["events"][3]["data"] == {"agent": "1001", "level": "warning", "rings": 3}


async def test_messages_and_callbacks_close_the_hold(store: CallStore) -> None:
    await store.apply(ev("hold.start", 0, "2.0"))
    await store.apply(ev("message.recorded", 65, "2.0", name="Li Lei", company="ACME", phone="010-1234",
                         best_time="afternoon", for_agent="1001"))
    await store.apply(ev("hold.start", 70, "3.0"))
    await store.apply(ev("callback.requested", 130, "3.0", phone="13900000000", best_time="tomorrow"))
    (msg,) = await store.messages()
    assert (msg["call_id"], msg["name"], msg["company"], msg["for_agent"]) == ("2.0", "Li Lei", "ACME", "1001")
    (cb,) = await store.callbacks()
    assert (cb["call_id"], cb["phone"], cb["status"]) == ("3.0", "13900000000", "open")
    assert [h["outcome"] for h in present(await store.call("2.0"))["holds"]] == ["message"]
    assert [h["duration"] for h in present(await store.call("3.0"))["holds"]] == [60.0]


async def test_restart_mid_call_keeps_writing_the_same_record(db_url: str) -> None:
    first = await CallStore.open(db_url)
    for e in A_CALL[:4]:  # arrived, greeting, ringing 1001, alarm
        await first.apply(e)
    await first.close()  # the controller stops mid-ring

    second = await CallStore.open(db_url)
    try:
        live = await second.calls(CallFilter(state="live"))
        assert [(c["call_id"], c["state"], c["agent"]) for c in live] == [("1.0", "ringing", "1001")]
        for e in A_CALL[4:]:
            await second.apply(e)
        (call,) = await second.calls()
        assert call["call_id"] == "1.0" and call["state"] == "ended" and call["arrived_at"] == T0
        full = await second.call("1.0")
        assert full is not None and len(full["events"]) == len(A_CALL)
        assert [leg["outcome"] for leg in full["ring_legs"]] == ["reroute", "answered"]
    finally:
        await second.close()


async def test_events_of_an_unknown_call_start_its_record(store: CallStore) -> None:
    # The controller started after the call arrived: the first event it sees makes the record.
    await store.apply(ev("ring.answered", 10, "9.0", agent="1003", rings=5))
    await store.apply(ev("call.ended", 20, "9.0", started_at=T0 - 30))
    call = await store.call("9.0")
    assert call is not None
    assert (call["agent"], call["rings"], call["within_three"], call["state"]) == ("1003", 5, 0, "ended")
    assert call["arrived_at"] == T0 - 30 and call["duration"] == pytest.approx(50.0)
    (leg,) = call["ring_legs"]
    assert (leg["outcome"], leg["rings"]) == ("answered", 5)


async def test_a_late_event_does_not_revive_an_ended_call(store: CallStore) -> None:
    await store.apply(ev("call.arrived", 0, "4.0"))
    await store.apply(ev("call.ended", 5, "4.0"))
    await store.apply(ev("hold.start", 6, "4.0"))
    call = await store.call("4.0")
    assert call is not None and call["state"] == "ended"


async def test_one_call_is_read_in_one_snapshot(store: CallStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /api/calls/{id} reads the call's row and its events, holds and legs in one
    transaction (one snapshot): a call.ended written while the read is under way is either
    wholly in what it shows (the row ended, the event there) or not at all; never an open
    row with the end's event, nor an ended row without it."""
    for e in A_CALL[:-1]:
        await store.apply(e)
    end = A_CALL[-1]
    writing: list[asyncio.Future[bool]] = []

    def between(original: Any) -> Any:
        async def fetchall(self: Any, sql: str, params: Any = ()) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = await original(self, sql, params)
            if sql.startswith("SELECT * FROM calls WHERE") and not writing:  # the row is read: the end is written
                writing.append(asyncio.ensure_future(store.apply(end)))
                if store.db.dialect == "postgresql":  # on another connection of the pool: committed now
                    await asyncio.wait_for(writing[0], 10)
                else:  # the one connection: the write queues for it (its lock) before the read goes on
                    await idle()
            return rows
        return fetchall

    for tx in (db_module._SqliteTx, db_module._PgTx):
        monkeypatch.setattr(tx, "fetchall", between(tx.fetchall))
    read = await store.call("1.0")
    assert read is not None and writing
    assert read["ended_at"] is None and "call.ended" not in [e["kind"] for e in read["events"]], read
    assert await asyncio.wait_for(writing[0], 10) is True
    after = await store.call("1.0")
    assert after is not None and after["ended_at"] is not None and after["events"][-1]["kind"] == "call.ended"


async def test_unclear_line_shows_and_ends(store: CallStore) -> None:
    """R3 unclear line: the call is "unclear" while aside, "talking" once returned; every
    stage is kept among the call's events."""
    await store.apply(ev("ring.answered", 0, "u1", agent="1001", rings=1))
    await store.apply(ev("unclear.start", 10, "u1", reason="faint", via="key"))
    await store.apply(ev("unclear.stage", 10.1, "u1", stage="ask", reason="faint"))
    assert [r["call_id"] for r in await store.calls(CallFilter(state="unclear"))] == ["u1"]
    await store.apply(ev("unclear.stage", 17, "u1", stage="returned", reason="faint", during="pause1"))
    call = await store.call("u1")
    assert call is not None and call["state"] == "talking"
    assert [e["kind"] for e in call["events"] if e["kind"].startswith("unclear.")] == [
        "unclear.start", "unclear.stage", "unclear.stage"]


async def test_call_filters(store: CallStore) -> None:
    await store.apply(ev("ring.answered", 0, "a", agent="1001", rings=1))
    await store.apply(ev("ring.started", 100, "b", agent="1002"))
    await store.apply(ev("ring.answered", 200, "c", agent="1001", rings=2))
    await store.apply(ev("call.ended", 300, "c"))
    ids = lambda rows: [r["call_id"] for r in rows]
    assert ids(await store.calls()) == ["c", "b", "a"]
    assert ids(await store.calls(CallFilter(agent="1001"))) == ["c", "a"]
    assert ids(await store.calls(CallFilter(state="live"))) == ["b", "a"]
    assert ids(await store.calls(CallFilter(state="ringing"))) == ["b"]
    assert ids(await store.calls(CallFilter(since=T0 + 50, until=T0 + 200))) == ["b"]
    assert ids(await store.calls(CallFilter(limit=1))) == ["c"]
    assert await store.call("nope") is None


async def test_recorder_follows_the_bus(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    bus = EventBus()
    recorder = CallRecorder(store, bus)
    await recorder.start()
    try:
        for e in A_CALL:
            bus.publish(e)
        await recorder.wait_applied(len(A_CALL))
        call = await store.call("1.0")
        assert call is not None and call["state"] == "ended" and recorder.failed == 0
    finally:
        await recorder.stop()
        await store.close()
    assert bus.subscribers == 0


async def test_a_failed_write_is_counted_and_the_recorder_goes_on(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    bus = EventBus()
    recorder = CallRecorder(store, bus)
    await recorder.start()
    try:
        bus.publish(CallEvent("call.arrived", "x", {"caller": object()}, at=T0))  # stored as text
        bus.publish(CallEvent("ring.answered", "y", {"rings": "four"}, at=T0))  # not a number
        bus.publish(CallEvent("call.arrived", "z", {}, at=T0))
        await recorder.wait_applied(3)
        assert (recorder.applied, recorder.failed) == (2, 1)
        assert {c["call_id"] for c in await store.calls()} == {"x", "z"}
        assert await store.call("y") is None  # the failed event's transaction was rolled back
    finally:
        await recorder.stop()
        await store.close()


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://x/y", "unsupported database URL"),
    ("sqlite:/relative.db", "bad SQLite URL"),
    ("sqlite:///", "bad SQLite URL"),
])
async def test_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        await connect(url)


async def test_unreachable_postgres_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=r"cannot open the database postgresql://ivr:\*\*\*@"):
        await asyncio.wait_for(connect(f"postgresql://ivr:secret@/x?host={tmp_path}"), 10)
