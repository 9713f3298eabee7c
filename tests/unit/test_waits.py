"""The shared waits of tests/fakes.py (issue 15) can fail, and fail for the right reason:
``drain`` catches work a fixed number of loop turns would miss, ``idle`` sees every task
through, ``until`` names what it waited for, ``BusLog`` misses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from ivr.events import EventBus
from tests.fakes import BusLog, RecordingAmi, drain, idle, until


async def turns(n: int) -> None:
    """Work that takes ``n`` turns of the event loop (what these tests wait out)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Service:
    """A service as the features are: what it does later runs in tasks kept in ``_tasks``."""

    def __init__(self, ami: RecordingAmi) -> None:
        self.ami = ami
        self._tasks: set[asyncio.Future[Any]] = set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_event(self, _event: object) -> None:
        async def late() -> None:  # a hang-up 30 loop turns later, then another task
            await turns(30)
            self._spawn(self.ami.action({"Action": "Hangup"}))

        self._spawn(late())


async def test_drain_waits_for_the_tasks_and_those_they_start() -> None:
    ami = RecordingAmi()
    service = Service(ami)
    ami.subscribe("Hangup", service.on_event)
    ami.fire("Hangup", Uniqueid="1.1")
    await turns(10)  # the old way: ten turns, then assert
    assert not ami.sent("Hangup"), "ten loop turns: the hang-up has not happened yet"
    await drain(service)
    assert ami.sent("Hangup"), "after drain it has"


async def test_drain_fails_naming_a_task_that_never_ends() -> None:
    service = Service(RecordingAmi())
    service._spawn(asyncio.Event().wait())
    with pytest.raises(AssertionError, match=r"still running after 0\.05 s"):
        await drain(service, timeout=0.05)
    for task in list(service._tasks):
        task.cancel()
    await asyncio.gather(*service._tasks, return_exceptions=True)


async def test_drain_runs_an_async_subscriber_of_the_recording_ami() -> None:
    ami, seen = RecordingAmi(), []

    async def subscriber(event: dict[str, str]) -> None:
        await asyncio.sleep(0.01)  # pacing: a handler that awaits something
        seen.append(event["Uniqueid"])

    ami.subscribe("Newstate", subscriber)
    ami.fire("Newstate", Uniqueid="1.1")
    await drain(ami)
    assert seen == ["1.1"]


async def test_idle_lets_every_task_go_as_far_as_it_can() -> None:
    done: list[int] = []

    async def steps(n: int) -> None:
        await turns(n)
        done.append(n)
        await asyncio.Event().wait()  # then blocked, as a task waiting for an event

    tasks = [asyncio.ensure_future(steps(n)) for n in (1, 50, 200)]
    await idle()
    assert done == [1, 50, 200]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_idle_fails_on_a_loop_that_never_rests() -> None:
    async def spin() -> None:
        while True:
            await turns(1)

    task = asyncio.ensure_future(spin())
    with pytest.raises(AssertionError, match="still busy after 20 turns"):
        await idle(turns=20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_until_returns_the_value_and_names_what_it_waited_for() -> None:
    box: list[str] = []
    asyncio.get_running_loop().call_later(0.01, box.append, "x")
    assert await until(lambda: box, 2, "the box filled") == ["x"]
    with pytest.raises(AssertionError, match=r"the box emptied: not within 0\.03 s"):
        await until(lambda: not box, 0.03, "the box emptied")
    with pytest.raises(AssertionError, match=r"lambda: len\(box\) == 2"):  # no name: its source
        await until(lambda: len(box) == 2, 0.03)


async def test_bus_log_reads_what_was_published_without_a_collector() -> None:
    bus = EventBus(queue_size=4)
    log = BusLog(bus)
    for i in range(10):  # more than the bus's queue: a log drops nothing
        bus.emit("call.arrived", f"{i}.0")
    assert len(log) == 10 and log.kinds() == ["call.arrived"] * 10 and log[-1].call_id == "9.0"
    log.close()
    assert bus.subscribers == 0
