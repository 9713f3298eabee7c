"""Issue 17: the unclear-line script (R3) across a node death. The caller's route keeps its
stage on the channel (IVR_STAGE); the next node's route rebuilds the session from it, from
IVR_UNCLEAR_AGENT and the keeper in the agent's bridge, and goes on: a pause ends when it
would have (never sooner), a stage already announced is not announced again. A stage that
does not hold up (a channel variable is hostile) sends the caller back to the agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.agi.wake import PAUSE_GUARD
from ivr.once import Once, Send
from ivr.rules.unclear import UnclearLine, parse_unclear_stage, unclear_stage
from ivr.unclear import UnclearService
from tests.fakes import FakeAgi, drain
from tests.unit import test_unclear_service
from tests.unit.test_unclear_service import AGENT, CALLER, PROMPT_S, FakeAmi, run_agi, talk

world = test_unclear_service.world  # the fixture: the service, the fake switch, a fake clock

WALL = 1.7e9  # the fixture's wall clock
KEEPER = f"ivrkeep-{CALLER}-123"


def stage(state: str, began_ago: float, started_ago: float = 10.0, reason: str = "faint") -> str:
    return f"unclear@{WALL - started_ago:.3f}@{reason}@{state}@{WALL - began_ago:.3f}"


class SeenOnce(Once):
    """A pair's key table in memory: a key already there was announced by the dead node."""

    def __init__(self, seen: set[str]) -> None:
        super().__init__()
        self.seen, self.keys = seen, list[str]()

    async def run(self, key: str, send: Send, *, still: Any = None, here: bool = False) -> str:
        self.keys.append(key)
        if key in self.seen:
            return "skipped"
        self.seen.add(key)
        return await super().run(key, send, here=here)


def keeper_on_switch(ami: FakeAmi) -> None:
    """The keeper the dead node made, in the agent's bridge (the switch and the tracker see it)."""
    ami.event({"Event": "BridgeEnter", "Uniqueid": KEEPER, "Linkedid": KEEPER,
                            "Channel": "Local/keep@ivr-unclear-00000009;1", "BridgeUniqueid": "b1"})


async def arrives(ami: FakeAmi, service: UnclearService, clock: Any, text: str,
                  agent: str = "PJSIP/1001-00000002", *hooks: Any) -> FakeAgi:
    """The caller's AGI reaches this node, its script begun on a node that died."""
    return await run_agi(ami, service, clock, *hooks, variables={"IVR_STAGE": text, "IVR_UNCLEAR_AGENT": agent})


def stages_written(agi: FakeAgi) -> list[str]:
    return [c.split('"')[1] for c in agi.sent("SET VARIABLE IVR_STAGE ")]


async def test_the_route_keeps_its_stage_on_the_channel(world: Any) -> None:
    """Where another node would go on from: the first ask, then each pause and when it
    began; cleared when the script is over (no stale stage for a later route)."""
    ami, service, clock, *_ = world
    await service.start(CALLER, "noisy")
    agi = FakeAgi(CALLER, channel="Local/c@x-00000001;1", clock=clock, prompt_s=PROMPT_S)
    ami.agi = agi
    await asyncio.wait_for(service.agi_unclear(agi), 5)
    at = f"{WALL:.3f}"  # the fixture's wall clock at the start; the stage times go on from it
    began = {"ask": 0.0, "pause1": PROMPT_S, "pause2": 2 * PROMPT_S + 5 + PAUSE_GUARD,
             "pause3": 3 * PROMPT_S + 2 * (5 + PAUSE_GUARD)}
    assert stages_written(agi) == [f"unclear@{at}@noisy@{s}@{WALL + b:.3f}" for s, b in began.items()] + [""]
    assert agi.variables["IVR_RESULT"] == "done"


async def test_killed_in_the_first_pause_the_next_node_asks_again_when_due(world: Any) -> None:
    """The first ask ended 2 s before the death: here the repeat comes 3 s later (not
    sooner, the ask not again), then the goodbye and the release 5 s after it; the keeper
    the dead node made is hung up by its id."""
    ami, service, clock, events, metrics = world
    keeper_on_switch(ami)
    t0 = clock()
    agi = await arrives(ami, service, clock, stage("pause1", 2.0), "PJSIP/1001-00000002",
                        lambda a, what: talk(ami, 200))  # never clear
    log = [(round(t - t0, 3), w) for t, w in agi.log]
    G = PAUSE_GUARD  # each pause is waited a guard past its deadline
    assert log[:2] == [(0.0, "wait"), (3.0 + G, "end wait")], log
    assert agi.played() == ["unclear_ask", "unclear_goodbye_faint"]
    assert log[2] == (3.0 + G, "play unclear_ask")
    assert log[-1] == (round(3.0 + PROMPT_S + 5.0 + PROMPT_S + 5.0 + 3 * G, 3), "end wait"), "release 5 s after"
    assert ami.stages() == ["ask-again", "goodbye", "release"]
    assert agi.variables["IVR_RESULT"] == "done" and agi.variables["IVR_STAGE"] == ""
    assert ami.sent("Hangup")[-1]["Channel"] == KEEPER
    assert [e.data["stage"] for e in events if e.kind == "unclear.stage"] == ["ask-again", "goodbye", "release"]
    assert metrics.value("ivr_unclear_outcomes_total", {"outcome": "released", "reason": "faint"}) == 1
    assert not service.sessions


async def test_a_pause_that_ran_out_during_the_takeover_goes_on_at_once(world: Any) -> None:
    ami, service, clock, *_ = world
    keeper_on_switch(ami)
    agi = await arrives(ami, service, clock, stage("pause2", 6.5))
    assert agi.log[0][1] == "play unclear_goodbye_faint", "no wait before the goodbye"
    assert ami.stages() == ["goodbye", "release"]


async def test_killed_mid_ask_the_next_node_plays_it_again_but_announces_it_once(world: Any) -> None:
    """The dead node announced the ask (its key is in the pair's table): the caller hears
    the ask again in full, the switch and the records hear of it once."""
    ami, service, clock, *_ = world
    started = f"{WALL - 1:.3f}"
    service.once = SeenOnce({f"{CALLER}/unclear/{started}/ask"})
    keeper_on_switch(ami)
    agi = await arrives(ami, service, clock, f"unclear@{started}@noisy@ask@{started}", "PJSIP/1001-00000002",
                        lambda a, what: talk(ami, 1500) if what == "wait" else None)  # clear in pause 1
    assert agi.played() == ["unclear_ask"] and agi.variables["IVR_RESULT"] == "back"
    assert ami.stages() == ["returned"]  # the ask: announced by the dead node only
    assert service.once.keys == [f"{CALLER}/unclear/{started}/{s}" for s in ("ask", "returned")]
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "BridgeUniqueid": "b1", "Channel": "x"})
    await drain(service)
    assert ami.sent("Hangup")[-1]["Channel"] == KEEPER  # the caller is back: the keeper goes


async def test_the_agent_takes_back_a_caller_taken_over(world: Any) -> None:
    ami, service, clock, *_ = world
    keeper_on_switch(ami)

    def key_in_the_pause(agi: FakeAgi, what: str) -> None:
        if what == "wait":
            ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint",
                       "Uniqueid": AGENT, "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})

    agi = await arrives(ami, service, clock, stage("pause1", 1.0), "PJSIP/1001-00000002", key_in_the_pause)
    assert agi.variables["IVR_RESULT"] == "back" and agi.played() == []
    returned = ami.sent("UserEvent")[-1]
    assert (returned["Stage"], returned["During"], returned["By"], returned["Via"]) == (
        "returned", "pause1", "agent", "takeover")


@pytest.mark.parametrize("text", [
    "unclear@abc@faint@pause1@1699999998.000",
    "unclear@1699999990.000@faint@pause1",  # a part missing
    "unclear@1699999990.000@faint@pause1@1699999998.000@x",
    "unclear@1699999990.000@loud@pause1@1699999998.000",  # no such reason
    "unclear@1699999990.000@faint@release@1699999998.000",  # not a state kept
    "unclear@1699999990.000@faint@idle@1699999998.000",
    "unclear@1699999990.000@faint@pause1@-1699999998",
    "unclear@1699999990.000@faint@pause1@1.2.3",
    "unclear@1600000000.000@faint@pause1@1600000001.000",  # days old: not this script's
    "unclear@1800000000.000@faint@pause1@1800000001.000",  # in the future
    "unclear@1699999990.000@faint@pause1@1699999000.000",  # the pause before the script began
    "unclear@" + "9" * 25 + "@faint@pause1@1699999998.000",
    "unclear@1699999990.000@faint@pause1@1699999998.000 ",
])
async def test_a_hostile_stage_is_refused_and_the_caller_goes_back(world: Any, text: str) -> None:
    ami, service, clock, *_ = world
    keeper_on_switch(ami)
    with capture_logs() as logs:
        agi = await arrives(ami, service, clock, text)
    assert agi.variables["IVR_RESULT"] == "unknown" and not service.sessions and not agi.played()
    assert not ami.actions, "nothing done on the switch"
    assert any(e["event"] == "unclear.stage_refused" and "IVR_STAGE" in e["error"] for e in logs), logs


@pytest.mark.parametrize(("text", "agent", "keeper"), [
    ("", "PJSIP/1001-00000002", True),  # no stage: not a script that died here
    ("hold@1699999990.000@1@0", "PJSIP/1001-00000002", True),  # another route's stage
    (stage("pause1", 1.0), "PJSIP/9999-00000009", True),  # an agent the switch has not
    (stage("pause1", 1.0), "PJSIP/1001-00000002", False),  # no keeper for this caller
])
async def test_no_script_to_go_on_with_sends_the_caller_back(world: Any, text: str, agent: str,
                                                            keeper: bool) -> None:
    ami, service, clock, *_ = world
    if keeper:
        keeper_on_switch(ami)
    with capture_logs() as logs:
        agi = await arrives(ami, service, clock, text, agent)
    assert agi.variables["IVR_RESULT"] == "unknown" and not service.sessions and not ami.actions
    assert [e["uniqueid"] for e in logs if e["event"] == "unclear.agi_unknown"] == [CALLER]


async def test_a_standby_leaves_the_key_to_the_leader(world: Any) -> None:
    ami, service, *_ = world
    service.acting = lambda: False
    with capture_logs() as logs:
        ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": AGENT,
                   "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
        await drain(service)
    assert not service.sessions and not ami.actions
    assert [(e["event"], e["log_level"]) for e in logs] == [("unclear.standby_skipped", "debug")]


def test_the_stage_reads_back() -> None:
    text = unclear_stage(f"{WALL - 9:.3f}", "noisy", "pause2", WALL - 2.5)
    assert parse_unclear_stage(text, WALL) == (f"{WALL - 9:.3f}", "noisy", "pause2", 2.5)
    assert parse_unclear_stage(text, WALL - 4.0)[3] == 0.0  # another node's clock ahead: never negative
    with pytest.raises(ValueError, match="unclear-line stage"):
        unclear_stage("1", "faint", "ask-again", WALL)


def test_a_resumed_script_never_ends_a_pause_sooner() -> None:
    line = UnclearLine.resumed("faint", 5.0, "pause3", 1.5, now=100.0)
    assert (line.state, line.next_deadline) == ("pause3", 103.5)
    assert line.on_timer(103.49) == [] and line.on_timer(103.5)[0].stage == "release"
    fresh = UnclearLine.resumed("faint", 5.0, "ask", 1.0, now=100.0)
    assert fresh.state == "idle" and fresh.start(100.0)[0].stage == "ask"


async def test_a_key_again_while_no_node_led_takes_the_caller_back_at_takeover(world: Any) -> None:
    """This node was a standby when the agent keyed *5 again (the leader had just died):
    when the caller's AGI arrives here, the caller goes back to the agent at once. The
    key that started the script (seen before its start) does not count."""
    ami, service, clock, *_ = world
    service.acting = lambda: False
    service.wall = lambda: WALL - 1.0  # the key came 9 s into the script
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    assert AGENT in service.standby_keys and not ami.actions
    service.acting, service.wall = (lambda: True), (lambda: WALL)
    keeper_on_switch(ami)
    agi = await arrives(ami, service, clock, stage("pause2", 1.0))
    assert agi.variables["IVR_RESULT"] == "back" and agi.played() == [] and not service.standby_keys
    returned = ami.sent("UserEvent")[-1]
    assert (returned["Stage"], returned["During"], returned["By"]) == ("returned", "pause2", "agent")


async def test_the_key_that_started_the_script_is_not_a_take_back(world: Any) -> None:
    ami, service, clock, *_ = world
    service.acting = lambda: False
    service.wall = lambda: WALL - 10.5  # before the script's start
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    service.acting, service.wall = (lambda: True), (lambda: WALL)
    keeper_on_switch(ami)
    agi = await arrives(ami, service, clock, stage("pause3", 4.0), "PJSIP/1001-00000002",
                        lambda a, what: talk(ami, 200))
    assert agi.variables["IVR_RESULT"] == "done" and ami.stages() == ["release"]


@pytest.mark.parametrize(("uid", "ended_ago", "ms", "back"), [
    (CALLER, 0.5, 1500, True),  # a clear burst that ended after the stage was written
    (CALLER, 1.5, 1500, False),  # ended before it (the dead node heard it, or it is stale)
    (CALLER, 0.5, 100, False),  # too short to be clear
    (CALLER, 0.5, 20000, False),  # a noisy line's burst: too long
    ("1700000000.77", 0.5, 1500, False),  # another channel
])
async def test_clear_speech_while_no_node_listened_returns_the_caller_at_once(
        world: Any, uid: str, ended_ago: float, ms: int, back: bool) -> None:
    """The caller answered while no node listened (the takeover; the detector stayed armed
    and this node, a standby then, kept the switch's ChannelTalkingStop): only a clear burst
    on the caller's channel that ended after the stage was written (the switch's times)
    sends the caller back, at once, with no further prompt."""
    agi, ami = await heard_in_takeover(world, uid, ended_ago, ms)
    if back:
        assert agi.played() == [] and agi.variables["IVR_RESULT"] == "back"
        returned = ami.sent("UserEvent")[-1]
        assert (returned["Stage"], returned["During"], returned["By"]) == ("returned", "pause1", "speech")
    else:
        assert agi.played() == ["unclear_ask", "unclear_goodbye_faint"] and agi.variables["IVR_RESULT"] == "done"


async def heard_in_takeover(world: Any, uid: str, ended_ago: float, ms: int, *,
                            paired: bool = True) -> tuple[FakeAgi, FakeAmi]:
    """A pair's node (its stage times the switch's: the switch's clock is read first, here
    equal to the fixture's wall clock) takes over after the switch reported a burst."""
    ami, service, clock, *_ = world
    service.paired = paired
    keeper_on_switch(ami)
    ami.event({"Event": "ChannelTalkingStop", "Uniqueid": uid, "Timestamp": f"{WALL - ended_ago:.3f}",
               "Duration": str(ms)})
    agi = await run_agi(ami, service, clock, lambda a, what: talk(ami, 200), variables={  # nothing clear after
        "IVR_STAGE": stage("pause1", 1.0), "IVR_UNCLEAR_AGENT": "PJSIP/1001-00000002",
        "STRFTIME(,,%s.%3q)": f"{WALL:.3f}"})
    return agi, ami


async def test_a_single_controller_does_not_compare_its_own_clock_with_the_switchs(world: Any) -> None:
    """Without a pair the stage is kept by the node's clock: talk (switch times) is not compared."""
    agi, _ = await heard_in_takeover(world, CALLER, 0.5, 1500, paired=False)
    assert agi.played() == ["unclear_ask", "unclear_goodbye_faint"]
    assert not agi.sent("GET VARIABLE STRFTIME")
