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
from types import SimpleNamespace

import pytest

from ivr.rings import RingSettings
from tests.integration.amitools import AmiRecorder, ts
from tests.integration.test_rings import TOL, Harness, alarms, dial_begins, wait_hangups

pytestmark = pytest.mark.integration
PERIOD = 5.0  # cn: 1 s on, 4 s off


def ring_config(agents: dict[str, str], **rings: object) -> SimpleNamespace:
    """A controller config: cn tone zone, ``[[agents]]`` number -> dial, ``[rings]``."""
    return SimpleNamespace(
        switch=SimpleNamespace(tone_zone="cn", indications=None, language="en-US"),
        rings=SimpleNamespace(**{"on_ms": None, "off_ms": None, "warn_rings": 3, "critical_rings": 6,
                                 "reroute": False, "reroute_target": "", "ring_timeout": None, **rings}),
        agents=[SimpleNamespace(number=n, dial=d) for n, d in agents.items()],
    )


@contextlib.asynccontextmanager
async def controller(switch, config: SimpleNamespace) -> AsyncIterator[Harness]:
    h = await Harness(switch, "cn", settings=RingSettings.from_config(config)).start()
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


async def call(ami: AmiRecorder, agents: str, **variables: str) -> None:
    await ami.add_dialplan("test-caller", "x", ["Answer()", "Wait(60)", "Hangup()"])
    await ami.originate("Local/x@test-caller", "ivr-agents", "s", variables={
        "IVR_AGENTS": agents, "IVR_FALLBACK_QUEUE": "no-such-queue", "IVR_LANGUAGE": "en-US", **variables},
        timeout_ms=5000)


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
