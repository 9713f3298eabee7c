"""The controller's internal event bus: what happened to calls, in domain terms.

Feature services (rings, inbound, hold, transfer) publish :class:`CallEvent` objects;
the call records, the dashboard's live stream, metrics and webhooks subscribe. A slow or
failing subscriber never blocks or breaks call handling: each subscriber gets its own
bounded queue, and an overflow drops the oldest event and counts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
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
    ``hold.resume``, ``hold.abandon``, ``message.recorded``, ``callback.requested``,
    ``transfer.state``, ``call.hangup``, ``call.ended``.
    ``call_id`` is the caller channel's Linkedid (the Uniqueid of the first channel of
    the call), so every leg of one call lands on the same record.
    """

    kind: str
    call_id: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # wall clock, seconds since the epoch

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "call_id": self.call_id, "at": self.at, **self.data}


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queues: set[asyncio.Queue[CallEvent]] = set()
        self.queue_size = queue_size
        self.dropped = 0

    def publish(self, event: CallEvent) -> None:
        for q in list(self._queues):
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(event)

    def emit(self, kind: str, call_id: str, **data: Any) -> CallEvent:
        event = CallEvent(kind, call_id, data)
        self.publish(event)
        return event

    async def subscribe(self) -> AsyncIterator[CallEvent]:
        """Iterate over events published from now on (until the consumer stops)."""
        q: asyncio.Queue[CallEvent] = asyncio.Queue(self.queue_size)
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._queues)
