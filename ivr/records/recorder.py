"""Feeds the call records from the controller's :class:`~ivr.events.EventBus`.

One task writes every event, in order, each in its own transaction, and keeps the
database open: it never stops on a database error and never holds a call up.

States (``CallRecorder.state``), each change logged once (``records.state``):

``starting``   the database has not been tried yet
``up``         events are written as they come
``down``       the database is away (cannot be opened, locked, hung, gone): events go to
               the spool on local disk at once; it is tried again with capped backoff
``replaying``  the database is back: the spool is written first, in order, then the
               events that came meanwhile

An event leaves memory only to the database or to the spool. What is lost all the
same is counted by reason (:attr:`CallRecorder.dropped`, ``ivr_records_dropped_total``)
and logged: ``spool_full``, ``spool_unwritable``, ``spool_corrupt`` (a line that cannot
be read back), ``rejected`` (the database refused the event ``max_attempts`` times while
answering: bad data, not an outage), ``shutdown`` (stopping with no spool to take it),
``leader_died`` (a record only the dead leader of a pair could have written, which its
successor could not rebuild from the switch and did not find on record).

Here: the writer task and the outside view. What goes to the spool and its replay:
:mod:`ivr.records.outage`; what the recorder writes to: :mod:`ivr.records.backend`; its
state and counts: :mod:`ivr.records.progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator

import structlog

from ivr.ami.connection import Backoff
from ivr.events import NODE, CallEvent, EventBus
from ivr.records.backend import ClosingStore, DatabaseStore, Hook, Opener, Store
from ivr.records.db import Database, DatabaseError, translate
from ivr.records.outage import RecorderSpool, wait_any
from ivr.records.progress import Inbox
from ivr.records.spool import Spool, SpoolError

log = structlog.get_logger("ivr.records")


class CallRecorder(RecorderSpool):
    """Writes the bus's events to the store, or to the spool while the store is away.

    ``store`` may be None at start; ``opener`` (when given) is then called, and called
    again with ``backoff`` after every failure; without an opener the recorder waits
    for :meth:`use_store`. :meth:`stop` writes what is still queued for at most
    ``drain_timeout`` s, then spools the rest.
    """

    def __init__(self, store: Store | None, bus: EventBus, *, drain_timeout: float = 5.0,
                 opener: Opener | None = None, spool: Spool | None = None, backoff: Backoff | None = None,
                 on_open: Hook | None = None, on_down: Callable[[], None] | None = None,
                 on_drop: Callable[[str, int], None] | None = None, max_attempts: int = 3,
                 queue_size: int | None = None, accept: Callable[[], bool] | None = None,
                 on_duplicate: Callable[[int], None] | None = None,
                 on_after_end: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.bus = bus
        # A standby (accept says False) records only switch facts and its own sent actions:
        # what it decided itself is the leader's to record (CallEvent.origin).
        self.accept = accept
        self.drain_timeout = drain_timeout
        self.opener = opener
        self.backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self.on_open, self.on_down = on_open, on_down
        self.max_attempts = max_attempts
        self.queue_size = queue_size or bus.queue_size
        super().__init__(spool, on_drop, state="up" if store is not None else "starting", on_duplicate=on_duplicate,
                         on_after_end=on_after_end)
        self.attempts = 0  # opening the database
        self._task: asyncio.Task[None] | None = None
        self._in_hand: CallEvent | None = None  # taken from the inbox, being written
        self._ready = asyncio.Event()  # a store is set
        if store is not None:
            self._ready.set()
        self._stopping = asyncio.Event()
        self._poke = asyncio.Event()
        self._just_opened = False
        self._delays: Iterator[float] | None = None

    @property
    def store(self) -> Store | None:
        return self._store

    @store.setter
    def store(self, store: Store | None) -> None:
        # What the store can do is worked out here, once: a runtime Protocol check costs
        # about 35 us, too much for the writer loop's every event.
        self._store = store
        self._db: Database | None = store.db if isinstance(store, DatabaseStore) else None

    # -- outside view ------------------------------------------------------------------

    def use_store(self, store: Store) -> None:
        """The database is open now: write the events waiting and all that follow."""
        self.store = store
        self._ready.set()

    async def start(self) -> None:
        """Subscribe (at once: events published after this are never missed) and run."""
        if self._task is not None:
            return
        if self.spool is not None:
            try:
                torn = self.spool.load()
            except SpoolError as exc:
                log.error("records.spool_unreadable", error=str(exc))
            else:
                if torn:
                    self._drop("spool_corrupt", torn, "a torn line at the end of the spool")
                if self.spool.pending:
                    log.warning("records.spool_found", spooled=self.spool.pending, path=str(self.spool.path))
        self._inbox = Inbox(self.queue_size)
        self.bus.open_queue(self._overflow, queue=self._inbox,
                            accept=self._accepts if self.accept is not None else None)
        self._task = asyncio.create_task(self._run(), name="call-recorder")

    def _accepts(self, event: CallEvent) -> bool:
        return event.origin != NODE or self.accept is None or self.accept()

    # -- the writer task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if self.store is None:
                    if self._stopping.is_set():
                        return
                    if self.opener is None and self.spool is None:
                        await wait_any(self._ready, self._stopping)  # events wait in the queue
                    elif not await self._open():
                        await self._wait_down()
                    continue
                if self.spool is not None and self.spool.pending:
                    self._set_state("replaying")
                    await self._replay()
                    continue
                if self._db is not None and self._db.broken:  # a reader's call failed
                    await self._lost(DatabaseError("the database failed a call (a reader's or a ping)",
                                                   reason="broken"))
                    continue
                if self._just_opened:  # open, and the spool written: the records are whole again
                    self._just_opened = False
                    await self._call_on_open()
                    continue  # events may have come meanwhile, or the database gone again
                self._set_state("up")
                event = await self._next()
                if event is None:
                    if self._stopping.is_set():
                        return
                    continue  # poked: look at the database again
                self._in_hand = event
                if await self._write(event):
                    self._in_hand = None
                else:  # the database went away with it: first in the spool
                    self._spool_in_hand()
            except asyncio.CancelledError:
                raise
            except Exception:  # the recorder never dies; what failed is logged
                log.exception("records.recorder_error")
                await wait_any(self._stopping, timeout=1.0)

    async def _open(self) -> bool:
        if self.opener is None:  # a store is handed over by use_store()
            return False
        self.attempts += 1
        try:
            store = await self.opener()
        except DatabaseError as exc:
            self._gone(str(exc))
            return False
        except Exception as exc:  # an unexpected error: the same, and logged in full
            log.exception("records.open_error")
            self._gone(f"{type(exc).__name__}: {exc}")
            return False
        self.store, self.last_error = store, ""
        if isinstance(store, DatabaseStore):
            store.db.on_broken = self.poke  # a reader's failed call: reopen now, not at the next event
        self._ready.set()
        self._just_opened = True
        return True

    async def _call_on_open(self) -> None:
        store = self.store
        if self.on_open is None or store is None:
            return
        try:
            result = self.on_open(store)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the records are open all the same
            log.exception("records.on_open_failed")

    def poke(self) -> None:
        """Look at the database again now (a ping or a reader found it failing)."""
        self._poke.set()

    def _gone(self, error: str) -> None:
        self.last_error = error
        self._set_state("down", error=error, attempts=self.attempts)

    async def _lost(self, exc: DatabaseError) -> None:
        store, self.store = self.store, None
        self._ready.clear()
        if self.on_down is not None:
            self.on_down()
        self._gone(str(exc))
        if isinstance(store, ClosingStore):
            try:
                await store.close()
            except Exception:  # closing a failed database: nothing to save
                log.debug("records.close_failed", exc_info=True)

    async def _next(self) -> CallEvent | None:
        """The next queued event; None once stopping and the queue is empty, or poked."""
        assert self._inbox is not None
        while True:
            if not self._inbox.empty():
                return self._inbox.get_nowait()
            if self._stopping.is_set() or self._poke.is_set():
                self._poke.clear()
                return None
            self._inbox.arrived.clear()
            if self._inbox.empty():
                await wait_any(self._inbox.arrived, self._stopping, self._poke)

    async def _write(self, event: CallEvent) -> bool:
        """Write one event, retrying a refusal; False: the database is away (the
        event is not written)."""
        error = ""
        for _attempt in range(self.max_attempts):
            assert self.store is not None
            try:
                done = await self.store.apply(event)
            except Exception as exc:  # the recorder never dies
                err = translate(exc)  # a driver error that escaped the store's own translation
                if err is not None and err.transient:
                    await self._lost(err)
                    return False
                error = str(err or f"{type(exc).__name__}: {exc}")
                if err is None:  # a bug or bad data: logged in full, retried, then counted
                    log.exception("records.write_error", kind=event.kind, call_id=event.call_id)
            else:
                if done is False:
                    self._duplicate(1)
                else:
                    self.applied += 1
                self._delays = None  # written: the next outage backs off from the start
                await self._handled(event)
                return True
        self.failed += 1
        self._drop("rejected", 1, error, kind=event.kind, call_id=event.call_id, event_id=event.id)
        await self._handled(event)
        return True


    async def stop(self) -> None:
        """Write what is still queued (for at most ``drain_timeout`` s), spool the rest."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        before = self.applied
        done, _ = await asyncio.wait({task}, timeout=self.drain_timeout)
        if not done:
            log.error("records.drain_incomplete", timeout=self.drain_timeout, applied=self.applied)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert self._inbox is not None
        self.bus.close_queue(self._inbox)
        left = self._inbox.qsize() + (self._in_hand is not None)
        if left and self.spool is None:
            self._in_hand = None
            self._drop("shutdown", left, "stopped with events not written and no spool")
        elif left:
            self._spool_in_hand()
            await self._spool_inbox()
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
        log.info("records.stopped", drained=self.applied - before, applied=self.applied, failed=self.failed,
                 spooled=self.spool.pending if self.spool is not None else 0,
                 dropped=sum(self.dropped.values()), complete=bool(done) and not left)
