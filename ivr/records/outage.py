"""The recorder while the database is away and when it comes back (:class:`RecorderSpool`,
a base of :class:`~ivr.records.recorder.CallRecorder`): what goes to the spool on local
disk (the bus queue overflowing, the event in hand when the database went, what comes
while it is away) and the replay of the spool, in order and in batches, once it is back.
The recorder's writer task decides when; this is how."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import structlog

from ivr.ami.connection import Backoff
from ivr.events import CallEvent
from ivr.records.backend import BatchStore, Store
from ivr.records.db import DatabaseError, translate
from ivr.records.progress import RecorderProgress
from ivr.records.spool import Entry, SpoolError

log = structlog.get_logger("ivr.records")


async def wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` s."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class RecorderSpool(RecorderProgress):
    # Provided by CallRecorder.
    store: Store | None
    backoff: Backoff
    _ready: asyncio.Event
    _stopping: asyncio.Event
    _in_hand: CallEvent | None
    _delays: Iterator[float] | None
    _write: Callable[[CallEvent], Awaitable[bool]]
    _lost: Callable[[DatabaseError], Awaitable[None]]

    # -- the database away: spool what comes, until the next try ------------------------

    async def _wait_down(self) -> None:
        """The database is away: spool what comes, until the next try (or stop)."""
        if self._delays is None:
            self._delays = iter(self.backoff.delays())
        deadline = time.monotonic() + next(self._delays)
        assert self._inbox is not None
        while not self._stopping.is_set() and self.store is None:
            await self._spool_inbox()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._inbox.arrived.clear()
            if self._inbox.empty():
                await wait_any(self._inbox.arrived, self._stopping, self._ready, timeout=remaining)

    # -- the database back: the spool first, in order -----------------------------------

    async def _replay(self) -> None:
        assert self.spool is not None
        await asyncio.to_thread(self.spool.sync)  # what overflowed meanwhile, on disk first
        try:
            entries = self.spool.read(100)
        except SpoolError as exc:
            self._drop(exc.reason, self.spool.pending, str(exc))
            self.spool.pending = 0
            return
        if await self._write_batch(entries):
            for entry in entries:
                self.spool.advance(entry)
        else:  # one by one: a refused event is found and counted, the others written
            await self._replay_each(entries)
        if not self.spool.pending:
            log.info("records.replayed", written=self.applied, duplicates=self.duplicates)

    async def _write_batch(self, entries: list[Entry]) -> bool:
        """The whole batch in one transaction; False: write them one by one instead."""
        events = [e.event for e in entries if e.event is not None]
        if not isinstance(self.store, BatchStore) or len(events) != len(entries) or len(events) < 2:
            return False
        try:
            done = await self.store.apply_many(events)
        except Exception as exc:  # noqa: BLE001 - whatever it was, one by one will tell
            err = translate(exc)
            if err is not None and err.transient:
                await self._lost(err)
            return False
        written = sum(1 for d in done if d is not False)
        self.applied += written
        self._duplicate(len(done) - written)
        self._delays = None
        await self._handled(*events)
        return True

    async def _replay_each(self, entries: list[Entry]) -> None:
        if self.store is None:
            return  # gone while writing the batch: left in the spool
        assert self.spool is not None  # the entries were read from it
        for entry in entries:
            if entry.event is None:
                self._drop("spool_corrupt", 1, "a spool line that cannot be read back",
                           line=entry.line[:200].decode(errors="replace"))
            elif not await self._write(entry.event):
                return  # left in the spool
            self.spool.advance(entry)

    # -- the spool ---------------------------------------------------------------------

    def _overflow(self, event: CallEvent) -> None:
        """The bus queue is full (the database is slow or away): the oldest to disk."""
        if self.spool is None:
            self._drop("queue_full", 1, "the records queue is full and there is no spool",
                       kind=event.kind, call_id=event.call_id)
        else:
            self._to_spool(event)

    def _to_spool(self, event: CallEvent, *, first: bool = False) -> bool:
        if self.spool is None:
            self._drop("spool_unwritable", 1, "no spool configured", kind=event.kind, call_id=event.call_id)
            return False
        try:
            if first:
                self.spool.prepend(event)
            else:
                self.spool.append(event)
        except SpoolError as exc:
            self._drop(exc.reason, 1, str(exc), kind=event.kind, call_id=event.call_id, event_id=event.id)
            return False
        except Exception as exc:  # runs inside EventBus.publish: never raise there
            log.exception("records.spool_error")
            self._drop("spool_unwritable", 1, f"{type(exc).__name__}: {exc}", kind=event.kind,
                       call_id=event.call_id, event_id=event.id)
            return False
        self.spooled += 1
        self._recent.append(event.id)
        return True

    def _spool_in_hand(self) -> None:
        """The event being written goes before anything spooled meanwhile."""
        event, self._in_hand = self._in_hand, None
        if event is not None:
            self._to_spool(event, first=True)

    async def _spool_inbox(self) -> None:
        assert self._inbox is not None
        moved = 0
        while not self._inbox.empty():
            self._to_spool(self._inbox.get_nowait())
            moved += 1
        if moved and self.spool is not None:
            await asyncio.to_thread(self.spool.sync)  # on disk before more are taken
        if moved:
            await self._notify()
