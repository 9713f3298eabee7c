"""Ring monitor gaps of issue #4 on the fake AMI and a fake clock: queue members
(AgentCalled in either order with DialBegin, answer decision by member interface),
``reroute_target`` (syntax, config errors, Redirect once per call) and the dialplan
globals published at every connect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivr.config import AgentConfig, Config, RingsConfig, load_config
from ivr.errors import ConfigError
from ivr.rings import RingSettings
from ivr.rings.monitor import device_key
from ivr.rules.dialing import reroute_entry
from ivr.rules.rings import Cadence
from tests.fakes import until
from tests.unit.test_ring_monitor import CALLER, LEG, Rig, started

AGENTS = [AgentConfig("1001", dial="PJSIP/1001"), AgentConfig("1002", dial="Local/1002@agents/n")]
QUEUE_CALLER = {"Uniqueid": "300.1", "Linkedid": "300.1", "Channel": "Local/x@c-00000031;1", "Context": "ivr-agents"}
MEMBER = {"DestUniqueid": "300.2", "DestLinkedid": "300.1", "DestChannel": "Local/1002@agents-00000032;1"}


def config(**rings: Any) -> Config:
    return Config(agents=AGENTS, rings=RingsConfig(**{"ring_timeout": None, **rings}))


def settings_of(config: Config) -> RingSettings:
    return RingSettings.from_config(config.rings, config.switch, config.agents)


@pytest.mark.parametrize(("target", "entry"), [
    ("", ""), ("queue:agents", "queue=agents"), ("1002", "1002=Local/1002@agents/n"),
    ("PJSIP/2001", "=PJSIP/2001"), (" queue:support ", "queue=support")])
def test_reroute_target_syntax(target: str, entry: str) -> None:
    assert reroute_entry(target, AGENTS) == entry


@pytest.mark.parametrize(("target", "message"), [
    ("queue:", "bad queue name in 'queue:'"), ("queue:a b", "bad queue name"),
    ("9999", "'9999' is not the number of an agent in [[agents]]"),
    ("support", "'support' is neither queue:NAME, an agent number, nor a dial string")])
def test_reroute_target_errors(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        reroute_entry(target, AGENTS)


def test_config_names_a_bad_reroute_target_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ivr.toml"
    path.write_text('[[agents]]\nnumber = "1001"\n\n[rings]\nreroute = true\nreroute_target = "1009"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.details["problems"] == [
        "rings.reroute_target (line 6): '1009' is not the number of an agent in [[agents]]"]
    path.write_text('[[agents]]\nnumber = "1001"\n\n[rings]\nreroute = true\nreroute_target = "queue:agents"\n')
    assert settings_of(load_config(path, env={})).reroute_target == "queue=agents"


def test_settings_from_config_map_member_interfaces_and_dial_uris() -> None:
    settings = settings_of(config(ring_timeout=8.0, reroute_target="1001"))
    assert settings.agents == {"PJSIP/1001": "1001", "Local/1002@agents": "1002"}
    assert settings.globals == {"IVR_AGENTS": "1001=PJSIP/1001|1002=Local/1002@agents/n",
                                "IVR_AGENT_TIMEOUT": "8", "IVR_REROUTE_TARGET": "1001=PJSIP/1001"}
    assert device_key("PJSIP/1001/sip:1001@127.0.0.1:5070") == device_key("PJSIP/1001-0000002a") == "PJSIP/1001"
    assert device_key("Local/1002@agents/n") == device_key(MEMBER["DestChannel"]) == "Local/1002@agents"


async def test_globals_published_at_every_connect() -> None:
    async with started(settings=settings_of(config(ring_timeout=8.0))) as rig:
        def setvars() -> list[tuple[str, str]]:
            return [(a["Variable"], a["Value"]) for a in rig.fake.actions if a["Action"] == "Setvar"]

        await rig.fake.wait_for(lambda: len(setvars()) == 2, 2)
        assert setvars() == [("IVR_AGENTS", "1001=PJSIP/1001|1002=Local/1002@agents/n"),
                             ("IVR_AGENT_TIMEOUT", "8")]
        await rig.reconnect()
        await rig.fake.wait_for(lambda: len(setvars()) == 4, 2)
        await rig.sync()  # replies in before close: on 3.11 wait_for can eat a cancel that meets a reply
        assert setvars()[2:] == setvars()[:2]


@pytest.fixture
async def queue_rig():
    async with started(settings=settings_of(config())) as rig:
        yield rig


async def member_rings(rig: Rig, called_first: bool) -> None:
    called = dict(Event="AgentCalled", **QUEUE_CALLER, **MEMBER, Queue="agents", Interface="Local/1002@agents/n",
                  MemberName="Li Na")
    begin = dict(Event="DialBegin", **QUEUE_CALLER, **MEMBER, DestChannelState="0")
    for fields in ([called, begin] if called_first else [begin, called]):
        await rig.event(**fields)
        if fields is begin:  # a Ringing leg before AgentCalled names it: counted under the device first
            await rig.event(Event="Newstate", Uniqueid=MEMBER["DestUniqueid"], Linkedid="300.1",
                            Channel=MEMBER["DestChannel"], ChannelState="5", ChannelStateDesc="Ringing")


@pytest.mark.parametrize("called_first", [True, False])
async def test_queue_member_named_from_its_interface_in_either_event_order(queue_rig, called_first) -> None:
    await member_rings(queue_rig, called_first)
    await queue_rig.event(Event="Newstate", Uniqueid=MEMBER["DestUniqueid"], Linkedid="300.1",
                          Channel=MEMBER["DestChannel"], ChannelState="5", ChannelStateDesc="Ringing")
    await queue_rig.advance(31.0)
    assert [(n.agent, n.level) for n in queue_rig.monitor.alarms] == [("1002", "warning"), ("1002", "critical")]
    # Queue() gives the AGI no peer channel, only MEMBERINTERFACE: the AGI may overtake Up.
    decision = queue_rig.monitor.answer_decision("300.1", "", "Local/1002@agents/n")
    assert (decision.agent, decision.rings, decision.late) == ("1002", 7, True)
    assert queue_rig.monitor.figures() == {"1002": {"offered": 1, "within_three": 0, "late": 1, "not_answered": 0,
                                                    "apologised": 1}}


async def test_reroute_target_redirects_the_caller_once_per_call() -> None:
    settings = RingSettings(Cadence.for_zone("cn"), reroute=True, agents={"PJSIP/1001": "1001"},
                            reroute_target="queue=agents")
    async with started(settings=settings) as rig:
        fake = rig.fake
        await rig.ring()
        await rig.advance(15.0)
        await fake.wait_for(lambda: fake.count("Redirect") == 1, 2)
        redirect = next(a for a in fake.actions if a["Action"] == "Redirect")
        assert (redirect["Channel"], redirect["Context"], redirect["Exten"], redirect["Priority"]) == (
            CALLER["Channel"], "ivr-agents", "reroute", "1")
        assert fake.count("Hangup") == 0
        await rig.event(Event="DialEnd", **CALLER, **LEG, DialStatus="CANCEL")
        # The target rings 3 rings too: no second redirect (no loop), the leg is hung up.
        second = {"DestUniqueid": "100.3", "DestLinkedid": "100.1", "DestChannel": "PJSIP/1001-00000003"}
        await rig.event(Event="DialBegin", **CALLER, **second, DestChannelState="5")
        await rig.advance(15.0)
        await fake.wait_for(lambda: fake.count("Hangup") == 1, 2)
        assert fake.count("Redirect") == 1
        assert rig.monitor.figures()["1001"]["not_answered"] == 1


async def test_reroute_target_never_moves_a_caller_of_another_call() -> None:
    """Issue 13 (2d): the caller channel the events named is, on the switch, in another
    call (its Linkedid differs): no Redirect, and the refusal is logged."""
    from structlog.testing import capture_logs

    settings = RingSettings(Cadence.for_zone("cn"), reroute=True, agents={"PJSIP/1001": "1001"},
                            reroute_target="queue=agents")
    async with started(settings=settings) as rig:
        fake = rig.fake
        fake.live.add(CALLER["Uniqueid"], CALLER["Channel"], "777.1")  # the switch's truth
        with capture_logs() as logs:
            await rig.ring()
            await rig.advance(15.0)
            await fake.wait_for(lambda: fake.count("Status") >= 1, 2)
            await until(lambda: any(e["event"] == "ring.reroute_refused" for e in logs), 2,
                        "the refusal after the Status reply")
        assert fake.count("Redirect") == 0 and fake.count("Hangup") == 0
        await rig.event(Event="DialEnd", **CALLER, **LEG, DialStatus="NOANSWER")
