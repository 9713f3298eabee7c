"""One event's step of the span folds (:mod:`ivr.records.spans`), for the common case: the
call has not ended and the event is the latest of its kinds on record by time (ties: an
opening first, then by id, as :func:`~ivr.records.spans.logged` sorts). Then the rows on
record are the fold of the events before it, and folding one more event changes only the
row it touches: a hold's or a ring leg's row, and the call's figures made of them. So a
queue call that rings dozens of members costs each ring event the same, not a read of every
earlier one (bench/records_write.py).

Whenever that does not hold (the call has ended, an event came late or at the same instant
as a later-sorting one, a row the fold would not have made), the caller derives the rows
again from all the events (:func:`ivr.records.spans.holds`, :func:`~ivr.records.spans.legs`),
and the call's end always does: both give the same rows (tests/unit/test_records_steps.py).
"""

from __future__ import annotations

import json
from typing import Any

from ivr.records.db import Row, Tx
from ivr.records.spans import HOLD_CLOSE, Logged, as_flag, as_int, as_text, hold_choice, leg_key, sort_key


def logged_event(event_id: str, kind: str, at: float, data: dict[str, Any]) -> Logged:
    """The event as the log gives it back (its data through JSON, as it was stored)."""
    return Logged(event_id, kind, float(at), json.loads(json.dumps(data, default=str)))


async def end_and_latest(tx: Tx, call_id: str, e: Logged, kinds: tuple[str, ...]) -> tuple[float | None, bool]:
    """The call's end (None: it goes on), and whether no event of ``kinds`` on record for
    the call sorts after ``e`` (itself on record); one query."""
    marks = ", ".join("?" * len(kinds))
    sql = ("SELECT c.ended_at, e.event_id, e.kind, e.at FROM calls c LEFT JOIN call_events e"  # noqa: S608 - placeholders only
           f" ON e.call_id = c.call_id AND e.at >= ? AND e.kind IN ({marks}) WHERE c.call_id = ?")
    rows = await tx.fetchall(sql, (e.at, *kinds, call_id))
    end = None if not rows or rows[0]["ended_at"] is None else float(rows[0]["ended_at"])
    mine = sort_key(e)
    later = (sort_key(Logged(r["event_id"], r["kind"], float(r["at"]), {})) > mine
             for r in rows if r["event_id"] is not None)
    return end, not any(later)


async def hold_step(tx: Tx, call_id: str, e: Logged) -> bool:
    """Fold ``e`` into the call's holds; False: not a single step (derive them all again)."""
    if e.data.get("via") == "api" and e.kind == "callback.requested":
        return True  # asked for through the API: no hold of the caller's (spans.fold_holds)
    open_ = await tx.fetchall(
        "SELECT hold_id, started_at, reminders, choices_offered, choice FROM holds"
        " WHERE call_id = ? AND ended_at IS NULL", (call_id,))
    if len(open_) > 1:
        return False  # not rows the fold made (at most one hold is open before the end)
    hold = open_[0] if open_ else None
    outcome = HOLD_CLOSE.get(e.kind)
    if outcome is not None:
        if hold is None:
            return True  # an end with nothing open: the fold ignores it
        held = e.data.get("held_seconds")
        duration = float(held) if held is not None else max(e.at - float(hold["started_at"]), 0.0)
        await tx.execute("UPDATE holds SET ended_at = ?, duration = ?, outcome = ? WHERE hold_id = ?",
                         (e.at, duration, outcome, hold["hold_id"]))
        # The fold's sum of the closed holds in time order: the same float additions.
        await tx.execute("UPDATE calls SET hold_count = hold_count + 1, hold_seconds = hold_seconds + ?"
                         " WHERE call_id = ?", (duration, call_id))
        return True
    if hold is None:  # a start, or a reminder or choice whose start was missed: held from here
        hold = {"hold_id": e.id, "started_at": e.at, "reminders": 0, "choices_offered": 0, "choice": None}
        await tx.execute(
            "INSERT INTO holds (hold_id, call_id, started_at, ended_at, duration, reminders, choices_offered,"
            " choice, outcome) VALUES (?, ?, ?, NULL, NULL, 0, 0, NULL, NULL)", (e.id, call_id, e.at))
    if e.kind == "hold.reminder":
        await tx.execute("UPDATE holds SET reminders = ? WHERE hold_id = ?",
                         (int(hold["reminders"]) + 1, hold["hold_id"]))
    elif e.kind == "hold.choices":
        await tx.execute("UPDATE holds SET choices_offered = 1 WHERE hold_id = ?", (hold["hold_id"],))
    elif e.kind == "hold.choice":
        await tx.execute("UPDATE holds SET choices_offered = 1, choice = ? WHERE hold_id = ?",
                         (hold_choice(e.data.get("choice")) or hold["choice"], hold["hold_id"]))
    return True


async def leg_step(tx: Tx, call_id: str, e: Logged) -> bool:
    """Fold ``e`` into the call's ring legs and its agent; False: not a single step."""
    d = e.data
    who = as_text(d.get("agent")) or ""
    if e.kind == "ring.started":
        await tx.execute(
            "INSERT INTO ring_legs (leg_id, call_id, agent, started_at, ended_at, rings, outcome, within_three,"
            " late) VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL)", (e.id, call_id, who, e.at))
        await _agent(tx, call_id, who)
        return True
    leg = await _open_leg(tx, call_id, leg_key(d))
    if leg is False:
        return False  # nothing written yet
    rings = as_int(d.get("rings"))
    if e.kind == "ring.answered":
        outcome, within, late = "answered", d.get("within_three", rings is not None and rings <= 3), d.get(
            "late", False)
        await _agent(tx, call_id, who)
    else:
        outcome, within, late = as_text(d.get("reason")) or "noanswer", None, None
    ends = (e.at, rings, outcome, as_flag(within), as_flag(late))
    if leg is not None:
        await tx.execute("UPDATE ring_legs SET ended_at = ?, rings = ?, outcome = ?, within_three = ?, late = ?"
                         " WHERE leg_id = ?", (*ends, leg))
    else:  # the start was missed (a controller restarted while ringing): what we know
        await tx.execute(
            "INSERT INTO ring_legs (leg_id, call_id, agent, started_at, ended_at, rings, outcome, within_three,"
            " late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (e.id, call_id, who, e.at, *ends))
    return True


async def _open_leg(tx: Tx, call_id: str, key: str) -> str | bool | None:
    """The open leg of ``key`` started last (the one the fold closes), by its start event;
    False: an open leg without its start on record (not a row the fold made)."""
    rows: list[Row] = await tx.fetchall(
        "SELECT l.leg_id, l.started_at, e.data FROM ring_legs l LEFT JOIN call_events e ON e.event_id = l.leg_id"
        " WHERE l.call_id = ? AND l.ended_at IS NULL", (call_id,))
    if any(r["data"] is None for r in rows):
        return False
    mine = [(float(r["started_at"]), r["leg_id"]) for r in rows if leg_key(json.loads(r["data"])) == key]
    return max(mine)[1] if mine else None


async def _agent(tx: Tx, call_id: str, who: str) -> None:
    if who:  # the agent rung or answering last (spans.fold_legs)
        await tx.execute("UPDATE calls SET agent = ? WHERE call_id = ?", (who, call_id))
