"""The call records read back: calls by filter, one call with everything that happened to it,
and the time windows of alarms, messages, call-backs, ring legs, holds and transfers the API,
the dashboard and the report read. Read-only; :class:`~ivr.records.store.CallStore` writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ivr.records.db import Database, Row, Tx


@dataclass(frozen=True)
class CallFilter:
    agent: str | None = None
    state: str | None = None  # a call state, or "live" / "ended"
    since: float | None = None
    until: float | None = None
    limit: int = 100
    switch: str | None = None  # only this switch's calls (issue 17)


# Tables with a switch column of their own; the others belong to a call and are found through it.
SWITCH_COLUMN = frozenset({"calls", "call_events", "messages", "callbacks"})


CALL_PARTS = {"call_events": "at", "ring_legs": "started_at", "alarms": "at", "holds": "started_at",
              "transfers": "started_at", "messages": "at", "callbacks": "at"}  # table: its order


async def _read_call(tx: Tx, call_id: str) -> Row | None:
    rows = await tx.fetchall("SELECT * FROM calls WHERE call_id = ?", (call_id,))
    if not rows:
        return None
    row = rows[0]
    for table, col in CALL_PARTS.items():
        sql = f"SELECT * FROM {table} WHERE call_id = ? ORDER BY {col}"  # noqa: S608 - names from CALL_PARTS
        parts = await tx.fetchall(sql, (call_id,))
        for r in parts:
            r.pop("call_id", None)
            if table == "call_events":
                r["data"] = json.loads(r["data"])
        row["events" if table == "call_events" else table] = parts
    return row


class CallQueries:
    """The read side of :class:`~ivr.records.store.CallStore` (which mixes it in)."""

    db: Database
    switch: str  # the switch this controller records for

    async def calls(self, f: CallFilter = CallFilter()) -> list[Row]:
        where: list[str] = []
        params: list[str | float] = []
        if f.agent is not None:
            where.append("agent = ?")
            params.append(f.agent)
        if f.switch is not None:
            where.append("switch = ?")
            params.append(f.switch)
        if f.state == "live":
            where.append("ended_at IS NULL")
        elif f.state is not None:
            where.append("state = ?")
            params.append(f.state)
        if f.since is not None:
            where.append("arrived_at >= ?")
            params.append(f.since)
        if f.until is not None:
            where.append("arrived_at < ?")
            params.append(f.until)
        sql = "SELECT * FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY arrived_at DESC LIMIT ?"
        return await self.db.fetchall(sql, (*params, f.limit))

    async def open_calls(self) -> list[str]:
        """The ids of every call of this switch whose record is not closed yet (another
        switch's calls are not on this switch's channel list, yet not ended)."""
        rows = await self.db.fetchall("SELECT call_id FROM calls WHERE ended_at IS NULL AND switch = ?",
                                      (self.switch,))
        return [r["call_id"] for r in rows]

    async def call(self, call_id: str) -> Row | None:
        """One call with everything that happened to it, or None: read in one snapshot, so
        a write meanwhile never shows the call's row and its events, holds or legs apart
        (an ended row without its ``call.ended`` event)."""
        return await self.db.run(lambda tx: _read_call(tx, call_id), read_only=True)

    async def _window(self, table: str, col: str, since: float | None, until: float | None,
                      extra: dict[str, Any], limit: int, switch: str | None = None) -> list[Row]:
        where: list[str] = []
        params: list[Any] = []
        if switch is not None:
            where.append("switch = ?" if table in SWITCH_COLUMN
                         else "call_id IN (SELECT call_id FROM calls WHERE switch = ?)")
            params.append(switch)
        if since is not None:
            where.append(f"{col} >= ?")
            params.append(since)
        if until is not None:
            where.append(f"{col} < ?")
            params.append(until)
        for key, value in extra.items():
            if value is not None:
                where.append(f"{key} = ?")
                params.append(value)
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table, column and key names are this module's literals
        if where:
            sql += " WHERE " + " AND ".join(where)
        return await self.db.fetchall(sql + f" ORDER BY {col} DESC LIMIT ?", (*params, limit))

    async def alarms(self, since: float | None = None, until: float | None = None, *,
                     agent: str | None = None, level: str | None = None, limit: int = 100,
                     switch: str | None = None) -> list[Row]:
        return await self._window("alarms", "at", since, until, {"agent": agent, "level": level}, limit, switch)

    async def messages(self, since: float | None = None, until: float | None = None, *,
                       agent: str | None = None, limit: int = 100, switch: str | None = None) -> list[Row]:
        return await self._window("messages", "at", since, until, {"for_agent": agent}, limit, switch)

    async def callbacks(self, since: float | None = None, until: float | None = None, *,
                        status: str | None = None, limit: int = 100, switch: str | None = None) -> list[Row]:
        return await self._window("callbacks", "at", since, until, {"status": status}, limit, switch)

    async def ring_legs(self, since: float | None, until: float | None, switch: str | None = None) -> list[Row]:
        return await self._window("ring_legs", "started_at", since, until, {}, 1_000_000, switch)

    async def holds(self, since: float | None, until: float | None, switch: str | None = None) -> list[Row]:
        return await self._window("holds", "started_at", since, until, {}, 1_000_000, switch)

    async def transfers(self, since: float | None, until: float | None, switch: str | None = None) -> list[Row]:
        return await self._window("transfers", "started_at", since, until, {}, 1_000_000, switch)

    async def ended_calls(self, since: float | None, until: float | None, switch: str | None = None) -> list[Row]:
        return await self._window("calls", "arrived_at", since, until, {"state": "ended"}, 1_000_000, switch)

    async def switches(self) -> list[str]:
        """The switches on record (every switch that has had a call)."""
        return [r["switch"] for r in await self.db.fetchall("SELECT DISTINCT switch FROM calls ORDER BY switch")]
