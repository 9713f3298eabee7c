"""One asyncio task that drives any number of rule machines by their ``next_deadline``.

``add(key, machine, on_actions)`` registers a machine; whenever ``clock()`` reaches the
machine's ``next_deadline`` the service calls ``machine.on_timer(now)`` and hands the
actions to ``on_actions(actions)`` (a plain function, or one returning an awaitable, which
is then run as a tracked task). After feeding an event to a machine, call ``poke(key)`` so
the service re-reads its deadline. ``close()`` cancels the task and any callback tasks: no
task outlives the service.

The clock is injectable (``loop.time`` by default). With a fake clock, tests advance it and
``await service.settle()``: the service wakes, fires what is due and reports back, with no
sleeping. ``fire_due()`` does the same synchronously.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.rules import Machine
from ivr.tasks import TaskSet

log = structlog.get_logger(__name__)

OnActions = Callable[[list[Any]], Any]


@dataclass
class _Entry:
    machine: Machine
    on_actions: OnActions
    seq: int
    deadline: float | None


class TimerService:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callbacks = TaskSet("timer_callback_failed")
        self._closed = False

    # -- public API -----------------------------------------------------------------
    def now(self) -> float:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: Hashable, machine: Machine, on_actions: OnActions) -> None:
        """Drive ``machine`` under ``key`` (replacing any machine of that key)."""
        if self._closed:
            raise RuntimeError("TimerService is closed")
        self._entries[key] = _Entry(machine, on_actions, next(self._seq), None)
        self.poke(key)
        self._ensure_task()

    def remove(self, key: Hashable) -> None:
        self._entries.pop(key, None)  # its heap items go stale and are skipped

    def poke(self, key: Hashable) -> None:
        """Re-read the machine's deadline (call after feeding it an event)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        deadline = entry.machine.next_deadline
        if deadline == entry.deadline:
            return
        entry.seq = next(self._seq)
        entry.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, entry.seq, key))
        self._wake.set()

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def fire_due(self) -> int:
        """Call ``on_timer`` on every machine whose deadline has come; return how many."""
        now = self.now()
        fired = 0
        seen: set[Hashable] = set()
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, key = heapq.heappop(self._heap)
            entry = self._entries[key]
            entry.deadline = None
            if key in seen:  # a machine whose deadline stays in the past: next round
                continue
            seen.add(key)
            fired += 1
            try:
                actions = entry.machine.on_timer(now)
            except Exception as exc:  # a faulty machine must not stop every other timer
                log.exception("timer_machine_failed", key=str(key), error=repr(exc))
                actions = []
            self.poke(key)
            if actions:
                self._deliver(key, entry.on_actions, actions)
        for key in seen:
            self.poke(key)
        return fired

    async def settle(self) -> None:
        """Wake the service and wait until it has fired everything due by ``clock()``."""
        self._ensure_task()
        assert self._task is not None
        self._idle.clear()
        self._wake.set()
        idle = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
        if self._task.done():
            self._task.result()  # re-raise why the service stopped

    async def close(self) -> None:
        self._closed = True
        await self._callbacks.close(self._task)
        self._task = None
        self._entries.clear()
        self._heap.clear()

    async def __aenter__(self) -> TimerService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------
    def _drop_stale(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq and entry.deadline is not None:
                return
            heapq.heappop(self._heap)

    def _deliver(self, key: Hashable, on_actions: OnActions, actions: list[Any]) -> None:
        try:
            result = on_actions(actions)
        except Exception as exc:  # a faulty callback must not stop every other timer
            log.exception("timer_callback_failed", key=str(key), error=repr(exc))
            return
        if inspect.isawaitable(result):
            self._callbacks.spawn(result)

    def _ensure_task(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ivr-timers")

    async def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                self.fire_due()
            finally:
                self._idle.set()
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(deadline - self.now(), 0.0)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that arrives as the event is set, and close() would never return.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
