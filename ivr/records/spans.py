"""The rows that span a stretch of a call (holds, transfers, ring legs), read from the call's
event log in the events' own time order, never in the order they reached the database.

In a controller pair two nodes write one call's events (the standby the switch facts, such
as ``call.ended``; the leader its decisions, such as ``hold.resume``), and a node back from
a database outage writes its spool late: a call's events can be applied in any order. So
these rows are not edited event by event; each event of theirs (and the call's end) derives
them again from every event of theirs on record (``call_events``), sorted by ``at`` (the
AMI Timestamp for a switch fact, the sender's clock for the rest), and writes only what
changed. The same events give the same rows, whatever order they came in. The derivation
is pure (:func:`fold_holds`, :func:`fold_transfers`, :func:`fold_legs`); row ids are the ids of
the events that opened them.

The call's end (``calls.ended_at``, from its earliest ``call.ended``) closes what is still
open then: a hold ``ended``, a transfer ``finished``, a ring leg ``hangup``. An event
timed after the end is *after the end* (returned, counted and logged by the store):
a resume, reminder, the choices, the caller's choice or the start of a hold, a transfer's offer, a leg's start. What the
caller's own leaving reports is not: a hold's ``hold.abandon``, ``message.recorded``,
``callback.requested`` and a transfer's or a ring leg's end are seen after the hang-up
that ends the call, and say how the row ended (a hold closed so ends at the call's end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ivr.records.db import Row, Tx
from ivr.rules.hold import HOLD_CHOICES

HOLD_CLOSE = {"hold.resume": "resumed", "hold.abandon": "abandoned", "message.recorded": "message",
              "callback.requested": "callback"}
HOLD_KINDS = ("hold.start", "hold.reminder", "hold.choices", "hold.choice", *HOLD_CLOSE)
CALLER_LEFT = frozenset({"abandoned", "message", "callback"})  # reported after the caller's hang-up
TRANSFER_FINAL = frozenset({"completed", "returned", "abandoned"})
RING_KINDS = ("ring.started", "ring.answered", "ring.noanswer")
_RANK = {"hold.start": 0, "ring.started": 0}  # at one instant an opening comes before the rest


@dataclass(frozen=True)
class Logged:
    """One event from the log."""

    id: str
    kind: str
    at: float
    data: dict[str, Any]


def as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def as_flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def as_text(value: Any) -> str | None:
    """An event's value as a text column (a list joined with commas)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


async def logged(tx: Tx, call_id: str, kinds: tuple[str, ...]) -> list[Logged]:
    """The call's events of ``kinds``, in time order (an opening first at one instant, then by id)."""
    marks = ", ".join("?" * len(kinds))
    rows = await tx.fetchall(
        f"SELECT event_id, kind, at, data FROM call_events WHERE call_id = ? AND kind IN ({marks})",  # noqa: S608 - placeholders only
        (call_id, *kinds))
    events = [Logged(r["event_id"], r["kind"], float(r["at"]), json.loads(r["data"])) for r in rows]
    return sorted(events, key=sort_key)


def sort_key(e: Logged) -> tuple[float, int, str]:
    """The folds' order: by time, an opening first at one instant, then by id."""
    return e.at, _RANK.get(e.kind, 1), e.id


def hold_choice(value: Any) -> str | None:
    """A ``hold.choice`` event's choice as the holds record it: one of the known choices
    (keep, message, callback), else None (the row keeps what it had)."""
    return value if isinstance(value, str) and value in HOLD_CHOICES else None


def leg_key(data: dict[str, Any]) -> str:
    """A ring leg is its Uniqueid, or its agent for events without one."""
    return as_text(data.get("uniqueid")) or f"agent:{as_text(data.get('agent')) or ''}"


def fold_holds(events: list[Logged], end: float | None) -> tuple[list[Row], list[Logged]]:
    """The call's holds from its hold events in time order, and the events after the end."""
    holds: list[Row] = []
    after: list[Logged] = []
    open_: Row | None = None

    def close(hold: Row, at: float, outcome: str, held: Any) -> None:
        duration = float(held) if held is not None else max(at - hold["started_at"], 0.0)
        hold.update(ended_at=at, duration=duration, outcome=outcome)

    for e in events:
        if e.data.get("via") == "api" and e.kind == "callback.requested":
            continue  # asked for through the API (records/callbacks.py), not the held caller's choice
        outcome = HOLD_CLOSE.get(e.kind)
        if end is not None and e.at > end:
            if outcome not in CALLER_LEFT:
                after.append(e)
            elif open_ is not None:  # how the caller left, seen after the hang-up: closed at the end
                close(open_, end, outcome, e.data.get("held_seconds"))
                open_ = None
            continue
        if outcome is not None:
            if open_ is not None:
                close(open_, e.at, outcome, e.data.get("held_seconds"))
                open_ = None
            continue
        if open_ is None:  # a start, or a reminder or choice whose start was missed: held from here
            open_ = {"hold_id": e.id, "started_at": e.at, "ended_at": None, "duration": None, "reminders": 0,
                     "choices_offered": 0, "choice": None, "outcome": None}
            holds.append(open_)
        if e.kind == "hold.reminder":
            open_["reminders"] += 1
        elif e.kind == "hold.choices":
            open_["choices_offered"] = 1
        elif e.kind == "hold.choice":  # the caller's key at the limit: the latest in time stands
            open_["choices_offered"] = 1
            open_["choice"] = hold_choice(e.data.get("choice")) or open_["choice"]
    if open_ is not None and end is not None:
        close(open_, end, "ended", None)
    return holds, after


def fold_transfers(events: list[Logged], end: float | None) -> tuple[list[Row], list[Logged], str | None]:
    """The call's transfers from its ``transfer.state`` events in time order (a new offer
    supersedes one never finished), the events after the end, and the last state."""
    rows: list[Row] = []
    after: list[Logged] = []
    open_: Row | None = None
    last: str | None = None
    for e in events:
        d = e.data
        state = as_text(d.get("state")) or "offered"
        if end is not None and e.at > end and (open_ is None or state == "offered"):
            after.append(e)
            continue
        last, final = state, int(state in TRANSFER_FINAL)
        if open_ is not None and state != "offered":
            open_.update(state=state, reason=as_text(d.get("reason")) or open_["reason"],
                         target=as_text(d.get("target")) or open_["target"], updated_at=e.at, finished=final)
        else:
            if open_ is not None:
                open_["finished"] = 1
            open_ = {"transfer_id": e.id, "target": as_text(d.get("target")), "state": state,
                     "reason": as_text(d.get("reason")), "started_at": e.at, "updated_at": e.at, "finished": final}
            rows.append(open_)
        if final:
            open_ = None
    if open_ is not None and end is not None:
        open_["finished"] = 1
    return rows, after, last


def fold_legs(events: list[Logged], end: float | None) -> tuple[list[Row], list[Logged], str | None]:
    """The call's ring legs from its ring facts in time order (a leg is its Uniqueid, or its
    agent for events without one), the events after the end, and the agent rung or
    answering last."""
    legs: list[Row] = []
    after: list[Logged] = []
    open_: dict[str, list[Row]] = {}  # per leg, the latest start last
    agent: str | None = None
    for e in events:
        d = e.data
        who = as_text(d.get("agent")) or ""
        key = leg_key(d)
        if e.kind == "ring.started":
            if end is not None and e.at > end:
                after.append(e)
                continue
            leg = {"leg_id": e.id, "agent": who, "started_at": e.at, "ended_at": None, "rings": None,
                   "outcome": None, "within_three": None, "late": None}
            open_.setdefault(key, []).append(leg)
            legs.append(leg)
            agent = who or agent
            continue
        rings = as_int(d.get("rings"))
        if e.kind == "ring.answered":
            outcome, within, late = "answered", d.get("within_three", rings is not None and rings <= 3), d.get(
                "late", False)
            agent = who or agent
        else:
            outcome, within, late = as_text(d.get("reason")) or "noanswer", None, None
        waiting = open_.get(key)
        if waiting:
            leg = waiting.pop()
        else:  # the start was missed (a controller restarted while ringing): what we know
            leg = {"leg_id": e.id, "agent": who, "started_at": e.at}
            legs.append(leg)
        leg.update(ended_at=e.at, rings=rings, outcome=outcome, within_three=as_flag(within), late=as_flag(late))
    if end is not None:
        for waiting in open_.values():
            for leg in waiting:
                leg.update(ended_at=end, outcome="hangup")
    return legs, after, agent


async def sync_rows(tx: Tx, table: str, key: str, call_id: str, rows: list[Row]) -> None:
    """Make ``table``'s rows of the call exactly ``rows`` (keyed by ``key``), writing only
    what differs."""
    have = {r[key]: r for r in await tx.fetchall(f"SELECT * FROM {table} WHERE call_id = ?",  # noqa: S608 - this module's table names
                                                  (call_id,))}
    for row in rows:
        old = have.pop(row[key], None)
        cols = [c for c in row if c != key]
        if old is None:
            names = ", ".join((key, "call_id", *cols))
            await tx.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * (len(cols) + 2))})",  # noqa: S608 - this module's names
                             (row[key], call_id, *(row[c] for c in cols)))
        elif any(old[c] != row[c] for c in cols):
            sets = ", ".join(f"{c} = ?" for c in cols)
            await tx.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?",  # noqa: S608 - this module's names
                             (*(row[c] for c in cols), row[key]))
    for gone in have:
        await tx.execute(f"DELETE FROM {table} WHERE {key} = ?", (gone,))  # noqa: S608 - this module's names


async def call_end(tx: Tx, call_id: str) -> float | None:
    rows = await tx.fetchall("SELECT ended_at FROM calls WHERE call_id = ?", (call_id,))
    return None if not rows or rows[0]["ended_at"] is None else float(rows[0]["ended_at"])


async def holds(tx: Tx, call_id: str, end: float | None) -> list[Logged]:
    """Derive the call's holds and its hold figures again; the hold events after the end."""
    rows, after = fold_holds(await logged(tx, call_id, HOLD_KINDS), end)
    await sync_rows(tx, "holds", "hold_id", call_id, rows)
    closed = [r["duration"] for r in rows if r["ended_at"] is not None]
    await tx.execute("UPDATE calls SET hold_count = ?, hold_seconds = ? WHERE call_id = ?",
                     (len(closed), float(sum(closed)), call_id))
    return after


async def transfers(tx: Tx, call_id: str, end: float | None) -> list[Logged]:
    """Derive the call's transfers and its last transfer state again; the events after the end."""
    rows, after, last = fold_transfers(await logged(tx, call_id, ("transfer.state",)), end)
    await sync_rows(tx, "transfers", "transfer_id", call_id, rows)
    await tx.execute("UPDATE calls SET transfer_state = ? WHERE call_id = ?", (last, call_id))
    return after


async def legs(tx: Tx, call_id: str, end: float | None) -> list[Logged]:
    """Derive the call's ring legs and its agent again; the ring starts after the end."""
    rows, after, agent = fold_legs(await logged(tx, call_id, RING_KINDS), end)
    await sync_rows(tx, "ring_legs", "leg_id", call_id, rows)
    await tx.execute("UPDATE calls SET agent = COALESCE(?, agent) WHERE call_id = ?", (agent, call_id))
    return after
