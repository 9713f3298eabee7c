"""What the call recorder has done and where it is (:class:`RecorderProgress`, the base of
:class:`~ivr.records.recorder.CallRecorder`): its state, logged once per change; the counts
of events written, found written, refused and spooled; what is lost, by reason; and the
bounded waits on them (``/healthz``, the dashboard's live stream, tests)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from ivr.events import CallEvent
from ivr.records.spool import Spool

log = structlog.get_logger("ivr.records")


class Inbox(asyncio.Queue[CallEvent]):
    """The recorder's bus queue: says when something arrives."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.arrived = asyncio.Event()

    def put_nowait(self, item: CallEvent) -> None:
        super().put_nowait(item)
        self.arrived.set()


class RecorderProgress:
    """The recorder's state and counts; the writer task (the subclass) moves them on."""

    def __init__(self, spool: Spool | None, on_drop: Callable[[str, int], None] | None, *,
                 state: str, on_duplicate: Callable[[int], None] | None = None,
                 on_after_end: Callable[[str], None] | None = None) -> None:
        self.spool = spool
        self.on_drop, self.on_duplicate = on_drop, on_duplicate
        self.state = state
        self.applied = 0  # written to the database
        # Found on record already, skipped: written by another node of the pair (a switch
        # fact, an action sent twice) or replayed from the spool. Counted, never silent.
        self.duplicates = 0
        self.failed = 0  # refused by the database max_attempts times (dropped)
        self.spooled = 0  # ever written to the spool
        self.dropped: dict[str, int] = {}
        # Written, but timed after their call's end, so they change no figure (records/spans.py).
        self.after_end: dict[str, int] = {}
        self.on_after_end = on_after_end  # e.g. a Prometheus counter, by kind
        self.last_error = ""
        self._inbox: Inbox | None = None
        self._progress = asyncio.Condition()
        self._recent: deque[str] = deque(maxlen=1000)  # ids handled lately, newest last
        self._state_changed = asyncio.Event()
        self._drop_logged: dict[str, float] = {}

    def status(self) -> dict[str, Any]:
        """The ``records`` block of ``/healthz``."""
        return {"state": self.state, "spooled": self.spool.pending if self.spool else 0,
                "queued": self._inbox.qsize() if self._inbox else 0, "dropped": sum(self.dropped.values()),
                "dropped_by_reason": dict(self.dropped), "written": self.applied,
                "duplicates": self.duplicates, "after_end": sum(self.after_end.values()),
                **({"error": self.last_error} if self.state == "down" and self.last_error else {})}

    # -- bookkeeping -------------------------------------------------------------------

    async def wait_state(self, state: str, timeout: float) -> None:
        """Wait (bounded) until the recorder is in ``state``."""
        async with asyncio.timeout(timeout):
            while self.state != state:
                await self._state_changed.wait()

    def _set_state(self, state: str, **details: Any) -> None:
        if state == self.state:
            return
        before, self.state = self.state, state
        changed, self._state_changed = self._state_changed, asyncio.Event()
        changed.set()
        spooled = self.spool.pending if self.spool is not None else 0
        if state == "down":
            log.error("records.state", state=state, was=before, spooled=spooled, **details)
        else:
            log.info("records.state", state=state, was=before, spooled=spooled, **details)

    def count_after_end(self, kind: str) -> None:
        """The store wrote an event of ``kind`` timed after its call's end (counted by kind)."""
        self.after_end[kind] = self.after_end.get(kind, 0) + 1
        if self.on_after_end is not None:
            self.on_after_end(kind)

    def count_leader_lost(self, kind: str) -> None:
        """A dead leader's record of ``kind`` that the new leader could not rebuild is not
        on record (EventBus.unrebuilt): lost, reason ``leader_died``."""
        self._drop("leader_died", 1, "the leader died before recording it; the switch does not tell it",
                   kind=kind)

    def _duplicate(self, count: int) -> None:
        if count > 0:
            self.duplicates += count
            if self.on_duplicate is not None:
                self.on_duplicate(count)

    def _drop(self, reason: str, count: int, error: str, **details: Any) -> None:
        """Count and log what is lost (a log line per reason at most once a second)."""
        if count <= 0:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self.on_drop is not None:
            self.on_drop(reason, count)
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -1e9) >= 1.0:
            self._drop_logged[reason] = now
            log.error("records.dropped", reason=reason, count=count, dropped_total=self.dropped[reason],
                      error=error, **details)

    async def _handled(self, *events: CallEvent) -> None:
        """``events`` are on record (or given up): :meth:`handled` may tell their waiters."""
        self._recent.extend(event.id for event in events)
        await self._notify()

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def wait_applied(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` events have been handled (written, found written, or given up)."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(
                lambda: self.applied + self.duplicates + self.failed >= count), timeout)

    async def handled(self, event: CallEvent, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout`` s) until this very event is written; False if not
        (at once while the database is away).

        The dashboard's live stream sends an event once it is on record, so a page that
        reloads its tables on the event sees it there."""
        def seen() -> bool:
            return self.state != "up" or event.id in self._recent

        if self.state != "up":
            return False
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(seen), timeout)
            except TimeoutError:
                return False
        return event.id in self._recent and self.state == "up"
