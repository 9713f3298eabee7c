"""Issue 15: the call records are the one store of held callers' messages.

A message is the ``message.recorded`` event; the records keep it (table ``messages``,
with what the JSON file beside the recording held before: the file, whether it holds
audio, the seconds on hold, the agent, the call). While the database is away the event
goes to the spool like any other; one the spool cannot take is counted
(tests/unit/test_records_outage.py::test_an_unwritable_spool_counts_what_it_drops sends
a message among its events). JSON files
an earlier version wrote are taken into the records when the database opens, once.
Every wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ivr.events import CallEvent, EventBus
from ivr.records.db import connect
from ivr.records.legacy import import_json_messages, message_events
from ivr.records.migrations import bundled, migrate
from ivr.records.store import CallStore
from tests.fakes import until
from tests.unit.test_records_outage import BOUND, keeper_for, locked

T0 = 1_760_000_000.0


def message(call_id: str = "1.0", item: str = "20251009T084000Z-1.0", at: float = T0) -> CallEvent:
    """The event the hold feature publishes when a held caller has left a message."""
    return CallEvent("message.recorded", call_id, {
        "item": item, "caller_number": "13800000001", "agent": "Alice", "agent_channel": "PJSIP/1001-1",
        "file": f"/var/lib/ivr/messages/{item}.wav", "recorded": True, "held_seconds": 61.5}, at=at)


async def test_a_message_is_one_row_with_what_the_json_file_held(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        await store.apply(CallEvent("hold.start", "1.0", {}, at=T0 - 61.5))
        assert await store.apply(message())
        assert await store.apply(message())  # the same message again (another event): kept once
        [row] = await store.messages()
        assert (row["message_id"], row["call_id"], row["phone"], row["for_agent"], row["at"]) == (
            "20251009T084000Z-1.0", "1.0", "13800000001", "Alice", T0)
        assert (row["recording"], row["recorded"], row["held_seconds"]) == (
            "/var/lib/ivr/messages/20251009T084000Z-1.0.wav", 1, 61.5)
        [hold] = (await store.call("1.0"))["holds"]  # type: ignore[index]
        assert hold["outcome"] == "message"
    finally:
        await store.close()


async def test_migration_5_keeps_messages_taken_before_it(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        await migrate(db, [m for m in bundled() if m.version <= 2])
        await db.execute("INSERT INTO calls (call_id, arrived_at, state, state_since, updated_at)"
                         " VALUES ('1.0', 1, 'ended', 1, 1)")
        await db.execute("INSERT INTO messages (message_id, call_id, at, name) VALUES ('m1', '1.0', 2, 'Li Lei')")
        assert 5 in await migrate(db)
        row = await db.fetchone("SELECT * FROM messages WHERE message_id = 'm1'")
        assert row is not None and row["name"] == "Li Lei"
        assert (row["recorded"], row["held_seconds"]) == (None, None)  # unknown, not invented
    finally:
        await db.close()


# -- the database away: the spool takes the message, or it is counted -----------------

async def test_a_message_while_the_database_is_locked_is_spooled_then_on_record(tmp_path: Path) -> None:
    db = tmp_path / "ivr.db"
    bus = EventBus()
    keeper = keeper_for(f"sqlite:///{db}", bus, tmp_path)
    with locked(db):
        await keeper.start()
        bus.publish(message())
        await keeper.recorder.wait_state("down", BOUND)
        await until(lambda: keeper.status()["spooled"] >= 1, BOUND, "the message spooled")
        spooled = (tmp_path / "spool").glob("*")
        assert any("message.recorded" in p.read_text() for p in spooled if p.is_file())
    try:
        store = await keeper.wait_open(BOUND)
        [row] = await store.messages()
        assert (row["message_id"], row["recorded"], row["held_seconds"]) == ("20251009T084000Z-1.0", 1, 61.5)
        assert keeper.status()["dropped"] == 0
    finally:
        await keeper.stop()


# -- an upgrade: the JSON files of an earlier version -----------------------------------

def old_json(directory: Path, item: str, call_id: str, at: str = "2025-10-09T08:40:00+00:00") -> Path:
    """A message file exactly as ivr/hold/store.py wrote it before issue 15."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{item}.wav").write_bytes(b"\0" * 2000)
    path = directory / f"{item}.json"
    path.write_text(json.dumps({"id": item, "caller": "13800000001", "agent": "Alice", "call_id": call_id,
                                "at": at, "held_seconds": 60.004, "file": str(directory / f"{item}.wav"),
                                "recorded": True}, indent=1))
    return path


async def test_old_json_messages_are_imported_once_and_their_files_removed(tmp_path: Path) -> None:
    msgs = tmp_path / "messages"
    old_json(msgs, "20251009T084000Z-1.0", "1.0")
    old_json(msgs, "20251009T090000Z-2.0", "2.0", at="2025-10-09T09:00:00+00:00")
    (msgs / "notes.json").write_text("{not json")  # not ours: left alone
    (msgs / "other.json").write_text(json.dumps({"id": "x"}))  # a JSON file that is no message
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        await store.apply(CallEvent("call.arrived", "2.0", {"caller": "13800000001"}, at=T0))
        await store.apply(CallEvent("call.ended", "2.0", {"hung_up_first": "caller"}, at=T0 + 90))
        done = await import_json_messages(store, msgs)
        assert sorted(done.imported) == ["20251009T084000Z-1.0.json", "20251009T090000Z-2.0.json"]
        assert sorted(done.unreadable) == ["notes.json", "other.json"] and done.refused == []
        assert sorted(p.name for p in msgs.iterdir()) == [
            "20251009T084000Z-1.0.wav", "20251009T090000Z-2.0.wav", "notes.json", "other.json"]
        rows = {r["message_id"]: r for r in await store.messages()}
        first = rows["20251009T084000Z-1.0"]
        assert (first["call_id"], first["phone"], first["for_agent"], first["recorded"], first["held_seconds"]) == (
            "1.0", "13800000001", "Alice", 1, 60.004)
        assert first["recording"] == str(msgs / "20251009T084000Z-1.0.wav")
        assert first["at"] == pytest.approx(1760000000.0)  # 2025-10-09T08:40:00Z
        # A call the records never had is closed at once (not shown as live); a known
        # call keeps its record as it was.
        one: Any = await store.call("1.0")
        assert one["state"] == "ended" and one["hung_up_first"] == "unknown"
        assert await store.open_calls() == []
        two: Any = await store.call("2.0")
        assert two["hung_up_first"] == "caller" and [e["kind"] for e in two["events"]] == [
            "call.arrived", "call.ended", "message.recorded"]
        # Again (a file put back by hand, a second start): nothing is written twice.
        old_json(msgs, "20251009T084000Z-1.0", "1.0")
        again = await import_json_messages(store, msgs)
        assert again.imported == ["20251009T084000Z-1.0.json"]
        assert len(await store.messages()) == 2
        assert not (msgs / "20251009T084000Z-1.0.json").exists()
    finally:
        await store.close()


async def test_a_database_that_is_away_keeps_the_json_files(tmp_path: Path) -> None:
    msgs = tmp_path / "messages"
    path = old_json(msgs, "20251009T084000Z-1.0", "1.0")
    db = tmp_path / "ivr.db"
    store = await CallStore.open(f"sqlite:///{db}", timeout=0.3)
    try:
        with locked(db), pytest.raises(Exception, match="locked"):
            await import_json_messages(store, msgs)
        assert path.exists(), "nothing is removed that is not on record"
    finally:
        await store.close()
    store = await CallStore.open(f"sqlite:///{db}")  # the next opening (the recorder reopens it)
    try:
        assert (await import_json_messages(store, msgs)).imported == [path.name]
        assert not path.exists()
    finally:
        await store.close()


async def test_no_directory_no_legacy_and_a_foreign_file_is_no_message(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        done = await import_json_messages(store, tmp_path / "nowhere")
        assert (done.imported, done.unreadable, done.refused) == ([], [], [])
    finally:
        await store.close()
    with pytest.raises(ValueError, match="id, call_id, at"):
        message_events({"caller": "1"})


async def test_the_controller_imports_old_messages_when_the_database_opens(tmp_path: Path) -> None:
    """The app's hook (ivr/http/operations.py): on the records' opening, the files of
    ``[hold] messages_dir`` go into the records."""
    from ivr.config import load_config
    from ivr.controller import Controller

    msgs = tmp_path / "messages"
    path = old_json(msgs, "20251009T084000Z-1.0", "1.0")
    toml = tmp_path / "ivr.toml"
    toml.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "calls.db"}"\n\n[hold]\nmessages_dir = "{msgs}"\n')
    ops = Controller(load_config(toml, env={"IVR_HTTP_TOKEN": "t" * 32})).operations
    await ops.start_records()  # only the records: no switch in a unit test
    try:
        store = await ops.records.wait_open(BOUND)
        await until(store.messages, BOUND, "the message on record")
        assert not path.exists()
    finally:
        await ops.records.stop()
