"""The call records of a running controller: open the database, and keep trying.

A database that cannot be opened at start (PostgreSQL not up yet, a full disk, a
missing directory) never holds calls up: the controller runs on, the recorder already
listens on the bus (events wait in its bounded queue), and the database is tried again
in the background with capped exponential backoff. When it opens, the waiting events are
written and ``on_open(store)`` runs (the controller then closes the records of calls that
ended meanwhile). Until then :meth:`RecordsKeeper.ping` raises, so ``/healthz`` says
``database`` is down, with the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

import structlog

from ivr.ami.connection import Backoff
from ivr.events import EventBus
from ivr.records.db import DatabaseError, _redact
from ivr.records.recorder import CallRecorder
from ivr.records.store import CallStore

log = structlog.get_logger("ivr.records")

OnOpen = Callable[[CallStore], Awaitable[None] | None]


class RecordsKeeper:
    def __init__(self, url: str, bus: EventBus, *, backoff: Backoff | None = None,
                 on_open: OnOpen | None = None, drain_timeout: float = 5.0) -> None:
        self.url = url
        self.backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self.on_open = on_open
        self.store: CallStore | None = None
        self.recorder = CallRecorder(None, bus, drain_timeout=drain_timeout)
        self.attempts = 0
        self.last_error = ""
        self._opened = asyncio.Event()
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on the bus, try the database once; if it fails, retry in the background."""
        await self.recorder.start()
        if not await self._try_open():
            self._retry = asyncio.create_task(self._retry_loop(), name="records-open")

    async def _try_open(self) -> bool:
        self.attempts += 1
        try:
            store = await CallStore.open(self.url)
        except DatabaseError as exc:
            self.last_error = str(exc)
            return False
        self.store, self.last_error = store, ""
        self.recorder.use_store(store)
        self._opened.set()
        log.info("records.open", url=_redact(self.url), attempts=self.attempts)
        if self.on_open is not None:
            try:
                result = self.on_open(store)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("records.on_open_failed")
        return True

    async def _retry_loop(self) -> None:
        for delay in self.backoff.delays():
            log.error("records.unavailable", error=self.last_error, attempts=self.attempts,
                      retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            if await self._try_open():
                return

    async def wait_open(self, timeout: float) -> CallStore:
        await asyncio.wait_for(self._opened.wait(), timeout)
        assert self.store is not None
        return self.store

    async def ping(self) -> bool:
        """True when the database answers; raises :class:`DatabaseError` while it is down."""
        if self.store is None:
            raise DatabaseError(f"the call records database is unavailable (retrying, {self.attempts} "
                                f"attempts): {self.last_error}", attempts=self.attempts)
        return await self.store.ping()

    async def stop(self) -> None:
        """Stop retrying, write what is queued (bounded), close the database."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        await self.recorder.stop()
        if self.store is not None:
            await self.store.close()
            self.store = None
