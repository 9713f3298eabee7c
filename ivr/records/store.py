"""Call records: :class:`CallStore` turns :class:`~ivr.events.CallEvent` objects into rows.

Each event is applied in one transaction (committed before the next event), once (its
``CallEvent.id`` is the event log's key, so a replay, or the same switch fact or action
written by the other node of a pair, skips what is on record), keyed by
``call_id`` (the Linkedid), so a controller that restarts mid-call keeps writing the call's
later events onto the same record. The event log of every call is kept as it came
(``call_events``); the other tables are the figures read from it.

What each kind changes is :mod:`ivr.records.appliers`; the reads are
:class:`~ivr.records.queries.CallQueries`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import structlog

from ivr.events import UNREBUILT, CallEvent
from ivr.records import callbacks as cbq
from ivr.records.appliers import AfterEnd, Appliers
from ivr.records.db import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Database, Row, Tx, connect
from ivr.records.migrations import migrate
from ivr.records.queries import CallQueries

log = structlog.get_logger("ivr.records")

LIVE_STATES = ("arrived", "greeting", "silent", "ringing", "waiting", "talking", "hold", "transferring",
               "unclear")
BARE_ID = re.compile(r"\d+\.\d+")  # a Uniqueid of a switch with no asterisk.conf systemname


class CallStore(CallQueries):
    """``switch``: the name of the switch this controller records for (``[cluster] switch``),
    written on every call, event, message and call-back (issue 17); the reads take a filter."""

    def __init__(self, db: Database, switch: str = "default", *,
                 on_after_end: Callable[[str], None] | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.db, self.switch = db, switch
        # Events timed after their call's end that change nothing (spans.py), by kind; each
        # counted once, when it or the end is written, and logged (records.after_end).
        self.after_end: dict[str, int] = {}
        self.on_after_end = on_after_end
        # A dead leader's records its successor could not rebuild and found missing, by kind
        # (EventBus.unrebuilt); the recorder counts them dropped, reason leader_died.
        self.lost: dict[str, int] = {}
        self.on_lost = on_lost
        self._bare_ids_said = False  # a call id without the switch's systemname, logged once
        self.queue = cbq.CallbackQueue(db, switch)  # the call-backs this switch places (issue 18)
        self.appliers = Appliers(switch)  # what each kind changes

    @classmethod
    async def open(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                   connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, switch: str = "default",
                   on_after_end: Callable[[str], None] | None = None,
                   on_lost: Callable[[str], None] | None = None) -> CallStore:
        """Open and migrate; raises :class:`~ivr.records.db.DatabaseError` only, within
        about ``connect_timeout`` + ``timeout`` per migration."""
        db = await connect(url, timeout=timeout, connect_timeout=connect_timeout)
        try:
            applied = await migrate(db)
        except BaseException:
            await db.close()
            raise
        if applied:
            log.info("records.migrated", versions=applied, dialect=db.dialect)
        return cls(db, switch, on_after_end=on_after_end, on_lost=on_lost)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> bool:
        """True when the database answers (raises otherwise)."""
        row = await self.db.fetchone("SELECT 1 AS ok")
        return row is not None and row["ok"] == 1

    # -- writing ------------------------------------------------------------------------

    async def apply(self, event: CallEvent) -> bool:
        """Record one event (one transaction); unknown kinds land in the event log only.
        Idempotent: an event whose id is on record already (a spool replayed again, a lost
        commit reply, the other node of a pair) is skipped; returns False then."""
        after: list[AfterEnd] = []

        async def write(tx: Tx) -> bool:
            after.clear()  # a conflict's second try starts again
            return await self._write(tx, event, after)

        done = await self.db.run(write)
        self._count_after_end(after)
        return done

    async def apply_many(self, events: list[CallEvent]) -> list[bool]:
        """Record several events in order in one transaction (all or none), each as
        :meth:`apply` would; for a replay, one commit (one fsync) per batch."""
        after: list[AfterEnd] = []

        async def write(tx: Tx) -> list[bool]:
            after.clear()
            return [await self._write(tx, event, after) for event in events]

        done = await self.db.run(write)
        self._count_after_end(after)
        return done

    def _count_after_end(self, found: list[AfterEnd]) -> None:
        """Committed: count and log the events found after their call's end."""
        for call_id, e in found:
            if e.kind == UNREBUILT:  # the appliers found a dead leader's record missing
                kind = str(e.data.get("missing"))
                self.lost[kind] = self.lost.get(kind, 0) + 1
                log.warning("records.leader_record_lost", call_id=call_id, kind=kind, reason=e.data.get("reason"))
                if self.on_lost is not None:
                    self.on_lost(kind)
                continue
            self.after_end[e.kind] = self.after_end.get(e.kind, 0) + 1
            log.warning("records.after_end", call_id=call_id, kind=e.kind, event_id=e.id, at=e.at)
            if self.on_after_end is not None:
                self.on_after_end(e.kind)

    async def _write(self, tx: Tx, event: CallEvent, after: list[AfterEnd]) -> bool:
        # Insert-if-absent on the id; PostgreSQL makes a second node's insert wait, then skip.
        await self._ensure_call(tx, event)
        inserted = await tx.fetchall(
            "INSERT INTO call_events (event_id, call_id, kind, at, data, switch) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            (event.id, event.call_id, event.kind, event.at, json.dumps(event.data, default=str), self.switch),
        )
        if not inserted:
            return False
        # The call's row, locked until the commit: another node's event of this call waits
        # here, then reads the call's events with this one on record (records/spans.py).
        await tx.execute("UPDATE calls SET updated_at = ? WHERE call_id = ?", (time.time(), event.call_id))
        after.extend(await self.appliers.apply(tx, event))
        return True

    async def _ensure_call(self, tx: Tx, ev: CallEvent) -> None:
        if self.switch != "default" and not self._bare_ids_said and BARE_ID.fullmatch(ev.call_id):
            self._bare_ids_said = True  # README "Many switches": another switch makes the same ids
            log.warning("records.call_ids_without_systemname", switch=self.switch, call_id=ev.call_id)
        await tx.execute(
            "INSERT INTO calls (call_id, arrived_at, state, state_since, updated_at, switch) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (call_id) DO NOTHING",
            (ev.call_id, ev.at, "arrived", ev.at, time.time(), self.switch),
        )

    async def set_callback_status(self, callback_id: str, status: str, at: float | None = None) -> Row | None:
        """Mark a call-back request (open/done/failed/cancelled); None if there is no such
        request. Opening one again while another is open for the same number and target
        raises :class:`~ivr.records.callbacks.CallbackConflict` (409): one open call-back each."""
        async def mark(tx: Tx) -> list[Row]:
            rows = await tx.fetchall("SELECT * FROM callbacks WHERE callback_id = ?", (callback_id,))
            if not rows:
                return rows
            if status in cbq.OPEN_STATES and rows[0]["status"] not in cbq.OPEN_STATES:
                await cbq.check_reopen(tx, rows[0])
            await tx.execute("UPDATE callbacks SET status = ? WHERE callback_id = ?", (status, callback_id))
            await tx.execute(
                "INSERT INTO call_events (event_id, call_id, kind, at, data, switch) VALUES (?, ?, ?, ?, ?, ?)",
                (uuid.uuid4().hex, rows[0]["call_id"], "callback.status", time.time() if at is None else at,
                 json.dumps({"callback_id": callback_id, "status": status}), rows[0]["switch"]),
            )
            return rows

        rows = await self.db.run(mark)
        if not rows:
            return None
        return {**rows[0], "status": status}
