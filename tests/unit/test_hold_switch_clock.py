"""R4's reminder every 30 s across a takeover, timed by the switch's clock
(:class:`~ivr.agi.talk.SwitchClock`), as :mod:`tests.unit.test_switch_clock` does for R3.

A hold that spans a leader's death is timed by two nodes: the one that held the caller
kept the hold's start (``IVR_STAGE``), the next one reads how long ago that was and plays
the next reminder when it falls due. Here the fake clock is the switch's own, the nodes'
wall clocks are seconds off it (and off each other), and each node's one reading of the
switch's clock errs the worst ways (:data:`~tests.unit.test_switch_clock.CASES`): the
reminder after the takeover still starts no sooner than the hold's start + 30 s on the
switch's clock, and no later than both round trips and the ms cuts past it. Both nodes
make the reminders' keys (:mod:`ivr.once`) of the start as the stage writes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ivr.ami.away import KEEPER_PREFIX
from ivr.once import action_key
from tests.fakes import FakeAgi, idle, until
from tests.unit.test_hold_service import CALLER, world  # noqa: F401 - fixture
from tests.unit.test_inbound import MemoryOnce
from tests.unit.test_switch_clock import CASES, SWITCH0, Agi

DIES_AT = 10.0  # s into the hold: the node holding the caller dies
GAP = 1.3  # s with no node on the caller's route


@pytest.mark.parametrize("skews", [(-2.0, 1.0), (3.0, -2.0)])  # (writer, reader) wall clock - switch's, s
@pytest.mark.parametrize("syncs", CASES)
async def test_the_reminder_after_a_takeover_is_never_before_start_plus_30_s_on_the_switchs_clock(
        world: Any, syncs: tuple[tuple[float, float], tuple[float, float]],  # noqa: F811 - fixture
        skews: tuple[float, float]) -> None:
    ami, service, clock, timers, *_ = world
    service.paired, service.once = True, MemoryOnce()
    service.wall = lambda: SWITCH0 + clock.t + skews[0]
    clock.t = 1000.0
    start = clock.t  # the hold's start (its timer's), the switch's clock: SWITCH0 + start
    await service.hold(CALLER)
    keeper = service.sessions[CALLER].keeper

    def dies(agi: FakeAgi, what: str) -> None:
        if what == "wait" and clock.t >= start + DIES_AT:
            raise ConnectionError("the controller died")

    first = Agi(clock, [syncs[0]], uniqueid=CALLER, wait_cap=0.5, settle=timers.settle)
    first.hooks.append(dies)
    ami.agi = first
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(service.agi_hold(first), 5)
    kept = first.variables["IVR_STAGE"]
    written = service.sessions[CALLER].since
    assert kept == f"hold@{written}@0@0@api@"

    # The next node: it never had this hold, its wall clock is off the first one's.
    timers.remove(service.sessions[CALLER].key)
    service.sessions.clear()
    service.wall = lambda: SWITCH0 + clock.t + skews[1]
    clock.t += GAP
    service.tracker.handle({"Event": "BridgeEnter", "Uniqueid": keeper, "Linkedid": keeper,
                            "Channel": "Local/keep@ivr-hold-00000009;1", "BridgeUniqueid": "b1"})
    assert keeper.startswith(f"{KEEPER_PREFIX}{CALLER}-")
    second = Agi(clock, [syncs[1]], uniqueid=CALLER)
    second.clock = None  # its waits pass for real (the wake digit ends them); the test moves the switch's clock
    second.variables.update(IVR_STAGE=kept, IVR_HOLD_AGENT="PJSIP/1001-00000002")
    ami.agi = second
    task = asyncio.ensure_future(service.agi_hold(second))
    try:
        await until(lambda: second.sent("WAIT FOR DIGIT"))
        s = service.sessions[CALLER]
        due = s.timer.next_deadline  # when the timer plays the next reminder: the switch's clock here
        assert due is not None
        late = due - (start + 30.0)
        assert late >= 0, f"the reminder after the takeover is due {-late:.4f} s early on the switch's clock"
        assert late <= syncs[0][0] + syncs[1][0] + 0.003, late  # the round trips and the ms cuts
        clock.t = due - 0.001
        await timers.settle()
        await idle()
        assert second.played() == []
        clock.t = due
        await timers.settle()
        await until(lambda: second.played() == ["hold_reminder"])
        # The reader made the reminder's key of the start as the writer wrote it (and as the
        # writer would have made it): one reminder per switch whichever node plays it.
        assert s.since == written and service.once.keys == {action_key(s.call_id, "hold", f"{written}/reminder/1")}
    finally:
        task.cancel()
