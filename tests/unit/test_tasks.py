"""ivr.tasks.TaskSet: the one background-task tracker of the services."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from ivr.tasks import TaskSet


async def test_a_failed_task_is_logged_and_forgotten() -> None:
    tasks = TaskSet("demo.task_failed")

    async def boom() -> None:
        raise RuntimeError("lost?")

    with capture_logs() as logs:
        task = tasks.spawn(boom())
        # Done callbacks run in the order added: the set's (added by spawn) before gather's.
        await asyncio.gather(task, return_exceptions=True)
    assert not tasks
    assert [e["event"] for e in logs] == ["demo.task_failed"] and "lost?" in logs[0]["error"]


async def test_close_cancels_what_is_left_and_the_others() -> None:
    tasks = TaskSet()
    stuck = tasks.spawn(asyncio.Event().wait())
    loop_task = asyncio.ensure_future(asyncio.Event().wait())
    assert len(tasks) == 1
    await tasks.close(loop_task, None)
    assert stuck.cancelled() and loop_task.cancelled() and not tasks
