"""The call records of a running controller: the database, the spool and the recorder.

The database never holds calls up. :meth:`RecordsKeeper.start` touches no database: it
subscribes the recorder to the bus and returns; the recorder's task opens the database
(within ``connect_timeout``), and while it cannot (down, locked, hung, gone mid-run)
events go to the spool on local disk and it is tried again with capped backoff; when it
opens, the spool is replayed in order and ``on_open(store)`` runs (the controller then
closes the records of calls that ended meanwhile). :meth:`ping` raises while it is away,
so ``/healthz`` says ``database`` is down with the error; :meth:`status` is the
``records`` block there (state, spooled, dropped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from ivr.ami.connection import Backoff
from ivr.events import EventBus
from ivr.records.db import DatabaseError
from ivr.records.recorder import CallRecorder
from ivr.records.spool import Spool
from ivr.records.store import CallStore
from ivr.resources import data_dir
from ivr.sections import DatabaseConfig

log = structlog.get_logger("ivr.records")

OnOpen = Callable[[CallStore], Awaitable[None] | None]


def spool_dir(url: str, configured: str = "") -> Path | None:
    """Where the spool lives: ``configured``, else next to the SQLite file, else
    ``spool/`` in ivr's data directory (``/var/lib/ivr/spool`` under the systemd unit, see
    :func:`ivr.resources.data_dir`); None for an in-memory SQLite (nothing to keep)."""
    if configured:
        return Path(configured)
    if url.lower().startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest.startswith("///") and ":memory:" not in rest:
            return Path(rest[3:]).parent
        return None
    return data_dir() / "spool"


class RecordsKeeper:
    def __init__(self, url: str, bus: EventBus, *, backoff: Backoff | None = None,
                 on_open: OnOpen | None = None, on_down: Callable[[], None] | None = None,
                 on_drop: Callable[[str, int], None] | None = None, drain_timeout: float = 5.0,
                 settings: DatabaseConfig | None = None, spool: Spool | None = None,
                 accept: Callable[[], bool] | None = None, switch: str = "default",
                 on_duplicate: Callable[[int], None] | None = None,
                 on_after_end: Callable[[str], None] | None = None) -> None:
        self.url, self.switch = url, switch
        self.settings = settings or DatabaseConfig()  # its url is not read: the keeper's is `url`
        s = self.settings
        if spool is None:
            where = spool_dir(url, s.spool_dir)
            spool = Spool(where, int(s.spool_max_mb * 1024 * 1024)) if where is not None else None
        self.spool = spool
        self.on_open = on_open
        self.recorder = CallRecorder(
            None, bus, drain_timeout=drain_timeout, opener=self._open, spool=spool,
            backoff=backoff or Backoff(initial=s.retry_initial, maximum=s.retry_max),
            on_open=self._opened, on_down=on_down, on_drop=on_drop, queue_size=s.queue_size,
            accept=accept, on_duplicate=on_duplicate, on_after_end=on_after_end)

    # The recorder owns the state; these read it.
    @property
    def backoff(self) -> Backoff:
        return self.recorder.backoff

    @backoff.setter
    def backoff(self, value: Backoff) -> None:
        self.recorder.backoff = value

    @property
    def store(self) -> CallStore | None:
        store = self.recorder.store
        return store if isinstance(store, CallStore) else None  # the keeper opens only CallStores

    @property
    def attempts(self) -> int:
        return self.recorder.attempts

    @property
    def last_error(self) -> str:
        return self.recorder.last_error

    async def _open(self) -> CallStore:
        s = self.settings
        return await CallStore.open(self.url, timeout=s.timeout, connect_timeout=s.connect_timeout,
                                    switch=self.switch, on_after_end=self.recorder.count_after_end,
                                    on_lost=self.recorder.count_leader_lost)

    async def _opened(self, store: CallStore) -> None:
        if self.on_open is not None:
            result = self.on_open(store)
            if result is not None:
                await result

    async def start(self) -> None:
        """Subscribe to the bus and return at once; the database is opened in the background."""
        await self.recorder.start()

    async def wait_open(self, timeout: float) -> CallStore:
        """Wait until the database is open and written to (``up``, the spool replayed)."""
        await self.recorder.wait_state("up", timeout)
        assert self.store is not None
        return self.store

    def status(self) -> dict[str, Any]:
        return self.recorder.status()

    async def ping(self) -> bool:
        """True when the database answers; raises :class:`DatabaseError` while it is away."""
        store = self.store
        if store is None or self.recorder.state == "down":
            raise DatabaseError(f"the call records database is unavailable (retrying, {self.attempts} "
                                f"attempts): {self.last_error}", reason="unreachable", attempts=self.attempts)
        return await store.ping()  # a failure tells the recorder (Database.on_broken)

    async def stop(self) -> None:
        """Stop retrying, write what is queued (bounded), spool the rest, close the database."""
        await self.recorder.stop()
        store = self.recorder.store
        self.recorder.store = None
        if isinstance(store, CallStore):
            await store.close()
