"""The controller's internal event bus: what happened to calls, in domain terms.

Feature services (rings, inbound, hold, transfer) publish :class:`CallEvent` objects;
the call records, the dashboard's live stream, metrics and webhooks subscribe. A slow or
failing subscriber never blocks or breaks call handling: each subscriber gets its own
bounded queue. On overflow the oldest event is handed to the subscriber's ``overflow``
callback (the call records spool it to disk) or, for a subscriber without one (a
dashboard stream), dropped, counted in :attr:`EventBus.dropped` and logged once per
overflowing stretch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("ivr.events")


@dataclass(frozen=True)
class CallEvent:
    """One thing that happened to a call.

    ``kind`` is dotted and stable, e.g. ``call.arrived``, ``greeting.played``,
    ``silent.stage``, ``ring.started``, ``ring.alarm``, ``ring.answered``,
    ``ring.noanswer``, ``hold.start``, ``hold.reminder``, ``hold.choices``,
    ``hold.choice``, ``hold.resume``, ``hold.abandon``, ``message.recorded``, ``callback.requested``,
    ``transfer.state``, ``call.hangup``, ``call.ended``.
    ``call_id`` is the caller channel's Linkedid (the Uniqueid of the first channel of
    the call), so every leg of one call lands on the same record.

    ``origin`` says who records it in a controller pair (README "Controller pairs"):
    ``"node"`` (what this node did or decided: recorded while it leads; a random id),
    ``"switch"`` (a fact the switch reported over AMI, which every node follows: recorded
    by every node, under an id made from the switch's own data, :meth:`EventBus.fact`) or
    ``"action"`` (a rule's action sent under its :mod:`ivr.once` key: recorded by the node
    that sent it, under an id made from the key, :meth:`EventBus.keyed`). The same fact or
    action written by two nodes has one id, so the records keep it once. A leader's own
    decision that a new leader can rebuild from the switch (a hold's start, a transfer's
    state) is ``"node"`` with an id made of switch data (:meth:`EventBus.decided`), so the
    dead leader's write and the rebuilt one coincide.
    """

    kind: str
    call_id: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # wall clock, seconds since the epoch
    # Unique per event: the records' key, so a replayed event is written once.
    id: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False)
    origin: str = field(default="node", compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "call_id": self.call_id, "at": self.at, **self.data}


NODE, SWITCH, ACTION = "node", "switch", "action"  # CallEvent.origin
UNREBUILT = "record.unrebuilt"  # EventBus.unrebuilt: a leader's record lost with it, to be counted


def event_id(switch: str, *parts: str) -> str:
    """A record id made only of what every node knows alike (the switch's name and its
    own data, or an action's key): never a node's clock or a random number. Parts are
    joined with a separator no AMI field or key carries (US, 0x1f)."""
    text = "\x1f".join((switch, *parts))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


Overflow = Callable[[CallEvent], None]


class EventBus:
    """``switch``: the name of the switch this controller serves (``[cluster] switch``),
    part of every deterministic event id (:func:`event_id`)."""

    def __init__(self, queue_size: int = 1000, switch: str = "default") -> None:
        self._queues: dict[asyncio.Queue[CallEvent], Overflow | None] = {}
        self._overflowing: set[asyncio.Queue[CallEvent]] = set()
        self._accept: dict[asyncio.Queue[CallEvent], Callable[[CallEvent], bool]] = {}
        self.queue_size = queue_size
        self.switch = switch
        self.dropped = 0

    def publish(self, event: CallEvent) -> None:
        for q, overflow in list(self._queues.items()):
            accept = self._accept.get(q)
            if accept is not None and not accept(event):
                continue
            if q.full():
                oldest = q.get_nowait()
                if overflow is not None:
                    overflow(oldest)
                else:
                    self.dropped += 1
                    if q not in self._overflowing:
                        self._overflowing.add(q)
                        log.warning("events.subscriber_overflow", queue_size=self.queue_size,
                                    dropped_total=self.dropped)
            elif q.qsize() < self.queue_size // 2:
                self._overflowing.discard(q)
            q.put_nowait(event)

    def emit(self, kind: str, call_id: str, **data: Any) -> CallEvent:
        event = CallEvent(kind, call_id, data)
        self.publish(event)
        return event

    def fact(self, kind: str, call_id: str, on: tuple[str, ...], at: float | None = None,
             **data: Any) -> CallEvent:
        """A switch fact (origin ``"switch"``): its id is the switch's name, the call and
        ``on``, the AMI fields that make it one fact (a leg's Uniqueid and what happened
        to it), so every node that saw it makes the same id. ``at``: the switch's time of
        it (its AMI Timestamp) when known."""
        event = CallEvent(kind, call_id, data, time.time() if at is None else at,
                          event_id(self.switch, "fact", call_id, *on), SWITCH)
        self.publish(event)
        return event

    def decided(self, kind: str, call_id: str, on: tuple[str, ...], at: float | None = None,
                **data: Any) -> CallEvent:
        """What the leader decided (origin ``"node"``: recorded while it leads), under an id
        made of the call and ``on``, switch data a new leader finds again (a keeper's or a
        transfer's id and the step): the leader's write and the one a new leader rebuilds
        from the switch at takeover (``rebuilt: true``) are one record."""
        event = CallEvent(kind, call_id, data, time.time() if at is None else at,
                          self.decided_id(call_id, on), NODE)
        self.publish(event)
        return event

    def decided_id(self, call_id: str, on: tuple[str, ...]) -> str:
        return event_id(self.switch, "decided", call_id, *on)

    def unrebuilt(self, kind: str, call_id: str, on: tuple[str, ...], reason: str) -> CallEvent:
        """A record of ``kind`` (id :meth:`decided_id` of ``on``) the dead leader may not have
        written and the new leader cannot rebuild from the switch: the records count it lost
        (``ivr_records_dropped_total{reason="leader_died"}``) unless it is on record."""
        return self.decided(UNREBUILT, call_id, ("unrebuilt", *on), missing=kind,
                            event_id=self.decided_id(call_id, on), reason=reason)

    def keyed(self, kind: str, call_id: str, key: str, at: float | None = None, **data: Any) -> CallEvent:
        """What a rule's action sent under its :mod:`ivr.once` key (origin ``"action"``):
        its id is the key and the kind, so a send repeated (a takeover, a node cut off
        the database) is recorded once."""
        event = CallEvent(kind, call_id, data, time.time() if at is None else at,
                          event_id(self.switch, "action", key, kind), ACTION)
        self.publish(event)
        return event

    async def subscribe(self, overflow: Overflow | None = None) -> AsyncGenerator[CallEvent, None]:
        """Iterate over events published from now on (until the consumer stops).
        ``overflow(event)`` takes the oldest queued event when the queue is full."""
        q = self.open_queue(overflow)
        try:
            while True:
                yield await q.get()
        finally:
            self.close_queue(q)

    def open_queue(self, overflow: Overflow | None = None,
                   queue: asyncio.Queue[CallEvent] | None = None, *,
                   accept: Callable[[CallEvent], bool] | None = None) -> asyncio.Queue[CallEvent]:
        """A subscription as a plain queue (``queue``, or a new one of ``queue_size``)
        for a consumer that takes several at once; end it with :meth:`close_queue`.
        With ``accept``, events for which it returns False are not queued."""
        q: asyncio.Queue[CallEvent] = asyncio.Queue(self.queue_size) if queue is None else queue
        self._queues[q] = overflow
        if accept is not None:
            self._accept[q] = accept
        return q

    def close_queue(self, q: asyncio.Queue[CallEvent]) -> None:
        self._queues.pop(q, None)
        self._accept.pop(q, None)
        self._overflowing.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

