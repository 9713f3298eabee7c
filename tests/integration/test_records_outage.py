"""The records database locked, down or hung, at start and mid-call (issue 13, items 5
and 6), on the real switch: callers still get the greeting and are handled (asserted
from Asterisk's own AMI events), the records arrive once the database is back, and
every event the controller published is on record or counted as dropped.

Databases: a SQLite file another writer holds locked (``BEGIN EXCLUSIVE``, as the
sqlite3 shell would), a SQLite file whose directory cannot be made (down at start), and
a real PostgreSQL behind a proxy that refuses connections (down) or accepts and
forwards nothing (hung).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ivr.events import CallEvent
from ivr.prompts import prompt_duration
from tests import REPO
from tests.integration.amiproxy import AmiProxy
from tests.integration.amitools import AmiRecorder, until
from tests.pgserver import throwaway_database
from tests.unit.test_records import postgres  # noqa: F401 - the session's PostgreSQL fixture

pytestmark = pytest.mark.integration

DB_TIMEOUTS = {"timeout": 0.5, "connect_timeout": 0.5, "retry_initial": 0.2, "retry_max": 0.5}


class Outage:
    """One way for the database to fail: ``begin()`` / ``end()``; ``url`` to configure."""

    url = ""

    async def begin(self) -> None: ...

    async def end(self) -> None: ...


class SqliteLocked(Outage):
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "ivr.db"
        self.url = f"sqlite:///{self.path}"
        self.conn: sqlite3.Connection | None = None

    async def begin(self) -> None:
        # In a thread: waiting out the controller's write must not block its event loop.
        def lock() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=5, check_same_thread=False)
            conn.execute("BEGIN EXCLUSIVE")
            return conn

        self.conn = await asyncio.to_thread(lock)

    async def end(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()


class SqliteDown(Outage):
    """The database's directory cannot be made (a file is in its place)."""

    def __init__(self, tmp_path: Path) -> None:
        self.blocker = tmp_path / "var"
        self.url = f"sqlite:///{self.blocker / 'ivr.db'}"

    async def begin(self) -> None:
        self.blocker.write_text("a file where the database directory must be")

    async def end(self) -> None:
        self.blocker.unlink()


class PostgresBehindProxy(Outage):
    def __init__(self, proxy: AmiProxy, name: str, hung: bool) -> None:
        self.proxy, self.hung = proxy, hung
        self.url = f"postgresql://ivr@127.0.0.1:{proxy.port}/{name}"

    async def begin(self) -> None:
        if self.hung:
            self.proxy.freeze()  # accepts, forwards nothing: a hung server
        else:
            self.proxy.refuse()  # every connection closed at once: a server that is down

    async def end(self) -> None:
        self.proxy.thaw()
        self.proxy.cut()  # connections frozen meanwhile are dead for the client too


@asynccontextmanager
async def outage_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Outage]:
    if kind == "sqlite-locked":
        yield SqliteLocked(tmp_path)
        return
    if kind == "sqlite-down":
        yield SqliteDown(tmp_path)
        return
    base: str = request.getfixturevalue("postgres")
    sock = base.split("host=", 1)[1]
    name = f"outage{abs(hash(request.node.nodeid)) % 10**8}"
    async with throwaway_database(base, name), AmiProxy(f"{sock}/.s.PGSQL.5432", 0) as proxy:
        yield PostgresBehindProxy(proxy, name, hung=kind == "postgres-hung")


async def start_controller(controller_config, outage: Outage, tmp_path: Path):
    from ivr.controller import Controller

    config = controller_config()
    config = dataclasses.replace(config, database=dataclasses.replace(
        config.database, url=outage.url, spool_dir=str(tmp_path / "spool"), **DB_TIMEOUTS))
    ctl = Controller(config)
    published: list[CallEvent] = []
    queue = ctl.bus.open_queue()  # every event the controller publishes, for the final count

    def drain() -> None:
        published.extend(queue.get_nowait() for _ in range(queue.qsize()))

    started = time.monotonic()
    async with asyncio.timeout(3):  # the finding: start raised, or was held 30 s
        await ctl.start()
    start_s = time.monotonic() - started
    assert ctl.agi.listening
    await ctl.ready(15)
    return ctl, published, drain, start_s


async def place_call(ami: AmiRecorder, exten: str, steps: list[str]) -> tuple[str, int]:
    """A Local caller (its ;2 half runs ``steps``) into ivr-inbound; returns (call id, since)."""
    await ami.add_dialplan("test-caller", exten, steps)
    since = len(ami.events)
    await ami.originate(f"Local/{exten}@test-caller", "ivr-inbound", "s")
    chan = f"Local/{exten}@test-caller"
    new = (await ami.wait_for(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith(chan)
                              and e.get("Channel", "").endswith(";1"), timeout=10, since=since))[0]
    return str(new["Linkedid"]), since


def greeting_of(ctl) -> list[str]:
    return list(ctl.inbound.choose_greeting(ctl.now(), ctl.config).prompts)


def caller_steps(ctl) -> list[str]:
    """A caller who hears the whole greeting and hangs up in the pause after it."""
    lang = ctl.config.switch.language
    length = sum(prompt_duration(REPO / "prompts" / "build", lang, p) for p in greeting_of(ctl))
    return ["Answer()", f"Wait({length + 1.5:.1f})", "Hangup()"]


async def greeted_and_handled(ami: AmiRecorder, ctl, exten: str, since: int) -> None:
    """The caller heard the whole greeting from the controller (AGI STREAM FILE of each
    prompt, played through) and the call ended by the caller's hang-up, all tasks done."""
    chan = f"Local/{exten}@test-caller"
    mine = lambda e: e.get("Channel", "").startswith(chan) and e.get("Channel", "").endswith(";1")
    greeting = greeting_of(ctl)
    ends = await ami.wait_for(lambda e: e.event == "AGIExecEnd" and mine(e)
                              and e.get("Command", "").startswith("STREAM FILE"), timeout=30, since=since,
                              count=len(greeting))
    assert [e["Command"].split()[2].rsplit("/", 1)[1] for e in ends] == greeting
    assert all(e["Result"] == "Success" for e in ends), [dict(e) for e in ends]
    await ami.wait_for(lambda e: e.event == "Hangup" and mine(e), timeout=20, since=since)
    assert not ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback" and mine(e),
                        since), "the call fell back: the controller did not handle it"
    assert await ctl.agi.wait_idle(5)


async def everything_on_record(ctl, published: list[CallEvent], drain, call_id: str) -> dict[str, Any]:
    """Once the database is back: every published event on record once, or counted."""
    store = await ctl.operations.records.wait_open(10)
    record = await until(lambda: _ended(store, call_id), 10, "the call's record closed")
    drain()
    recorder = ctl.operations.records.recorder
    await until(lambda: recorder.applied + recorder.duplicates >= len(published), 10, "all events written")
    rows = await store.db.fetchall("SELECT event_id FROM call_events")
    on_record = [r["event_id"] for r in rows]
    assert len(on_record) == len(set(on_record)), "an event written twice"
    missing = {e.id for e in published} - set(on_record)
    status = ctl.operations.records.status()
    assert len(missing) == status["dropped"] == 0, (missing, status)
    assert status["state"] == "up" and status["spooled"] == 0
    kinds = [e["kind"] for e in record["events"]]
    # call.started (the switch's own start of the call, README "Controller pairs") comes first
    assert kinds[0] in ("call.started", "call.arrived") and "call.arrived" in kinds[:2]
    assert "greeting.played" in kinds and kinds[-1] == "call.ended"
    return record


async def _ended(store, call_id: str) -> dict[str, Any] | None:
    record = await store.call(call_id)
    return record if record is not None and record["state"] == "ended" else None


@pytest.mark.parametrize("kind", ["sqlite-locked", "sqlite-down", "postgres-down", "postgres-hung"])
async def test_database_failing_at_start(kind, switch, ami, controller_config, tmp_path, request):
    async with outage_of(kind, tmp_path, request) as outage:
        await outage.begin()
        ctl, published, drain, start_s = await start_controller(controller_config, outage, tmp_path)
        try:
            print(f"{kind}: controller started in {start_s:.3f} s")
            call_id, since = await place_call(ami, f"start-{kind}", caller_steps(ctl))
            await greeted_and_handled(ami, ctl, f"start-{kind}", since)
            records = ctl.operations.records
            assert records.recorder.state == "down" and records.store is None
            await until(lambda: records.status()["spooled"] >= 3, 5, "the call's events spooled")
            spooled = records.status()["spooled"]
            await outage.end()
            started = time.monotonic()
            record = await everything_on_record(ctl, published, drain, call_id)
            print(f"{kind}: {spooled} spooled events on record {time.monotonic() - started:.2f} s after the "
                  f"database came back")
            assert record["hung_up_first"] == "caller"
        finally:
            await ctl.stop()


@pytest.mark.parametrize("kind", ["sqlite-locked", "postgres-down", "postgres-hung"])
async def test_database_failing_mid_call(kind, switch, ami, controller_config, tmp_path, request):
    async with outage_of(kind, tmp_path, request) as outage:
        ctl, published, drain, _ = await start_controller(controller_config, outage, tmp_path)
        try:
            records = ctl.operations.records
            await records.wait_open(10)
            exten = f"mid-{kind}"
            call_id, since = await place_call(ami, exten, caller_steps(ctl))
            # The call is under way (its first prompt started) when the database fails.
            await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Channel", "").startswith(
                f"Local/{exten}@test-caller") and "STREAM FILE" in e.get("Command", ""), timeout=10, since=since)
            await outage.begin()
            await greeted_and_handled(ami, ctl, exten, since)
            await records.recorder.wait_state("down", 5)
            await outage.end()
            record = await everything_on_record(ctl, published, drain, call_id)
            assert record["hung_up_first"] == "caller"
        finally:
            await ctl.stop()
