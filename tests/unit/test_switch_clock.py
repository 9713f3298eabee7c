"""R3's "never sooner" across a takeover, by construction (:class:`~ivr.agi.talk.SwitchClock`).

A pause that spans a leader's death is timed by two nodes: the dead one wrote when it
began (``IVR_STAGE``, the switch's time), the next one reads how long ago that was and
waits out the rest. Each node knows the switch's time only from one ``GET VARIABLE`` of
the switch's clock: the switch read it somewhere in the command's round trip and printed
it cut to the millisecond. Here the fake switch answers at a scripted point of a scripted
round trip (on the fake clock, which is the switch's own), the nodes' wall clocks are
seconds off the switch's, and the pause is measured on the switch's clock: never under
5 s whichever way each node's reading errs (with the midpoint of the round trip, as
before, a slow writer and a fast reader erring the wrong ways waited 4.84 s)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.agi.talk import SWITCH_NOW, SwitchClock
from ivr.agi.wake import PAUSE_GUARD
from ivr.rules.stage import stamp
from tests.fakes import Clock, FakeAgi, RecordingAmi
from tests.unit import test_unclear_service
from tests.unit.test_inbound import PAUSE, MemoryOnce
from tests.unit.test_takeover_speech import SwitchCall, pair_node
from tests.unit.test_unclear_service import CALLER, PROMPT_S

world = test_unclear_service.world  # the fixture: the unclear-line service, the fake switch, a fake clock

SWITCH0 = 1_800_000_000.0  # the switch's clock at the fake clock's 0


def printed(t: float) -> str:
    """What the switch prints for ``STRFTIME(,,%s.%3q)`` at fake time ``t``: cut to the ms."""
    return f"{math.floor(round((SWITCH0 + t) * 1000, 3)) / 1000:.3f}"


class ScriptedSwitch:
    """The switch's side of one ``GET VARIABLE`` of its clock: ``syncs`` lists, per call, the
    round trip (s) and where in it the switch read its clock (0: at once, 1: at the end)."""

    def __init__(self, clock: Clock, syncs: list[tuple[float, float]]) -> None:
        self.clock, self.syncs = clock, list(syncs)

    def answer(self) -> str:
        round_trip, read_at = self.syncs.pop(0)
        start = self.clock.t
        self.clock.t = start + read_at * round_trip
        text = printed(self.clock.t)
        self.clock.t = start + round_trip
        return text


class SyncedCall(SwitchCall):
    """The inbound flow's fake call, its switch clock read as :class:`ScriptedSwitch` says."""

    def __init__(self, clock: Clock, syncs: list[tuple[float, float]]) -> None:
        super().__init__(clock)
        self.switch = ScriptedSwitch(clock, syncs)

    async def get_variable(self, name: str) -> str | None:
        if name == SWITCH_NOW:
            await self.command(f"GET VARIABLE {name}")
            return self.switch.answer()
        return await super().get_variable(name)


class Agi(FakeAgi):
    """The shared fake FastAGI session, its switch clock read as :class:`ScriptedSwitch` says."""

    def __init__(self, clock: Clock, syncs: list[tuple[float, float]], **kwargs: Any) -> None:
        super().__init__(clock=clock, **kwargs)
        self.switch = ScriptedSwitch(clock, syncs)

    async def get_variable(self, name: str) -> str | None:
        return self.switch.answer() if name == SWITCH_NOW else await super().get_variable(name)


# (round trip, where the switch read its clock) of the writer's and the reader's sync. The
# worst for "never sooner": the writer's switch read at once (its midpoint is half a round
# trip early, the ms cut makes it earlier still), the reader's at the end (late).
WORST = ((0.4, 0.0), (0.02, 1.0))
CASES = [WORST, ((0.02, 0.0), (0.4, 1.0)), ((0.4, 1.0), (0.02, 0.0)), ((0.3, 0.5), (0.3, 0.5))]


@pytest.mark.parametrize("start", [0.0, 0.0009])  # 0.0009: the writer's reading cut by 0.9 ms
@pytest.mark.parametrize("skews", [(3.0, -2.0), (-0.7, 0.0)])
@pytest.mark.parametrize("syncs", CASES)
async def test_a_silent_call_pause_across_a_takeover_is_never_under_5_s_on_the_switchs_clock(
        syncs: tuple[tuple[float, float], tuple[float, float]], skews: tuple[float, float], start: float) -> None:
    """The writer dies 2 s into the first pause; the reader takes over 1.3 s later. The
    pause (greeting end to prompt 2's start, switch times) is at least 5 s and at most the
    guard, both round trips and the ms cuts longer."""
    call, once = SyncedCall(Clock(start), list(syncs)), MemoryOnce()
    call.die_at = start + syncs[0][0] + 4.0 + 2.0  # the sync, hello 1 s + welcome 3 s, 2 s of pause
    with pytest.raises(ConnectionError):
        await pair_node(call, once, RecordingAmi(), skews[0])(call)
    call.clock.t += 1.3
    await pair_node(call, once, RecordingAmi(), skews[1])(call)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"]
    (_, _, greeting_end), (_, p2_start, _) = call.plays[1], call.plays[2]
    pause = p2_start - greeting_end
    assert pause >= PAUSE, f"the pause across the takeover lasted {pause:.4f} s on the switch's clock"
    assert pause <= PAUSE + PAUSE_GUARD + syncs[0][0] + syncs[1][0] + 0.003, pause


def _behind(clock: Clock, seconds: float) -> Callable[[], float]:
    return lambda: clock.t - seconds


async def test_the_bounds_hold_the_switchs_time_wherever_it_read_its_clock() -> None:
    for read_at in (0.0, 0.25, 1.0):
        for t0 in (10.0, 10.0009, 10.0004):
            clock = Clock(t0)
            agi = Agi(clock, [(0.3, read_at)])
            switch = await SwitchClock(_behind(clock, 42.0), clock).sync(agi)  # the node's wall clock: 42 s behind
            truth = SWITCH0 + clock.t
            assert switch.synced and switch.round_trip == pytest.approx(0.3)
            assert switch.earliest() <= truth <= switch.latest(), (read_at, t0)
            assert switch.latest() - switch.earliest() == pytest.approx(0.3 + 0.001)
            assert switch.earliest() <= switch.now() <= switch.latest()


async def test_a_step_of_the_nodes_wall_clock_after_the_reading_changes_nothing() -> None:
    """The reading is carried by the node's steady clock: NTP stepping its wall clock back
    a second mid-script does not make a stage time written later a second early."""
    clock, wall = Clock(5.0), Clock(1_700_000_000.0)
    switch = await SwitchClock(wall, clock).sync(Agi(clock, [(0.01, 0.5)]))
    wall.t -= 1.0
    clock.t += 3.0
    assert switch.earliest() <= SWITCH0 + clock.t <= switch.latest()


async def test_a_slow_sync_is_logged_and_only_widens_the_bounds() -> None:
    clock = Clock(0.0)
    with capture_logs() as logs:
        switch = await SwitchClock(clock, clock).sync(Agi(clock, [(2.5, 1.0)]))
    assert [e["round_trip"] for e in logs if e["event"] == "agi.switch_clock_slow"] == [2.5]
    truth = SWITCH0 + clock.t
    assert switch.earliest() <= truth <= switch.latest() and switch.latest() - switch.earliest() > 2.5


@pytest.mark.parametrize("answer", ["", "nan", "-5", "12x", "1" * 30])
async def test_an_answer_that_does_not_hold_up_leaves_the_nodes_own_clock(answer: str) -> None:
    clock = Clock(7.0)
    agi = FakeAgi(clock=clock)
    agi.variables[SWITCH_NOW] = answer
    switch = await SwitchClock(clock, clock).sync(agi)
    assert not switch.synced and switch.earliest() == switch.latest() == switch.now() == 7.0


def test_a_time_written_down_is_rounded_up_to_the_ms() -> None:
    assert stamp(SWITCH0 + 0.1231) == "1800000000.124"
    assert stamp(SWITCH0 + 0.123) == "1800000000.123"  # already a whole ms: kept
    assert stamp(SWITCH0 + 0.9999) == "1800000001.000"


@pytest.mark.parametrize("syncs", CASES)
async def test_an_unclear_line_pause_across_a_takeover_is_never_under_5_s_on_the_switchs_clock(
        world: Any, syncs: tuple[tuple[float, float], tuple[float, float]]) -> None:
    """The same for the unclear-line script: the node dies 2 s into the pause after the ask,
    the next node (its clock 2 s off the first's) takes over 1.3 s later and asks again."""
    ami, service, clock, *_ = world
    service.paired = True
    service.wall = lambda: SWITCH0 + clock.t + 1.0
    await service.start(CALLER, "faint")

    def dies(agi: FakeAgi, what: str) -> None:
        if what == "wait":
            clock.t += 2.0
            raise ConnectionError("the controller died")

    first = Agi(clock, [syncs[0]], uniqueid=CALLER, channel="Local/c@x-00000001;1", prompt_s=PROMPT_S)
    first.hooks.append(dies)
    ami.agi = first
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(service.agi_unclear(first), 5)
    clock.t += 1.3
    service.sessions.clear()  # the next node: it never had this caller's session
    service.wall = lambda: SWITCH0 + clock.t - 1.0
    second = Agi(clock, [syncs[1]], uniqueid=CALLER, channel="Local/c@x-00000001;1", prompt_s=PROMPT_S)
    [setvar] = ami.sent("Setvar")  # the agent's channel, set on the caller over AMI
    second.variables.update({"IVR_STAGE": first.variables["IVR_STAGE"], setvar["Variable"]: setvar["Value"]})
    ami.agi = second
    await asyncio.wait_for(service.agi_unclear(second), 5)
    ask_end = next(t for t, what in first.log if what == "end play unclear_ask")
    again = next(t for t, what in second.log if what == "play unclear_ask")
    assert second.played() == ["unclear_ask", "unclear_goodbye_faint"] and second.variables["IVR_RESULT"] == "done"
    pause = again - ask_end
    assert pause >= PAUSE, f"the pause across the takeover lasted {pause:.4f} s on the switch's clock"
    assert pause <= PAUSE + PAUSE_GUARD + syncs[0][0] + syncs[1][0] + 0.003, pause
