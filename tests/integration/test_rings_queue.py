"""R1 on the real switch, the gaps of issue #4: Queue() agents, ``[rings] reroute_target``
and ``[rings] ring_timeout``.

Queue members are Local channels logged into the shipped ``agents`` queue with AMI
``QueueAdd`` on the test's admin connection (write class ``agent``, which the controller's
``ivr`` user does not have and does not need). The ring settings come from a controller
config through ``RingSettings.from_config``, so member interfaces are mapped to agent
numbers by ``[[agents]]`` dial strings, and the controller publishes its dialplan globals
itself (as the least-privilege ``ivr`` user).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ivr.config import AgentConfig, Config, RingsConfig, SwitchConfig
from ivr.rings import RingSettings
from tests.integration.amitools import AmiRecorder, ts
from tests.integration.test_rings import TOL, Harness, alarms, dial_begins, wait_hangups

pytestmark = pytest.mark.integration
PERIOD = 5.0  # cn: 1 s on, 4 s off


def ring_config(agents: dict[str, str], **rings: Any) -> Config:
    """A controller config: cn tone zone, ``[[agents]]`` number -> dial, ``[rings]``."""
    return Config(switch=SwitchConfig(tone_zone="cn", language="en-US"),
                  rings=RingsConfig(**{"ring_timeout": None, **rings}),
                  agents=[AgentConfig(n, dial=d) for n, d in agents.items()])


@contextlib.asynccontextmanager
async def controller(switch, config: Config) -> AsyncIterator[Harness]:
    settings = RingSettings.from_config(config.rings, config.switch, config.agents)
    h = await Harness(switch, "cn", settings=settings).start()
    try:
        yield h
    finally:
        await h.close()


@contextlib.asynccontextmanager
async def members(ami: AmiRecorder, queue: str, interfaces: list[str]) -> AsyncIterator[None]:
    for iface in interfaces:
        # as_list=False: panoramisk takes "Added interface to queue" for the start of a list.
        reply = await ami.action({"Action": "QueueAdd", "Queue": queue, "Interface": iface}, as_list=False)
        assert reply.success, reply
    try:
        yield
    finally:
        for iface in interfaces:
            await ami.action({"Action": "QueueRemove", "Queue": queue, "Interface": iface}, as_list=False)


async def queue_agent(ami: AmiRecorder, exten: str, ring: float) -> None:
    """A member phone: rings ``ring`` s (< 0: until hung up), answers, stays 20 s."""
    if ring < 0:
        await ami.add_dialplan("test-agent", exten, ["Ringing()", "Wait(120)", "Hangup()"])
    else:
        await ami.add_dialplan("test-agent", exten, ["Ringing()", f"Wait({ring})", "Answer()", "Wait(20)", "Hangup()"])


async def call(ami: AmiRecorder, agents: str | None) -> None:
    """A caller entering ivr-agents; ``agents``: its own hunt list (None: the global)."""
    await ami.add_dialplan("test-caller", "x", ["Answer()", "Wait(60)", "Hangup()"])
    variables = {"IVR_FALLBACK_QUEUE": "no-such-queue", "IVR_LANGUAGE": "en-US"}
    if agents is not None:
        variables["IVR_AGENTS"] = agents
    await ami.originate("Local/x@test-caller", "ivr-agents", "s", variables=variables, timeout_ms=5000)


@pytest.fixture(autouse=True)
async def clean_globals(ami: AmiRecorder) -> AsyncIterator[None]:
    """The controller under test publishes dialplan globals (IVR_AGENTS: the hunt of its
    [[agents]], in every test here that builds one): empty them afterwards (the shipped
    dialplan sets none), or the next test on this switch, of any file, hunts this test's agents."""
    yield
    for name in ("IVR_AGENTS", "IVR_AGENT_TIMEOUT", "IVR_REROUTE_TARGET"):
        await ami.action({"Action": "Setvar", "Variable": name, "Value": ""})


def streamed(ami: AmiRecorder, since: int) -> list[tuple[str, str]]:
    """(caller Uniqueid, prompt id) of every STREAM FILE the controller sent."""
    out = []
    for e in ami.find(lambda e: e.event == "AGIExecStart" and "STREAM FILE" in e.get("Command", ""), since):
        out.append((e["Uniqueid"], e["Command"].split()[2].rsplit("/", 1)[-1]))
    return out


def ringing(ami: AmiRecorder, device: str, since: int):
    return ami.find(lambda e: e.event == "Newstate" and e.get("Channel", "").startswith(device)
                    and e["Channel"].endswith(";1") and e.get("ChannelStateDesc") == "Ringing", since)


async def test_queue_member_answering_after_7_rings_alarms_named_and_apology(switch, ami):
    """Agent 7401 is a member of queue ``agents`` (interface Local/q7@test-agent/n) and
    answers in ring 7: a warning at 3 rings and a critical at 6, both naming 7401 and timed
    on the cn cadence from the member's Ringing; before the bridge the caller hears the
    apology and "agent 7 4 0 1" (Queue()'s AGI argument, on the caller's channel)."""
    await queue_agent(ami, "q7", 32.5)
    config = ring_config({"7401": "Local/q7@test-agent/n"})
    async with controller(switch, config) as h, members(ami, "agents", ["Local/q7@test-agent/n"]):
        since = len(ami.events)
        await call(ami, "queue=agents")
        called = await ami.wait_for(lambda e: e.event == "AgentCalled", since=since, timeout=10)
        assert called[0]["Interface"] == "Local/q7@test-agent/n"
        await wait_hangups(ami, since, 1, timeout=70)
        start = ringing(ami, "Local/q7@test-agent", since)[0]
        got = alarms(ami, since)
        assert [(e["Agent"], e["Level"], e["Rings"]) for e in got] == [("7401", "warning", "3"),
                                                                      ("7401", "critical", "6")]
        for e in got:
            assert abs(ts(e) - ts(start) - int(e["Rings"]) * PERIOD) < TOL, e
            assert e["Channel"] == called[0]["DestChannel"]
        caller = called[0]["Uniqueid"]
        assert streamed(ami, since) == [(caller, p) for p in (
            "ring_apology", "agent_intro", "digit_7", "digit_4", "digit_0", "digit_1", "agent_service")]
        connect = ami.find(lambda e: e.event == "AgentConnect", since)
        assert connect and connect[0]["Interface"] == "Local/q7@test-agent/n"
        assert h.monitor.figures() == {"7401": {"offered": 1, "within_three": 0, "late": 1, "not_answered": 0,
                                                "apologised": 1}}


async def test_queue_ringall_counts_every_member_offered(switch, ami):
    """Two members ring at once; 7702 answers in ring 2, 7701 never: no alarm, 7702
    answered within three rings and its number is played (no apology), 7701 counted as
    offered and not answered (the queue dropped its leg)."""
    await queue_agent(ami, "qn", -1)
    await queue_agent(ami, "q2", 7.5)
    config = ring_config({"7701": "Local/qn@test-agent/n", "7702": "Local/q2@test-agent/n"})
    ifaces = ["Local/qn@test-agent/n", "Local/q2@test-agent/n"]
    async with controller(switch, config) as h, members(ami, "agents", ifaces):
        since = len(ami.events)
        await call(ami, "queue=agents")
        await wait_hangups(ami, since, 1, timeout=45)
        assert len(ami.find(lambda e: e.event == "AgentCalled", since)) == 2
        assert alarms(ami, since) == []
        caller = ami.find(lambda e: e.event == "AgentCalled", since)[0]["Uniqueid"]
        assert streamed(ami, since) == [(caller, p) for p in (
            "agent_intro", "digit_7", "digit_7", "digit_0", "digit_2", "agent_service")]
        assert h.monitor.figures() == {
            "7701": {"offered": 1, "within_three": 0, "late": 0, "not_answered": 1, "apologised": 0},
            "7702": {"offered": 1, "within_three": 1, "late": 0, "not_answered": 0, "apologised": 0}}


async def test_queue_without_the_controller_still_connects_the_caller(switch, ami):
    """Nothing listens on the FastAGI port: Queue()'s AGI fails quietly (AGISTATUS
    FAILURE) and the caller is bridged with the member all the same."""
    await queue_agent(ami, "qa", 2)
    async with members(ami, "agents", ["Local/qa@test-agent/n"]):
        since = len(ami.events)
        await call(ami, "queue=agents")
        connect = await ami.wait_for(lambda e: e.event == "AgentConnect", since=since, timeout=15)
        enters = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e["Channel"].endswith(";1")
                                    and e.get("BridgeUniqueid"), since=since, count=2, timeout=10)
        assert {e["Channel"] for e in enters} == {connect[0]["Channel"], connect[0]["DestChannel"]}
        assert len({e["BridgeUniqueid"] for e in enters}) == 1
        await wait_hangups(ami, since, 1, timeout=40)


async def test_reroute_target_queue_moves_the_caller_after_three_rings(switch, ami):
    """reroute = true, reroute_target = "queue:agents": agent 7501 (hunted) never
    answers; at its 4th ring the controller redirects the caller to the queue, whose
    member 7502 answers 7 s later. The caller heard 3 + 2 rings: no apology, 7502's number."""
    await queue_agent(ami, "qf", 7)
    await ami.add_dialplan("test-agent", "slow", ["Ringing()", "Wait(120)", "Hangup()"])
    config = ring_config({"7501": "Local/slow@test-agent", "7502": "Local/qf@test-agent/n"},
                         reroute=True, reroute_target="queue:agents")
    async with controller(switch, config) as h, members(ami, "agents", ["Local/qf@test-agent/n"]):
        assert h.settings.reroute_target == "queue=agents"
        since = len(ami.events)
        await call(ami, "7501=Local/slow@test-agent")
        await wait_hangups(ami, since, 1, timeout=50)
        assert [(e["Agent"], e["Level"]) for e in alarms(ami, since)] == [("7501", "warning")]
        slow = ringing(ami, "Local/slow@test-agent", since)[0]
        end = ami.find(lambda e: e.event == "DialEnd" and "slow@test-agent" in e.get("DestChannel", ""), since)
        assert abs(ts(end[0]) - ts(slow) - 3 * PERIOD) < TOL
        called = ami.find(lambda e: e.event == "AgentCalled", since)
        assert len(called) == 1 and called[0]["Interface"] == "Local/qf@test-agent/n"
        assert abs(ts(called[0]) - ts(end[0])) < TOL
        assert called[0]["Uniqueid"] == dial_begins(ami, since)["Local/slow@test-agent"]["Uniqueid"]
        assert [p for _, p in streamed(ami, since)] == [
            "agent_intro", "digit_7", "digit_5", "digit_0", "digit_2", "agent_service"]
        figs = h.monitor.figures()
        assert figs["7501"] == {"offered": 1, "within_three": 0, "late": 0, "not_answered": 1, "apologised": 0}
        assert figs["7502"] == {"offered": 1, "within_three": 1, "late": 0, "not_answered": 0, "apologised": 0}


async def test_ring_timeout_gives_up_on_an_agent_and_the_hunt_moves_on(switch, ami):
    """[rings] ring_timeout = 8 and the hunt come from the controller's globals (the
    caller sets neither): agent 7601 rings 8 s (NOANSWER), then 7602 rings and answers."""
    await ami.add_dialplan("test-agent", "never", ["Ringing()", "Wait(120)", "Hangup()"])
    await ami.add_dialplan("test-agent", "quick", ["Ringing()", "Wait(3)", "Answer()", "Wait(2)", "Hangup()"])
    config = ring_config({"7601": "Local/never@test-agent", "7602": "Local/quick@test-agent"}, ring_timeout=8.0)
    before = len(ami.events)
    async with controller(switch, config) as h:
        for name, value in (("IVR_AGENT_TIMEOUT", "8"), ("IVR_AGENTS", h.settings.hunt)):
            await ami.wait_for(lambda e, name=name, value=value: e.event == "VarSet" and e.get("Variable") == name
                               and e.get("Value") == value, since=before, timeout=5)
        since = len(ami.events)
        await call(ami, None)
        await wait_hangups(ami, since, 1, timeout=40)
        begins = dial_begins(ami, since)
        end = ami.find(lambda e: e.event == "DialEnd" and "never@test-agent" in e.get("DestChannel", ""), since)
        assert end[0]["DialStatus"] == "NOANSWER"
        assert abs(ts(end[0]) - ts(begins["Local/never@test-agent"]) - 8.0) < TOL
        assert abs(ts(begins["Local/quick@test-agent"]) - ts(end[0])) < TOL
        figs = h.monitor.figures()
        assert figs["7601"]["not_answered"] == 1 and figs["7602"]["within_three"] == 1
