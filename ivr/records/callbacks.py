"""The durable call-back store (issue 18): the ``callbacks`` table and its attempts.

One open call-back (status ``open`` or ``dialling``) per (switch, phone, target): a second
request for it updates the row (best time, requests count, attempts reset, due now) and
keeps the first call's time (``at``) as its place in line. A unique partial index
(``callbacks_one_open``) guards it. Every attempt is a row of ``callback_attempts``
(agent, outcome, whether it used one of the customer's attempts).

Requests come from the event log (``callback.requested`` through
:meth:`~ivr.records.store.CallStore.apply`, so a request made while the database is away
waits in the spool); the scheduler (``ivr/callbacks``) reads and updates the rows here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection
from typing import Any

from ivr.errors import IvrError
from ivr.records.db import Database, Row, Tx

OPEN_STATES = ("open", "dialling")


class CallbackConflict(IvrError):
    """Another call-back for this number and target is open already."""

    error_id = "callback-conflict"
    http_status = 409


async def check_reopen(tx: Tx, row: Row) -> None:
    other = await tx.fetchall(
        "SELECT callback_id FROM callbacks WHERE phone = ? AND target = ? AND status IN ('open', 'dialling')"
        " AND callback_id <> ? AND switch = ?", (row["phone"], row["target"], row["callback_id"], row["switch"]))
    if other:
        raise CallbackConflict("another call-back for this number is open", callback_id=row["callback_id"],
                               open=other[0]["callback_id"])


def _id() -> str:
    return uuid.uuid4().hex


async def request(tx: Tx, *, callback_id: str, call_id: str, at: float, phone: str | None,
                  target: str, best_time: str | None, held_by: str | None,
                  not_before: float | None = None, switch: str = "default") -> str:
    """Add a request, or merge it into the open call-back of the same (switch, phone,
    target); returns the id of the call-back that holds it. ``not_before``: the caller's
    window opens then (no attempt before it)."""
    due = max(at, not_before) if not_before is not None else at
    rows = await tx.fetchall(
        "SELECT callback_id, at FROM callbacks WHERE phone = ? AND target = ? AND status IN ('open', 'dialling')"
        " AND switch = ?", (phone, target, switch))
    if rows:
        cb = rows[0]["callback_id"]
        await tx.execute(
            "UPDATE callbacks SET at = CASE WHEN ? < at THEN ? ELSE at END, best_time = COALESCE(?, best_time),"
            " held_by = COALESCE(?, held_by), for_agent = COALESCE(?, for_agent), requests = requests + 1,"
            " attempts = 0, next_attempt = CASE WHEN status = 'open' THEN ? ELSE next_attempt END,"
            " last_request = ?, updated_at = ? WHERE callback_id = ?",
            (at, at, best_time, held_by, held_by, due, at, at, cb))
        return str(cb)
    await tx.execute(
        "INSERT INTO callbacks (callback_id, call_id, at, phone, best_time, for_agent, status, target, held_by,"
        " attempts, next_attempt, requests, last_request, updated_at, switch)"
        " VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?, 0, ?, 1, ?, ?, ?) ON CONFLICT (callback_id) DO NOTHING",
        (callback_id, call_id, at, phone, best_time or "today", held_by, target, held_by, due, at, at, switch))
    return callback_id


async def cancel_for_caller(tx: Tx, phone: str | None, at: float, switch: str = "default") -> int:
    """The number called in and reached an agent: its open call-backs on this switch are
    cancelled (another switch's call centre may still owe it a call)."""
    if not phone:
        return 0
    rows = await tx.fetchall(
        "SELECT callback_id FROM callbacks WHERE phone = ? AND status = 'open' AND at <= ? AND switch = ?",
        (phone, at, switch))
    for r in rows:
        await tx.execute(
            "UPDATE callbacks SET status = 'cancelled', outcome = 'called-in', updated_at = ? WHERE callback_id = ?",
            (at, r["callback_id"]))
    return len(rows)


class CallbackQueue:
    """The scheduler's and the API's view of the call-backs of one switch (``switch``):
    each switch's leader places its own."""

    def __init__(self, db: Database, switch: str = "default") -> None:
        self.db, self.switch = db, switch

    async def open(self) -> list[Row]:
        """This switch's open call-backs in their place in line."""
        return await self.db.fetchall(
            "SELECT * FROM callbacks WHERE status IN ('open', 'dialling') AND switch = ? ORDER BY at, callback_id",
            (self.switch,))

    async def open_elsewhere(self, switch: str | None = None) -> list[Row]:
        """Other switches' open call-backs (only ``switch``'s when given), each switch's in line."""
        sql = "SELECT * FROM callbacks WHERE status IN ('open', 'dialling') AND switch <> ?"
        if switch is None:
            return await self.db.fetchall(sql + " ORDER BY switch, at, callback_id", (self.switch,))
        return await self.db.fetchall(sql + " AND switch = ? ORDER BY at, callback_id", (self.switch, switch))

    async def get(self, callback_id: str) -> Row | None:
        row = await self.db.fetchone("SELECT * FROM callbacks WHERE callback_id = ?", (callback_id,))
        if row is not None:
            row["history"] = await self.db.fetchall(
                "SELECT started_at, ended_at, agent, outcome, burned FROM callback_attempts"
                " WHERE callback_id = ? ORDER BY started_at", (callback_id,))
        return row

    async def attempts(self, since: float | None, until: float | None, switch: str | None = None) -> list[Row]:
        """Attempts started in [since, until) (of ``switch``'s call-backs only, when given)."""
        where: list[str] = []
        params: list[Any] = []
        if switch is not None:
            where.append("callback_id IN (SELECT callback_id FROM callbacks WHERE switch = ?)")
            params.append(switch)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if until is not None:
            where.append("started_at < ?")
            params.append(until)
        # only fixed clauses of this function are joined; every value is a bound parameter
        sql = "SELECT * FROM callback_attempts" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        return await self.db.fetchall(sql + " ORDER BY started_at", tuple(params))

    async def in_flight(self) -> list[Row]:
        """Attempts under way (their call-back ``dialling``): the call-back's row with the
        attempt's ``attempt_id``, ``channel`` (the agent leg's ChannelId), ``node`` and
        ``attempt_agent``; ``channel`` is None for attempts kept before migration 4."""
        return await self.db.fetchall(
            "SELECT c.*, a.attempt_id, a.channel, a.node, a.agent AS attempt_agent FROM callbacks c"
            " JOIN callback_attempts a ON a.callback_id = c.callback_id AND a.ended_at IS NULL"
            " WHERE c.status = 'dialling' AND c.switch = ? ORDER BY c.at, c.callback_id", (self.switch,))

    async def recover(self, at: float | None = None, keep: Collection[str] = ()) -> int:
        """After a restart or a takeover: attempts left ``dialling`` by a previous controller
        end as ``interrupted`` (not the customer's fault) and the call-back is due again;
        except the call-backs in ``keep`` (their attempt is still on the switch)."""
        now = time.time() if at is None else at

        async def run(tx: Tx) -> int:
            rows = await tx.fetchall("SELECT callback_id FROM callbacks WHERE status = 'dialling' AND switch = ?",
                                     (self.switch,))
            rows = [r for r in rows if r["callback_id"] not in keep]
            for r in rows:
                await tx.execute(
                    "UPDATE callback_attempts SET ended_at = ?, outcome = 'interrupted', burned = 0"
                    " WHERE callback_id = ? AND ended_at IS NULL", (now, r["callback_id"]))
                await tx.execute(
                    "UPDATE callbacks SET status = 'open', next_attempt = ?, updated_at = ?"
                    " WHERE callback_id = ? AND status = 'dialling'", (now, now, r["callback_id"]))
            return len(rows)

        return await self.db.run(run)

    async def create(self, *, phone: str, target: str, best_time: str, not_before: float, held_by: str | None,
                     call_id: str | None, at: float) -> Row | None:
        """A call-back asked for through the API: kept like a held caller's request (merged
        into the open one of (phone, target), which keeps its place). Without ``call_id``
        the request is a record of its own in ``calls`` (state ``callback-request``,
        ended at once: no call to count); with one, that call must be on record (None if
        not). Returns the call-back that holds the request."""
        async def run(tx: Tx) -> str | None:
            cid = call_id
            if cid is None:
                cid = f"api-{_id()}"
                await tx.execute(
                    "INSERT INTO calls (call_id, arrived_at, caller, state, state_since, ended_at, duration,"
                    " updated_at, switch) VALUES (?, ?, ?, 'callback-request', ?, ?, 0, ?, ?)",
                    (cid, at, phone, at, at, at, self.switch))
            elif not await tx.fetchall("SELECT 1 AS x FROM calls WHERE call_id = ?", (cid,)):
                return None
            data = {"phone": phone, "target": target, "best_time": best_time, "not_before": not_before,
                    "held_by": held_by, "via": "api"}
            await tx.execute("INSERT INTO call_events (event_id, call_id, kind, at, data, switch)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (_id(), cid, "callback.requested", at, json.dumps(data),
                                                            self.switch))
            return await request(tx, callback_id=_id(), call_id=cid, at=at, phone=phone, target=target,
                                 best_time=best_time, held_by=held_by, not_before=not_before, switch=self.switch)

        callback_id = await self.db.run(run)
        return None if callback_id is None else await self.get(callback_id)

    async def start_attempt(self, callback_id: str, agent: str, at: float, *, channel: str | None = None,
                            node: str | None = None) -> str | None:
        """Mark an open call-back ``dialling``; returns the attempt id (None: it is not
        open any more, e.g. cancelled meanwhile). ``channel``: the agent leg's ChannelId;
        ``node``: the controller placing it."""
        attempt = _id()

        async def run(tx: Tx) -> str | None:
            # One statement claims it: of two controllers on one database only one gets the row.
            claimed = await tx.fetchall(
                "UPDATE callbacks SET status = 'dialling', updated_at = ? WHERE callback_id = ? AND status = 'open'"
                " RETURNING callback_id", (at, callback_id))
            if not claimed:
                return None
            await tx.execute(
                "INSERT INTO callback_attempts (attempt_id, callback_id, started_at, agent, channel, node)"
                " VALUES (?, ?, ?, ?, ?, ?)", (attempt, callback_id, at, agent, channel, node))
            return attempt

        return await self.db.run(run)

    async def finish_attempt(self, callback_id: str, attempt_id: str, *, outcome: str, status: str,
                             attempts: int, next_attempt: float | None, burned: bool, at: float) -> None:
        async def run(tx: Tx) -> None:
            # The first outcome written stands: an attempt followed by two controllers (one
            # lost the lease, the other adopted it) is finished once.
            ended = await tx.fetchall(
                "UPDATE callback_attempts SET ended_at = ?, outcome = ?, burned = ? WHERE attempt_id = ?"
                " AND ended_at IS NULL RETURNING attempt_id", (at, outcome, int(burned), attempt_id))
            if not ended:
                return
            # A call-back cancelled while dialling stays cancelled.
            await tx.execute(
                "UPDATE callbacks SET status = CASE WHEN status = 'dialling' THEN ? ELSE status END,"
                " attempts = ?, next_attempt = ?, outcome = ?, updated_at = ? WHERE callback_id = ?",
                (status, attempts, next_attempt, outcome, at, callback_id))

        await self.db.run(run)

    async def cancel(self, callback_id: str, at: float, reason: str = "cancelled") -> Row | None:
        return await self._set(callback_id, "status = 'cancelled', outcome = ?", (reason,), at)

    async def expire(self, callback_id: str, at: float) -> Row | None:
        """A ``today`` call-back whose day is over without an attempt getting through."""
        return await self._set(callback_id, "status = 'expired', outcome = 'expired'", (), at, allowed=("open",))

    async def retry_now(self, callback_id: str, at: float) -> Row | None:
        """Due now (an open, failed or expired call-back is opened again, attempts reset
        when it had failed)."""
        return await self._set(
            callback_id, "status = 'open', next_attempt = ?,"
            " attempts = CASE WHEN status = 'open' THEN attempts ELSE 0 END", (at,), at,
            allowed=("open", "failed", "expired"))

    async def _set(self, callback_id: str, assignments: str, params: tuple[Any, ...], at: float,
                   allowed: tuple[str, ...] = OPEN_STATES) -> Row | None:
        async def run(tx: Tx) -> bool:
            rows = await tx.fetchall("SELECT * FROM callbacks WHERE callback_id = ?", (callback_id,))
            if not rows or rows[0]["status"] not in allowed:
                return bool(rows)
            if "status = 'open'" in assignments and rows[0]["status"] not in OPEN_STATES:
                await check_reopen(tx, rows[0])
            # assignments are this module's own constant SQL; values are bound parameters
            await tx.execute(f"UPDATE callbacks SET {assignments}, updated_at = ? WHERE callback_id = ?",  # noqa: S608
                             (*params, at, callback_id))
            return True

        if not await self.db.run(run):
            return None
        return await self.get(callback_id)
