"""Feeds the call records from the controller's :class:`~ivr.events.EventBus`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import structlog

from ivr.events import CallEvent, EventBus
from ivr.records.store import CallStore

log = structlog.get_logger("ivr.records")


class CallRecorder:
    """One subscriber task: applies every event, in order, each in its own transaction.

    A failing write is logged and counted; it never stops the recorder or touches a call.
    """

    def __init__(self, store: CallStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self.applied = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._recent: deque[CallEvent] = deque(maxlen=1000)  # handled lately, newest last

    async def start(self) -> None:
        before = self.bus.subscribers
        self._task = asyncio.create_task(self._run(), name="call-recorder")
        # Subscribed only once the task has run up to its first wait: events published
        # after start() returns are never missed.
        while self.bus.subscribers <= before and not self._task.done():
            await asyncio.sleep(0)

    async def _run(self) -> None:
        async for event in self.bus.subscribe():
            await self._apply(event)

    async def _apply(self, event: CallEvent) -> None:
        try:
            await self.store.apply(event)
            self.applied += 1
        except Exception:
            self.failed += 1
            log.exception("records.write_failed", kind=event.kind, call_id=event.call_id)
        self._recent.append(event)
        async with self._progress:
            self._progress.notify_all()

    async def wait_applied(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` events have been handled (written or failed)."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self.applied + self.failed >= count), timeout
            )

    async def handled(self, event: CallEvent, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout`` s) until this very event has been written; False if not.

        The dashboard's live stream sends an event once it is on record, so a page that
        reloads its tables on the event sees it there."""
        def seen() -> bool:
            return any(e is event for e in reversed(self._recent))

        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(seen), timeout)
            except TimeoutError:
                return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
