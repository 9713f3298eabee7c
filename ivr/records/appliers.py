"""The per-kind appliers of the call records: what each :class:`~ivr.events.CallEvent`
kind changes in the figures (the calls row, ring legs, alarms, holds, transfers, messages,
call-backs), inside the transaction :class:`~ivr.records.store.CallStore` opened for it,
after the event itself went into the event log. Holds, transfers and ring legs, and the
call's figures made of them, are derived again from the call's events in time order
(:mod:`ivr.records.spans`), so they do not depend on the order the events were written in.

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
``hold.choices``       — (the choices were offered, the agent alerted)
``hold.choice``        ``choice``: what the held caller chose at the limit, keep/message/callback
                       (any other value is not recorded); the latest in time is the hold's
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
                       ``reason``; the earliest ``call.ended`` of a call is its end
``record.unrebuilt``   ``missing`` (a kind), ``event_id``, ``reason``: a new leader could not rebuild that
                       record of the dead leader's; lost (counted by the store) unless on record
=====================  ==================================================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import structlog

from ivr.events import UNREBUILT, CallEvent
from ivr.records import callbacks as cbq
from ivr.records import spans, steps
from ivr.records.db import Tx
from ivr.records.spans import as_flag, as_float, as_int, as_text

log = structlog.get_logger("ivr.records")

SILENT_LEFT = {"speech", "dtmf"}


def _new_id() -> str:
    return uuid.uuid4().hex


Handler = Callable[[Tx, CallEvent], Awaitable[None]]
Step = Callable[[Tx, str, spans.Logged], Awaitable[bool]]  # records/steps.py
Derive = Callable[[Tx, str, float | None], Awaitable[list[spans.Logged]]]  # records/spans.py
AfterEnd = tuple[str, spans.Logged]  # (call id, an event of that call after its end)
_AFTER: ContextVar[list[AfterEnd]] = ContextVar("after_end")  # the events after the end, per apply()


class Appliers:
    """One applier per event kind; ``switch``: the switch the call-backs are placed by."""

    def __init__(self, switch: str) -> None:
        self.switch = switch
        hold = self._hold("hold")
        self.handlers: dict[str, Handler] = {
            "call.arrived": self._arrived,
            "call.started": self._arrived,
            "greeting.played": self._greeting,
            "silent.stage": self._silent,
            "ring.started": self._ring("ringing"),
            "ring.alarm": self._ring_alarm,
            "ring.answered": self._ring_answered,
            "ring.noanswer": self._ring("waiting"),
            "hold.start": hold,
            "hold.reminder": hold,
            "hold.choices": hold,
            "hold.choice": hold,
            "hold.resume": self._hold("talking"),
            "hold.abandon": self._hold(None),
            "unclear.start": self._unclear_start,
            "unclear.stage": self._unclear_stage,
            "message.recorded": self._message,
            "callback.requested": self._callback,
            "transfer.state": self._transfer,
            "call.ended": self._ended,
            UNREBUILT: self._unrebuilt,
        }

    async def apply(self, tx: Tx, event: CallEvent) -> list[AfterEnd]:
        """The figures of ``event`` (unknown kinds change none: the event log keeps them);
        returns the events that this one found to be after the call's end (itself, or,
        for the call's end, those on record already), for the store to count once
        committed."""
        handler = self.handlers.get(event.kind)
        after: list[AfterEnd] = []
        if handler is not None:
            token = _AFTER.set(after)
            try:
                await handler(tx, event)
            finally:
                _AFTER.reset(token)
        return after

    @staticmethod
    def _after_end(ev: CallEvent, found: list[spans.Logged]) -> None:
        """Each event after the end is noted once: when it comes, or when the end does."""
        _AFTER.get().extend((ev.call_id, e) for e in found if e.id == ev.id or ev.kind == "call.ended")

    @staticmethod
    async def _set_state(tx: Tx, ev: CallEvent, state: str) -> None:
        # The state of the call's latest event by time (the first state, "arrived", gives way
        # to any); a call that has ended stays ended, whatever arrives late.
        await tx.execute(
            "UPDATE calls SET state = ?, state_since = ? WHERE call_id = ? AND state <> 'ended'"
            " AND (state = 'arrived' OR state_since <= ?)",
            (state, ev.at, ev.call_id, ev.at),
        )

    @staticmethod
    async def _latest(tx: Tx, ev: CallEvent) -> bool:
        """No event of this kind later in time on record for the call (ties: by id)."""
        rows = await tx.fetchall(
            "SELECT 1 AS x FROM call_events WHERE call_id = ? AND kind = ? AND (at > ? OR (at = ? AND event_id > ?))",
            (ev.call_id, ev.kind, ev.at, ev.at, ev.id),
        )
        return not rows

    async def _arrived(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "UPDATE calls SET arrived_at = CASE WHEN ? < arrived_at THEN ? ELSE arrived_at END,"
            " caller = COALESCE(?, caller), channel = COALESCE(?, channel) WHERE call_id = ?",
            (ev.at, ev.at, as_text(d.get("caller")), as_text(d.get("channel")), ev.call_id),
        )
        await self._duration(tx, ev.call_id)

    @staticmethod
    async def _duration(tx: Tx, call_id: str) -> None:
        """The call's length again: its start may be written after its end."""
        await tx.execute("UPDATE calls SET duration = ended_at - arrived_at WHERE call_id = ? AND ended_at IS NOT NULL",
                         (call_id,))

    async def _greeting(self, tx: Tx, ev: CallEvent) -> None:
        await tx.execute(
            "UPDATE calls SET greeting = ?, holiday = ? WHERE call_id = ?",
            (as_text(ev.data.get("greeting", ev.data.get("prompts"))), as_text(ev.data.get("holiday")), ev.call_id),
        )
        await self._set_state(tx, ev, "greeting")

    async def _silent(self, tx: Tx, ev: CallEvent) -> None:
        stage = as_text(ev.data.get("stage"))
        if await self._latest(tx, ev):  # stages of two nodes, or a spool replayed late
            await tx.execute("UPDATE calls SET silent_stage = ? WHERE call_id = ?", (stage, ev.call_id))
        if stage not in SILENT_LEFT:
            await self._set_state(tx, ev, "silent")

    async def _span(self, tx: Tx, ev: CallEvent, kinds: tuple[str, ...], step: Step, derive: Derive) -> None:
        """A hold's or a ring leg's event: one step of the fold when it is the latest of its
        kinds and the call goes on (records/steps.py), else the rows derived again."""
        e = steps.logged_event(ev.id, ev.kind, ev.at, ev.data)
        end, latest = await steps.end_and_latest(tx, ev.call_id, e, kinds)
        if end is None and latest and await step(tx, ev.call_id, e):
            return
        self._after_end(ev, await derive(tx, ev.call_id, end))

    def _ring(self, state: str) -> Handler:
        async def ring(tx: Tx, ev: CallEvent) -> None:
            await self._span(tx, ev, spans.RING_KINDS, steps.leg_step, spans.legs)
            await self._set_state(tx, ev, state)

        return ring

    async def _ring_alarm(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "INSERT INTO alarms (alarm_id, call_id, agent, level, rings, at) VALUES (?, ?, ?, ?, ?, ?)",
            (_new_id(), ev.call_id, as_text(d.get("agent")), as_text(d.get("level")) or "warning",
             as_int(d.get("rings")), ev.at),
        )

    async def _ring_answered(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        rings = as_int(d.get("rings"))
        within = d.get("within_three", rings is not None and rings <= 3)
        if await self._latest(tx, ev):  # a second answer (the caller back in the queue): the later one
            await tx.execute(
                "UPDATE calls SET rings = ?, answered_at = ?, within_three = ? WHERE call_id = ?",
                (rings, ev.at, as_flag(within), ev.call_id),
            )
        await self._ring("talking")(tx, ev)
        # The number reached an agent on its own: its call-backs are not needed any more.
        rows = await tx.fetchall("SELECT caller FROM calls WHERE call_id = ?", (ev.call_id,))
        if rows and await cbq.cancel_for_caller(tx, rows[0]["caller"], ev.at, self.switch):
            log.info("callbacks.cancelled_called_in", call_id=ev.call_id)

    def _hold(self, state: str | None) -> Handler:
        """A hold event: the call's holds derived again (:mod:`ivr.records.spans`)."""
        async def hold(tx: Tx, ev: CallEvent) -> None:
            await self._holds(tx, ev)
            if state is not None:
                await self._set_state(tx, ev, state)

        return hold

    async def _holds(self, tx: Tx, ev: CallEvent) -> None:
        await self._span(tx, ev, spans.HOLD_KINDS, steps.hold_step, spans.holds)

    async def _unclear_start(self, tx: Tx, ev: CallEvent) -> None:
        """R3 unclear line: the caller is aside (every stage is kept in call_events)."""
        await self._set_state(tx, ev, "unclear")

    async def _unclear_stage(self, tx: Tx, ev: CallEvent) -> None:
        if ev.data.get("stage") == "returned":
            await self._set_state(tx, ev, "talking")
        else:
            await self._set_state(tx, ev, "unclear")

    async def _message(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        await tx.execute(
            "INSERT INTO messages (message_id, call_id, at, name, company, phone, best_time, for_agent,"
            " recording, note, recorded, held_seconds, switch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (message_id) DO NOTHING",
            (as_text(d.get("item")) or _new_id(), ev.call_id, ev.at, as_text(d.get("name")), as_text(d.get("company")),
             as_text(d.get("phone", d.get("caller_number"))), as_text(d.get("best_time")),
             as_text(d.get("for_agent", d.get("agent"))), as_text(d.get("recording", d.get("file"))),
             as_text(d.get("note")), as_flag(d.get("recorded")), as_float(d.get("held_seconds")), self.switch),
        )
        await self._holds(tx, ev)

    async def _callback(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        agent = as_text(d.get("for_agent", d.get("agent")))
        await cbq.request(
            tx, callback_id=as_text(d.get("item")) or _new_id(), call_id=ev.call_id, at=ev.at,
            phone=as_text(d.get("phone", d.get("caller_number"))), target=as_text(d.get("target")) or "",
            best_time=as_text(d.get("best_time")), held_by=as_text(d.get("held_by")) or agent,
            not_before=nb if isinstance(nb := d.get("not_before"), (int, float)) else None, switch=self.switch)
        await self._holds(tx, ev)

    @staticmethod
    async def _unrebuilt(tx: Tx, ev: CallEvent) -> None:
        """A record the dead leader may not have written (EventBus.unrebuilt): not on record,
        it is lost; returned with the events after the end, the store counts it."""
        rows = await tx.fetchall("SELECT 1 AS x FROM call_events WHERE event_id = ?",
                                 (as_text(ev.data.get("event_id")) or "",))
        if not rows:
            _AFTER.get().append((ev.call_id, spans.Logged(ev.id, ev.kind, ev.at, ev.data)))

    async def _transfer(self, tx: Tx, ev: CallEvent) -> None:
        self._after_end(ev, await spans.transfers(tx, ev.call_id, await spans.call_end(tx, ev.call_id)))
        final = (as_text(ev.data.get("state")) or "offered") in spans.TRANSFER_FINAL
        await self._set_state(tx, ev, "talking" if final else "transferring")

    async def _ended(self, tx: Tx, ev: CallEvent) -> None:
        d = ev.data
        # The call's end is its earliest: a resync's guess ("ended while disconnected", at
        # the time of the resync) gives way to the switch's hang-up, whichever came first.
        before = await spans.call_end(tx, ev.call_id)
        if before is not None and before <= ev.at:
            return
        first = as_text(d.get("hung_up_first"))
        if first is None:  # fall back on the first side that reported a hang-up
            rows = await tx.fetchall(
                "SELECT data FROM call_events WHERE call_id = ? AND kind = 'call.hangup' ORDER BY at",
                (ev.call_id,),
            )
            sides = [json.loads(r["data"]).get("side") for r in rows]
            first = next((s for s in sides if s), None)
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
            (ev.at, ev.at, ev.at, first, as_text(d.get("cause")), ev.call_id),
        )
        # What the end closes, and what its events after the end (already on record) are.
        for derive in (spans.holds, spans.legs, spans.transfers):
            found = await derive(tx, ev.call_id, ev.at)
            self._after_end(ev, [e for e in found if before is None or e.at <= before])  # not counted yet
