"""Feeds the call records from the controller's :class:`~ivr.events.EventBus`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

import structlog

from ivr.events import CallEvent, EventBus
from ivr.records.store import CallStore

log = structlog.get_logger("ivr.records")


class CallRecorder:
    """One subscriber task: applies every event, in order, each in its own transaction.

    A failing write is logged and counted; it never stops the recorder or touches a call.
    The recorder may start before its store is open (``store=None``, the database being
    unreachable): it subscribes at once and events wait in its bus queue (bounded: the
    oldest are dropped and counted by the bus) until :meth:`use_store`. :meth:`stop`
    writes what is still queued, for at most ``drain_timeout`` s.
    """

    def __init__(self, store: CallStore | None, bus: EventBus, *, drain_timeout: float = 5.0) -> None:
        self.store = store
        self.bus = bus
        self.drain_timeout = drain_timeout
        self.applied = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._recent: deque[CallEvent] = deque(maxlen=1000)  # handled lately, newest last
        self._ready = asyncio.Event()
        if store is not None:
            self._ready.set()
        self._stopping = asyncio.Event()

    def use_store(self, store: CallStore) -> None:
        """The database is open now: write the events waiting and all that follow."""
        self.store = store
        self._ready.set()

    async def start(self) -> None:
        before = self.bus.subscribers
        self._task = asyncio.create_task(self._run(), name="call-recorder")
        # Subscribed only once the task has run up to its first wait: events published
        # after start() returns are never missed.
        while self.bus.subscribers <= before and not self._task.done():
            await asyncio.sleep(0)

    async def _run(self) -> None:
        events = self.bus.subscribe()
        try:
            while (event := await self._next(events)) is not None:
                await self._ready.wait()  # the database is not open yet: events wait
                await self._apply(event)
        finally:
            await events.aclose()

    async def _next(self, events: AsyncIterator[CallEvent]) -> CallEvent | None:
        """The next event; once stopping, None as soon as the queue is empty."""
        getter = asyncio.ensure_future(anext(events))  # the first one subscribes
        try:
            if not self._stopping.is_set():
                stopping = asyncio.ensure_future(self._stopping.wait())
                try:
                    await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                if getter.done():
                    return getter.result()
            # Publishing is synchronous: whatever was published is queued already and
            # comes within a loop turn or two. Nothing for longer means: drained.
            return await asyncio.wait_for(asyncio.shield(getter), 0.05)
        except (TimeoutError, StopAsyncIteration):
            return None
        finally:
            if not getter.done():
                getter.cancel()
                await asyncio.wait({getter})

    async def _apply(self, event: CallEvent) -> None:
        assert self.store is not None
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
        """Write the events still queued (for at most ``drain_timeout`` s), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        before = self.applied + self.failed
        if not self._ready.is_set():  # no database: nothing can be written
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.drain_timeout)
        if not done:
            log.error("records.drain_incomplete", timeout=self.drain_timeout, applied=self.applied)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("records.stopped", drained=self.applied + self.failed - before, applied=self.applied,
                 failed=self.failed, complete=bool(done) and self._ready.is_set())
