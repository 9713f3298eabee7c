"""The per-kind appliers of the call records: what each :class:`~ivr.events.CallEvent`
kind changes in the figures (the calls row, ring legs, alarms, holds, transfers, messages,
call-backs), inside the transaction :class:`~ivr.records.store.CallStore` opened for it,
after the event itself went into the event log.

Event data read here (every key is optional; other keys are kept in the event log):

=====================  ==================================================================
``call.arrived``       ``caller``, ``channel``; ``call.started`` (the switch's, every node) the same
``greeting.played``    ``greeting`` or ``prompts`` (prompt ids, str or list), ``holiday``
``silent.stage``       ``stage`` (``"1"``/``"2"``/``"3"``/``"released"``/``"speech"``/``"dtmf"``)
``ring.started``       ``agent``
``ring.alarm``         ``agent``, ``level`` (warning/critical), ``rings``
``ring.answered``      ``agent``, ``rings``, ``within_three``, ``late``
``ring.noanswer``      ``agent``, ``rings``, ``reason``
``hold.start``         —
``hold.reminder``      —
``hold.choices``       ``choice`` (when the caller has chosen: keep/message/callback)
``hold.resume``        ``held_seconds``
``hold.abandon``       ``held_seconds``
``message.recorded``   ``item`` (its id), ``name``, ``company``, ``phone`` or ``caller_number``,
                       ``best_time``, ``for_agent`` or ``agent``, ``recording`` or ``file``, ``note``,
                       ``recorded`` (the recording is not empty), ``held_seconds``: the one store
                       of messages (the recording itself stays a file)
``callback.requested`` ``item``, ``phone`` or ``caller_number``, ``best_time``, ``for_agent`` or ``agent``,
                       ``target`` (agent number, ``queue:NAME``, "" any), ``held_by``: merged into
                       the open call-back of (phone, target) if there is one (records/callbacks.py)
``transfer.state``     ``state``, ``target``, ``reason``
``call.hangup``        ``channel``, ``side``, ``cause``
``call.ended``         ``hung_up_first`` (caller/agent/system/unknown), ``cause``, ``started_at``,
                       ``reason``; the first ``call.ended`` of a call is final
=====================  ==================================================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ivr.events import CallEvent
from ivr.records import callbacks as cbq
from ivr.records.db import Row, Tx

log = structlog.get_logger("ivr.records")

TRANSFER_FINAL = {"completed", "returned", "abandoned"}
SILENT_LEFT = {"speech", "dtmf"}


def _new_id() -> str:
    return uuid.uuid4().hex


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


Handler = Callable[[Tx, CallEvent], Awaitable[None]]


class Appliers:
    """One applier per event kind; ``switch``: the switch the call-backs are placed by."""

    def __init__(self, switch: str) -> None:
        self.switch = switch
        self.handlers: dict[str, Handler] = {
            "call.arrived": self._arrived,
            "call.started": self._arrived,
            "greeting.played": self._greeting,
            "silent.stage": self._silent,
            "ring.started": self._ring_started,
            "ring.alarm": self._ring_alarm,
            "ring.answered": self._ring_answered,
            "ring.noanswer": self._ring_noanswer,
            "hold.start": self._hold_start,
            "hold.reminder": self._hold_reminder,
            "hold.choices": self._hold_choices,
            "hold.resume": self._hold_end("resumed"),
            "hold.abandon": self._hold_end("abandoned"),
            "unclear.start": self._unclear_start,
            "unclear.stage": self._unclear_stage,
            "message.recorded": self._message,
            "callback.requested": self._callback,
            "transfer.state": self._transfer,
            "call.ended": self._ended,
        }

    async def apply(self, tx: Tx, event: CallEvent) -> None:
        """The figures of ``event`` (unknown kinds change none: the event log keeps them)."""
        handler = self.handlers.get(event.kind)
        if handler is not None:
            await handler(tx, event)

    @staticmethod
    async def _set_state(tx: Tx, ev: CallEvent, state: str) -> None:
        # A call that has ended stays ended, whatever arrives late.
        await tx.execute(
            "UPDATE calls SET state = ?, state_since = ? WHERE call_id = ? AND state <> 'ended'",
            (state, ev.at, ev.call_id),
        )

    async def _arrived(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "UPDATE calls SET arrived_at = CASE WHEN ? < arrived_at THEN ? ELSE arrived_at END,"
            " caller = COALESCE(?, caller), channel = COALESCE(?, channel) WHERE call_id = ?",
            (ev.at, ev.at, _text(d.get("caller")), _text(d.get("channel")), ev.call_id),
        )

    async def _greeting(self, tx: Tx, ev: CallEvent) -> None:
        await tx.execute(
            "UPDATE calls SET greeting = ?, holiday = ? WHERE call_id = ?",
            (_text(ev.data.get("greeting", ev.data.get("prompts"))), _text(ev.data.get("holiday")), ev.call_id),
        )
        await self._set_state(tx, ev, "greeting")

    async def _silent(self, tx: Tx, ev: CallEvent) -> None:
        stage = _text(ev.data.get("stage"))
        await tx.execute("UPDATE calls SET silent_stage = ? WHERE call_id = ?", (stage, ev.call_id))
        if stage not in SILENT_LEFT:
            await self._set_state(tx, ev, "silent")

    async def _ring_started(self, tx: Tx, ev: CallEvent) -> None:
        agent = _text(ev.data.get("agent")) or ""
        await tx.execute(
            "INSERT INTO ring_legs (leg_id, call_id, agent, started_at) VALUES (?, ?, ?, ?)",
            (_new_id(), ev.call_id, agent, ev.at),
        )
        await tx.execute("UPDATE calls SET agent = ? WHERE call_id = ?", (agent or None, ev.call_id))
        await self._set_state(tx, ev, "ringing")

    async def _ring_alarm(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "INSERT INTO alarms (alarm_id, call_id, agent, level, rings, at) VALUES (?, ?, ?, ?, ?, ?)",
            (_new_id(), ev.call_id, _text(d.get("agent")), _text(d.get("level")) or "warning",
             _int(d.get("rings")), ev.at),
        )

    async def _close_leg(self, tx: Tx, ev: CallEvent, outcome: str, within: Any = None, late: Any = None) -> None:
        agent = _text(ev.data.get("agent")) or ""
        rings = _int(ev.data.get("rings"))
        open_legs = await tx.fetchall(
            "SELECT leg_id FROM ring_legs WHERE call_id = ? AND agent = ? AND ended_at IS NULL"
            " ORDER BY started_at DESC",
            (ev.call_id, agent),
        )
        if open_legs:
            await tx.execute(
                "UPDATE ring_legs SET ended_at = ?, rings = ?, outcome = ?, within_three = ?, late = ?"
                " WHERE leg_id = ?",
                (ev.at, rings, outcome, _flag(within), _flag(late), open_legs[0]["leg_id"]),
            )
        else:  # the start was missed (controller restarted while ringing): keep what we know
            await tx.execute(
                "INSERT INTO ring_legs (leg_id, call_id, agent, started_at, ended_at, rings, outcome,"
                " within_three, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_new_id(), ev.call_id, agent, ev.at, ev.at, rings, outcome, _flag(within), _flag(late)),
            )

    async def _ring_answered(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        rings = _int(d.get("rings"))
        within = d.get("within_three", rings is not None and rings <= 3)
        await self._close_leg(tx, ev, "answered", within, d.get("late", False))
        await tx.execute(
            "UPDATE calls SET agent = COALESCE(?, agent), rings = ?, answered_at = ?, within_three = ?"
            " WHERE call_id = ?",
            (_text(d.get("agent")), rings, ev.at, _flag(within), ev.call_id),
        )
        await self._set_state(tx, ev, "talking")
        # The number reached an agent on its own: its call-backs are not needed any more.
        rows = await tx.fetchall("SELECT caller FROM calls WHERE call_id = ?", (ev.call_id,))
        if rows and await cbq.cancel_for_caller(tx, rows[0]["caller"], ev.at, self.switch):
            log.info("callbacks.cancelled_called_in", call_id=ev.call_id)

    async def _ring_noanswer(self, tx: Tx, ev: CallEvent) -> None:
        await self._close_leg(tx, ev, _text(ev.data.get("reason")) or "noanswer")
        await self._set_state(tx, ev, "waiting")

    async def _open_hold(self, tx: Tx, call_id: str) -> Row | None:
        rows = await tx.fetchall(
            "SELECT hold_id, started_at FROM holds WHERE call_id = ? AND ended_at IS NULL"
            " ORDER BY started_at DESC",
            (call_id,),
        )
        return rows[0] if rows else None

    async def _hold_start(self, tx: Tx, ev: CallEvent) -> None:
        if await self._open_hold(tx, ev.call_id) is None:
            await tx.execute(
                "INSERT INTO holds (hold_id, call_id, started_at) VALUES (?, ?, ?)",
                (_new_id(), ev.call_id, ev.at),
            )
        await self._set_state(tx, ev, "hold")

    async def _hold_or_start(self, tx: Tx, ev: CallEvent) -> Row:
        hold = await self._open_hold(tx, ev.call_id)
        if hold is None:  # the start was missed: the hold is known from now on
            await self._hold_start(tx, ev)
            hold = await self._open_hold(tx, ev.call_id)
            assert hold is not None
        return hold

    async def _hold_reminder(self, tx: Tx, ev: CallEvent) -> None:
        hold = await self._hold_or_start(tx, ev)
        await tx.execute("UPDATE holds SET reminders = reminders + 1 WHERE hold_id = ?", (hold["hold_id"],))

    async def _hold_choices(self, tx: Tx, ev: CallEvent) -> None:
        hold = await self._hold_or_start(tx, ev)
        await tx.execute(
            "UPDATE holds SET choices_offered = 1, choice = COALESCE(?, choice) WHERE hold_id = ?",
            (_text(ev.data.get("choice")), hold["hold_id"]),
        )

    async def _unclear_start(self, tx: Tx, ev: CallEvent) -> None:
        """R3 unclear line: the caller is aside (every stage is kept in call_events)."""
        await self._set_state(tx, ev, "unclear")

    async def _unclear_stage(self, tx: Tx, ev: CallEvent) -> None:
        if ev.data.get("stage") == "returned":
            await self._set_state(tx, ev, "talking")
        else:
            await self._set_state(tx, ev, "unclear")

    def _hold_end(self, outcome: str) -> Handler:
        async def end(tx: Tx, ev: CallEvent) -> None:
            await self._close_hold(tx, ev, outcome)
            if outcome == "resumed":
                await self._set_state(tx, ev, "talking")

        return end

    async def _close_hold(self, tx: Tx, ev: CallEvent, outcome: str) -> None:
        hold = await self._open_hold(tx, ev.call_id)
        if hold is None:
            return
        held = ev.data.get("held_seconds")
        duration = float(held) if held is not None else max(ev.at - float(hold["started_at"]), 0.0)
        await tx.execute(
            "UPDATE holds SET ended_at = ?, duration = ?, outcome = ? WHERE hold_id = ?",
            (ev.at, duration, outcome, hold["hold_id"]),
        )
        await tx.execute(
            "UPDATE calls SET hold_count = hold_count + 1, hold_seconds = hold_seconds + ? WHERE call_id = ?",
            (duration, ev.call_id),
        )

    async def _message(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "INSERT INTO messages (message_id, call_id, at, name, company, phone, best_time, for_agent,"
            " recording, note, recorded, held_seconds, switch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (message_id) DO NOTHING",
            (_text(d.get("item")) or _new_id(), ev.call_id, ev.at, _text(d.get("name")), _text(d.get("company")),
             _text(d.get("phone", d.get("caller_number"))), _text(d.get("best_time")),
             _text(d.get("for_agent", d.get("agent"))), _text(d.get("recording", d.get("file"))),
             _text(d.get("note")), _flag(d.get("recorded")), _float(d.get("held_seconds")), self.switch),
        )
        await self._close_hold(tx, ev, "message")

    async def _callback(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        agent = _text(d.get("for_agent", d.get("agent")))
        await cbq.request(
            tx, callback_id=_text(d.get("item")) or _new_id(), call_id=ev.call_id, at=ev.at,
            phone=_text(d.get("phone", d.get("caller_number"))), target=_text(d.get("target")) or "",
            best_time=_text(d.get("best_time")), held_by=_text(d.get("held_by")) or agent,
            not_before=nb if isinstance(nb := d.get("not_before"), (int, float)) else None, switch=self.switch)
        await self._close_hold(tx, ev, "callback")

    async def _transfer(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        state = _text(d.get("state")) or "offered"
        open_rows = await tx.fetchall(
            "SELECT transfer_id FROM transfers WHERE call_id = ? AND finished = 0 ORDER BY started_at DESC",
            (ev.call_id,),
        )
        final = int(state in TRANSFER_FINAL)
        if open_rows and state != "offered":
            await tx.execute(
                "UPDATE transfers SET state = ?, reason = COALESCE(?, reason), target = COALESCE(?, target),"
                " updated_at = ?, finished = ? WHERE transfer_id = ?",
                (state, _text(d.get("reason")), _text(d.get("target")), ev.at, final,
                 open_rows[0]["transfer_id"]),
            )
        else:
            for row in open_rows:  # a new offer supersedes one never finished
                await tx.execute("UPDATE transfers SET finished = 1 WHERE transfer_id = ?", (row["transfer_id"],))
            await tx.execute(
                "INSERT INTO transfers (transfer_id, call_id, target, state, reason, started_at, updated_at,"
                " finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_new_id(), ev.call_id, _text(d.get("target")), state, _text(d.get("reason")), ev.at, ev.at, final),
            )
        await tx.execute("UPDATE calls SET transfer_state = ? WHERE call_id = ?", (state, ev.call_id))
        await self._set_state(tx, ev, "talking" if final else "transferring")

    async def _ended(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        done = await tx.fetchall("SELECT 1 AS x FROM calls WHERE call_id = ? AND ended_at IS NOT NULL",
                                 (ev.call_id,))
        if done:  # already closed (a late "ended while disconnected" after the real hang-up)
            return
        first = _text(d.get("hung_up_first"))
        if first is None:  # fall back on the first side that reported a hang-up
            rows = await tx.fetchall(
                "SELECT data FROM call_events WHERE call_id = ? AND kind = 'call.hangup' ORDER BY at",
                (ev.call_id,),
            )
            sides = [json.loads(r["data"]).get("side") for r in rows]
            first = next((s for s in sides if s), None)
        await self._close_hold(tx, ev, "ended")
        await tx.execute(
            "UPDATE ring_legs SET ended_at = ?, outcome = 'hangup' WHERE call_id = ? AND ended_at IS NULL",
            (ev.at, ev.call_id),
        )
        await tx.execute(
            "UPDATE transfers SET finished = 1 WHERE call_id = ? AND finished = 0", (ev.call_id,)
        )
        if d.get("started_at") is not None:  # the switch's own start of the call
            started = float(d["started_at"])
            await tx.execute(
                "UPDATE calls SET arrived_at = CASE WHEN ? < arrived_at THEN ? ELSE arrived_at END"
                " WHERE call_id = ?",
                (started, started, ev.call_id),
            )
        await tx.execute(
            "UPDATE calls SET state = 'ended', state_since = ?, ended_at = ?, duration = ? - arrived_at,"
            " hung_up_first = ?, hangup_cause = ? WHERE call_id = ?",
            (ev.at, ev.at, ev.at, first, _text(d.get("cause")), ev.call_id),
        )
