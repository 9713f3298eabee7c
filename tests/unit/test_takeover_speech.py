"""Issue 17: a caller who speaks while no node of a pair listens (the takeover) is heard by
the node that goes on with the script: talk on the caller's channel that began after the
kept stage was written, by the switch's clock (AMI ``Timestamp``, the stage time read from
the switch over AGI), never by a node's own clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from ivr.agi.wake import PAUSE_GUARD
from ivr.ami.talk import TalkLog
from ivr.flows.inbound import InboundFlow
from ivr.flows.speech import TalkDetector
from ivr.sections import ClusterConfig, Config, SilenceConfig
from tests.fakes import Clock, RecordingAmi
from tests.unit.test_inbound import AFTERNOON, PAUSE, DyingCall, MemoryOnce, stages

SWITCH0 = 1_800_000_000.0  # the switch's clock at the fake clock's 0
GREETING_END = 4.0  # hello 1 s + welcome 3 s from t = 0
SWITCH_NOW = "STRFTIME(,,%s.%3q)"
CALLER = "1700000000.1"  # the fake call's Uniqueid


class SwitchCall(DyingCall):
    """The fake call also answers the switch's clock (``GET VARIABLE STRFTIME(...)``)."""

    async def get_variable(self, name: str) -> str | None:
        if name == SWITCH_NOW:
            await self.command(f"GET VARIABLE {name}")
            return f"{SWITCH0 + self.clock.t:.3f}"
        return await super().get_variable(name)


def pair_node(call: SwitchCall, once: MemoryOnce, ami: RecordingAmi, skew: float, node: str = "n") -> InboundFlow:
    """One node of a pair: its own AMI (a standby follows it too), its wall clock ``skew``
    s off the switch's (``node`` "": no pair)."""
    config = Config(silence=SilenceConfig(pause=PAUSE), cluster=ClusterConfig(node=node))
    return InboundFlow(config, lambda: datetime(2027, 3, 10, 15),
                       speech=TalkDetector(ami), clock=call.clock, once=once,
                       choose_greeting=lambda _at, _cfg: AFTERNOON, wall=lambda: SWITCH0 + call.clock.t + skew)


async def takeover(die_at: float, talk: list[tuple[str, float]], skews: tuple[float, float] = (0.0, 0.0),
                   gap: float = 1.3, node: str = "n") -> SwitchCall:
    """Node 1 serves the call and dies at ``die_at``; while nobody listens (``gap`` s) the
    switch reports ``talk`` (uniqueid, switch time as offset from SWITCH0) to every node's
    AMI; node 2 then runs the route again."""
    call, once = SwitchCall(Clock(0.0)), MemoryOnce()
    call.die_at = die_at
    standby = RecordingAmi()
    first = pair_node(call, once, RecordingAmi(), skews[0], node)
    second = pair_node(call, once, standby, skews[1], node)  # a standby: it follows AMI all along
    with pytest.raises(ConnectionError):
        await first(call)
    for uid, at in talk:
        standby.fire("ChannelTalkingStart", Uniqueid=uid, Timestamp=f"{SWITCH0 + at:.6f}")
    call.clock.t += gap
    await second(call)
    return call


async def test_speech_in_the_takeover_puts_the_caller_through_at_once_without_a_prompt() -> None:
    call = await takeover(die_at=GREETING_END + 0.2, talk=[(CALLER, GREETING_END + 0.6)])
    assert [p for p, _, _ in call.plays] == ["hello", "welcome"]  # no silent_prompt2
    assert call.variables["IVR_RESULT"] == "agents"
    assert stages(call) == ["responded"]
    assert "Reason: speech" in call.events[0][1] and "From: pause1" in call.events[0][1]
    assert call.events[0][0] == pytest.approx(GREETING_END + 0.2 + 1.3, abs=0.01)  # at once on the new node
    assert not call.sent("WAIT FOR DIGIT")[1:]  # the new node never waited


@pytest.mark.parametrize(("talk", "why"), [
    ([("1700000000.99", GREETING_END + 0.6)], "another channel"),
    ([(CALLER, GREETING_END - 0.5)], "before the stage was written"),
    ([], "nobody spoke"),
])
async def test_other_or_stale_talk_does_not_count(talk: list[tuple[str, float]], why: str) -> None:
    call = await takeover(die_at=GREETING_END + 0.2, talk=talk)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"], why
    assert call.variables["IVR_RESULT"] == "done"


@pytest.mark.parametrize("skews", [(30.0, -30.0), (-4.0, 4.0)])
async def test_the_switch_clock_decides_not_the_nodes(skews: tuple[float, float]) -> None:
    """The nodes' clocks are off the switch's (and each other's) by seconds: the stage is
    kept in the switch's time, so talk 0.4 s after it counts and talk 0.4 s before does
    not, whatever the nodes' clocks say; the pause still ends when it would have."""
    heard = await takeover(die_at=GREETING_END + 0.2, talk=[(CALLER, GREETING_END + 0.4)], skews=skews)
    assert heard.variables["IVR_RESULT"] == "agents" and stages(heard) == ["responded"]
    stale = await takeover(die_at=GREETING_END + 0.2, talk=[(CALLER, GREETING_END - 0.4)], skews=skews)
    assert [p for p, _, _ in stale.plays][2:] == ["silent_prompt2", "silent_prompt3"]
    _, p2_start, _ = stale.plays[2]
    assert p2_start == pytest.approx(GREETING_END + PAUSE + PAUSE_GUARD, abs=0.01)


async def test_without_a_pair_the_nodes_clock_is_never_compared_with_the_switchs() -> None:
    call = await takeover(die_at=GREETING_END + 0.2, talk=[(CALLER, GREETING_END + 0.6)], node="")
    assert [p for p, _, _ in call.plays][2:] == ["silent_prompt2", "silent_prompt3"]
    assert not call.sent("GET VARIABLE STRFTIME")


async def test_speech_over_a_prompt_cut_by_the_death_puts_the_caller_through_without_it_again() -> None:
    """The node dies mid prompt 2 and the caller had answered it: the new node does not
    play it again (the caller already answered: the rule's prompts in full protect a
    silent caller from release, nothing more) but puts the caller through at once."""
    p2_start = GREETING_END + PAUSE
    call = await takeover(die_at=p2_start + 1.0, talk=[(CALLER, p2_start + 0.5)])
    assert len(call.sent("STREAM FILE ivr/zh-CN/silent_prompt2")) == 1  # the cut one, never again
    assert call.variables["IVR_RESULT"] == "agents"
    assert stages(call) == ["prompt2", "responded"]


def test_talk_log_keeps_the_switch_times_per_channel_and_forgets_on_hang_up() -> None:
    talk = TalkLog(channels=2, per_channel=3)
    ev: list[dict[str, Any]] = [
        {"Event": "ChannelTalkingStart", "Uniqueid": "a", "Timestamp": "10.5"},
        {"Event": "ChannelTalkingStop", "Uniqueid": "a", "Timestamp": "12.0", "Duration": "1500"},
        {"Event": "ChannelTalkingStart", "Uniqueid": "a", "Timestamp": "nan"},  # refused
        {"Event": "ChannelTalkingStart", "Uniqueid": "a"},  # no time: refused
        {"Event": "ChannelTalkingStop", "Uniqueid": "a", "Timestamp": "13", "Duration": "x"},  # refused
        {"Event": "ChannelTalkingStart", "Uniqueid": "", "Timestamp": "11"},  # no channel
    ]
    for e in ev:
        talk.handle(e)
    assert talk.started_since("a", 10.0) == 10.5 and talk.started_since("a", 10.5) is None
    assert [(t.at, t.duration_ms) for t in talk.bursts_since("a", 11.0)] == [(12.0, 1500)]
    for uid in ("b", "c"):  # only the last 2 channels are kept
        talk.handle({"Event": "ChannelTalkingStart", "Uniqueid": uid, "Timestamp": "20"})
    assert talk.started_since("a", 0) is None and len(talk) == 2
    talk.handle({"Event": "Hangup", "Uniqueid": "b"})
    assert talk.started_since("b", 0) is None and talk.started_since("c", 0) == 20.0
    for i in range(5):
        talk.handle({"Event": "ChannelTalkingStart", "Uniqueid": "c", "Timestamp": f"{30 + i}"})
    assert talk.started_since("c", 0) == 32.0  # the last 3 events of a channel
