"""The timer service, driven by an injected clock: no sleeping, no leaked tasks."""

from __future__ import annotations

import asyncio

import pytest

from ivr.rules.hold import HoldTimer, OfferChoices, Remind
from ivr.rules.rings import Cadence, RingAlarm, RingWatch
from ivr.timers import TimerService
from tests.fakes import Clock


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_drives_machines_by_deadline() -> None:
    clock = Clock()
    before = other_tasks()
    service = TimerService(clock)
    got: dict[str, list[object]] = {"ring": [], "hold": []}
    ring = RingWatch(Cadence(1000, 4000))
    ring.start(clock.t)
    hold = HoldTimer()
    hold.start(clock.t)
    service.add("ring", ring, got["ring"].extend)
    service.add("hold", hold, got["hold"].extend)
    assert service.next_deadline() == 1015.0
    await service.settle()
    assert got == {"ring": [], "hold": []}
    clock.t = 1015.0
    await service.settle()
    assert got["ring"] == [RingAlarm("warning", 3, 15.0)]
    clock.t = 1030.0
    await service.settle()
    assert got["ring"][-1] == RingAlarm("critical", 6, 30.0)
    assert got["hold"] == [Remind(1, 30.0)]
    clock.t = 1060.0
    await service.settle()
    assert isinstance(got["hold"][1], OfferChoices)
    # an event fed to a machine: poke re-reads its deadline
    hold.resume(1061.0)
    service.poke("hold")
    assert service.next_deadline() is None
    await service.close()
    assert other_tasks() == before


async def test_remove_and_async_callbacks() -> None:
    clock = Clock(0.0)
    service = TimerService(clock)
    done = asyncio.Event()
    blocked = asyncio.Event()
    received: list[object] = []

    async def slow(actions: list[object]) -> None:
        received.extend(actions)
        done.set()
        await blocked.wait()  # never set: close() must cancel it

    a = RingWatch(Cadence(1000, 4000))
    a.start(0.0)
    b = RingWatch(Cadence(1000, 4000))
    b.start(0.0)
    service.add("a", a, slow)
    service.add("b", b, received.extend)
    service.remove("b")
    assert "b" not in service and len(service) == 1
    clock.t = 15.0
    assert service.fire_due() == 1
    await done.wait()
    assert received == [RingAlarm("warning", 3, 15.0)]
    async with service:
        pass
    assert other_tasks() == set()
    with pytest.raises(RuntimeError):
        service.add("c", a, received.extend)


async def test_callback_error_does_not_stop_service() -> None:
    clock = Clock(0.0)
    service = TimerService(clock)
    got: list[object] = []

    def broken(actions: list[object]) -> None:
        raise ValueError("boom")

    for key, cb in (("x", broken), ("y", got.extend)):
        w = RingWatch(Cadence(1000, 4000))
        w.start(0.0)
        service.add(key, w, cb)
    clock.t = 15.0
    await service.settle()
    assert got == [RingAlarm("warning", 3, 15.0)]
    await service.close()


async def test_real_loop_clock() -> None:
    loop = asyncio.get_running_loop()
    service = TimerService()
    fired = asyncio.Event()
    w = RingWatch(Cadence(1, 0), warn_rings=1, critical_rings=1)  # 1 ms period
    w.start(loop.time())
    service.add("w", w, lambda actions: fired.set())
    await asyncio.wait_for(fired.wait(), 5)
    await service.close()
