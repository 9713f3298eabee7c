"""Background tasks a service starts and must not lose: :class:`TaskSet` keeps each task
until it ends (asyncio holds only weak references to running tasks), logs a task that
failed, and cancels what is left when the service closes.

One tracker for every service (call-backs, transfer, the timer service's awaitable
callbacks), so a task that raises is always logged the same way and never vanishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any

import structlog

log = structlog.get_logger("ivr.tasks")


class TaskSet:
    """The running tasks of one service. ``failed`` is the log event of a task that raised."""

    def __init__(self, failed: str = "task_failed") -> None:
        self.failed = failed
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(self.failed, error=repr(task.exception()), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Future[Any]]:
        return iter(list(self._tasks))

    async def close(self, *others: asyncio.Future[Any] | None) -> None:
        """Cancel every task still running (and ``others``, e.g. a service's own loop)
        and wait until they have ended."""
        tasks = [*self._tasks, *(t for t in others if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
