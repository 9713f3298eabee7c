"""R1 on the real switch: ring alarms, apology and agent number, SIP agent, restarts.

Callers and agents are Local channels (deterministic): ``Local/x@test-caller`` is
originated into ``ivr-agents``, whose hunt rings ``Local/<exten>@test-agent`` (Ringing,
Wait, Answer). The monitor under test is the controller's own pieces (AmiConnection as
the least-privilege ``ivr`` user, ChannelTracker, TimerService, RingMonitor, FastAGI
route ``agent-answered``); alarms are asserted from the ``IvrRingAlarm`` UserEvents that
the test's own admin AMI connection receives, timed with Asterisk's timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from panoramisk.message import Message

from ivr.agi.server import FastAgiServer
from ivr.alarms.sinks import AmiUserEventSink
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection, Backoff
from ivr.config import PromptsConfig, SwitchConfig
from ivr.events import EventBus
from ivr.metrics import Metrics
from ivr.rings import RingMonitor, RingSettings
from ivr.rings.answer import AgentAnsweredFlow
from ivr.rules.rings import Cadence
from ivr.timers import TimerService
from tests.integration.amitools import AmiRecorder, ts, until

pytestmark = pytest.mark.integration
SIPP_DIR = Path(__file__).parent / "sipp"
TOL = 0.6  # s: event timestamps against the cadence


class Harness:
    def __init__(self, switch, zone: str, reroute: bool = False, settings: RingSettings | None = None) -> None:
        secret = switch.embedded.secrets().controller if switch.embedded else switch.secret
        user = "ivr" if switch.embedded else switch.username
        self.conn = AmiConnection(switch.ami_host, switch.ami_port, user, secret, ping_interval=1.0,
                                  ping_timeout=1.0, backoff=Backoff(initial=0.2, maximum=1.0))
        self.tracker = ChannelTracker()
        self.tracker.attach(self.conn)
        self.timers = TimerService()
        self.bus = EventBus()
        self.metrics = Metrics()
        self.settings = settings or RingSettings(Cadence.for_zone(zone), reroute=reroute,
                                                 agents={"PJSIP/1001": "1001"})
        self.monitor = RingMonitor(self.conn, self.tracker, self.timers, self.settings, bus=self.bus,
                                   sinks=[AmiUserEventSink(self.conn)], metrics=self.metrics)
        self.monitor.attach()
        answered = AgentAnsweredFlow(self.monitor, SwitchConfig(language="en-US"), PromptsConfig(sound_prefix="ivr"))
        self.agi = FastAgiServer({"agent-answered": answered}, "127.0.0.1",
                                 switch.agi_port, key=switch.agi_key)

    async def start(self) -> Harness:
        await self.agi.start()
        await self.conn.start()
        await self.conn.wait_connected(10)
        await asyncio.wait_for(self.tracker.synced.wait(), 10)
        return self

    async def close(self) -> None:
        await self.agi.close(2)
        await self.monitor.close()
        await self.timers.close()
        await self.conn.close()


@contextlib.asynccontextmanager
async def harness(switch, zone: str, **kw: Any) -> AsyncIterator[Harness]:
    h = await Harness(switch, zone, **kw).start()
    try:
        yield h
    finally:
        await h.close()


async def add_actors(ami: AmiRecorder, agents: dict[str, float]) -> None:
    """Caller: answers and stays 60 s at most. Agents: ring ``wait`` s, answer, talk 1 s."""
    await ami.add_dialplan("test-caller", "x", ["Answer()", "Wait(60)", "Hangup()"])
    for exten, wait in agents.items():
        if wait < 0:
            await ami.add_dialplan("test-agent", exten, ["Ringing()", "Wait(120)", "Hangup()"])
        else:
            await ami.add_dialplan("test-agent", exten,
                                   ["Ringing()", f"Wait({wait})", "Answer()", "Wait(1)", "Hangup()"])


async def call(ami: AmiRecorder, agents: str, timeout: int = 60) -> None:
    """A caller entering ivr-agents with its own hunt list (IVR_AGENTS) and no fallback queue."""
    await ami.originate("Local/x@test-caller", "ivr-agents", "s", variables={
        "IVR_AGENTS": agents, "IVR_AGENT_TIMEOUT": str(timeout), "IVR_FALLBACK_QUEUE": "no-such-queue",
        "IVR_LANGUAGE": "en-US"}, timeout_ms=5000)


def dial_begins(ami: AmiRecorder, since: int) -> dict[str, Message]:
    """Agent device ("Local/r4@test-agent") -> its DialBegin event."""
    out = {}
    for e in ami.find(lambda e: e.event == "DialBegin" and "@test-agent" in e.get("DestChannel", ""), since):
        out[e["DestChannel"].split("-0")[0]] = e
    return out


def alarms(ami: AmiRecorder, since: int = 0) -> list:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrRingAlarm", since)


async def wait_hangups(ami: AmiRecorder, since: int, n: int, timeout: float) -> None:
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel", "").startswith("Local/x@test-caller")
                       and e["Channel"].endswith(";1"), since=since, count=n, timeout=timeout)


async def test_cn_agents_answering_after_1_3_4_7_rings_and_never(switch, ami):
    """cn: 5 s a ring. Agents answer in the middle of ring 1, 3, 4, 7, or never (the
    caller leaves after 7 rings, the Dial times out). All five calls run at once."""
    period = 5.0
    waits = {"r1": 2.5, "r3": 12.5, "r4": 17.5, "r7": 32.5, "never": -1}
    await add_actors(ami, waits)
    async with harness(switch, "cn") as h:
        since = len(ami.events)
        for n, exten in enumerate(waits, start=1):
            timeout = 36 if exten == "never" else 60
            await call(ami, f"700{n}=Local/{exten}@test-agent", timeout)
        await wait_hangups(ami, since, 5, timeout=60)
        begins = dial_begins(ami, since)
        assert len(begins) == 5
        by_agent: dict[str, list[str]] = {}
        for e in alarms(ami, since):
            by_agent.setdefault(e["Agent"], []).append(e["Level"])
            n = int(e["Rings"])
            dev = next(d for d, b in begins.items() if b["DestUniqueid"] == e["Uniqueid"])
            # The alarm fires when the (n+1)th ring starts: n periods after ringing began.
            assert abs(ts(e) - ts(begins[dev]) - n * period) < TOL, (dev, e)
        assert by_agent == {"7003": ["warning"], "7004": ["warning", "critical"],
                            "7005": ["warning", "critical"]}
        # The apology only on the call answered after 7 rings; the agent's number on every answer.
        streams = ami.find(lambda e: e.event == "AGIExecStart" and "STREAM FILE" in e.get("Command", ""), since)
        apologies = [e for e in streams if "ring_apology" in e["Command"]]
        assert len(apologies) == 1
        r7_caller = begins["Local/r7@test-agent"]["Uniqueid"]
        assert apologies[0]["Uniqueid"] == r7_caller
        intros = [e for e in streams if "agent_intro" in e["Command"]]
        assert len(intros) == 4
        # Figures for the dashboard, and the metrics.
        figs = h.monitor.figures()
        assert figs["7001"] == {"offered": 1, "within_three": 1, "late": 0, "not_answered": 0, "apologised": 0}
        assert figs["7002"]["within_three"] == 1
        assert figs["7003"]["late"] == 1 and figs["7003"]["apologised"] == 0
        assert figs["7004"]["late"] == 1 and figs["7004"]["apologised"] == 1
        assert figs["7005"] == {"offered": 1, "within_three": 0, "late": 0, "not_answered": 1, "apologised": 0}
        assert h.metrics.value("ivr_ring_alarms_total", {"agent": "7004", "level": "critical"}) == 1
        assert h.metrics.value("ivr_rings_to_answer_count", {"agent": "7004"}) == 1
        assert h.metrics.value("ivr_rings_to_answer_bucket", {"agent": "7004", "le": "6.0"}) == 0
        assert h.metrics.value("ivr_rings_to_answer_bucket", {"agent": "7004", "le": "7.0"}) == 1


async def test_us_cadence_counts_six_second_rings(switch, ami):
    """us: 6 s a ring. Answered at 15 s is ring 3 (no alarm; it would be ring 4 in cn),
    answered at 21 s is ring 4 (one warning, no apology)."""
    await add_actors(ami, {"u3": 15, "u4": 21})
    async with harness(switch, "us") as h:
        since = len(ami.events)
        await call(ami, "7101=Local/u3@test-agent")
        await call(ami, "7102=Local/u4@test-agent")
        await wait_hangups(ami, since, 2, timeout=45)
        got = [(e["Agent"], e["Level"], e["Rings"]) for e in alarms(ami, since)]
        assert got == [("7102", "warning", "3")]
        begins = dial_begins(ami, since)
        warn = alarms(ami, since)[0]
        assert abs(ts(warn) - ts(begins["Local/u4@test-agent"]) - 18.0) < TOL
        assert h.monitor.figures()["7101"]["within_three"] == 1
        assert not ami.find(lambda e: e.event == "AGIExecStart" and "ring_apology" in e.get("Command", ""), since)


async def test_reroute_after_three_rings_moves_the_call_to_the_next_agent(switch, ami):
    """rings.reroute: agent 7201 never answers; at the 4th ring the controller hangs up
    its leg, the hunt rings 7202, who answers 7 s later. The caller heard 3 + 2 rings:
    no apology; one warning for 7201 only."""
    await add_actors(ami, {"slow": -1, "next": 7})
    async with harness(switch, "cn", reroute=True) as h:
        since = len(ami.events)
        await call(ami, "7201=Local/slow@test-agent|7202=Local/next@test-agent")
        await wait_hangups(ami, since, 1, timeout=45)
        got = [(e["Agent"], e["Level"]) for e in alarms(ami, since)]
        assert got == [("7201", "warning")]
        ends = ami.find(lambda e: e.event == "DialEnd" and "slow@test-agent" in e.get("DestChannel", ""), since)
        begins = dial_begins(ami, since)
        assert ends and ends[0]["DialStatus"] == "NOANSWER"
        assert abs(ts(ends[0]) - ts(begins["Local/slow@test-agent"]) - 15.0) < TOL
        assert abs(ts(begins["Local/next@test-agent"]) - ts(ends[0])) < TOL
        figs = h.monitor.figures()
        assert figs["7201"]["not_answered"] == 1 and figs["7202"]["within_three"] == 1
        assert not ami.find(lambda e: e.event == "AGIExecStart" and "ring_apology" in e.get("Command", ""), since)


async def test_real_sip_agent_phone_rings_16_s(switch, ami, unused_udp_port):
    """PJSIP agent 1001 is a SIPp phone that sends 180 and answers after 16 s: ring 4 in
    cn, so one warning names agent 1001 (its device is mapped from the config)."""
    port = unused_udp_port
    proc = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "uas_ring.xml"), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
         "-set", "ring_ms", "16000", "-m", "1", "-nostdin", "-timeout", "60s",
         "-trace_err", "-error_file", "/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await ami.add_dialplan("test-caller", "y", ["Answer()", "Wait(26)", "Hangup()"])
        async with harness(switch, "cn") as h:
            since = len(ami.events)
            await ami.originate("Local/y@test-caller", "ivr-agents", "s", variables={
                "IVR_AGENTS": f"1001=PJSIP/1001/sip:1001@127.0.0.1:{port}", "IVR_FALLBACK_QUEUE": "no-such-queue",
                "IVR_LANGUAGE": "en-US"}, timeout_ms=5000)
            answered = await ami.wait_for(lambda e: e.event == "Newstate"
                                          and e.get("Channel", "").startswith("PJSIP/1001")
                                          and e.get("ChannelStateDesc") == "Up", since=since, timeout=30)
            ringing = ami.find(lambda e: e.event == "Newstate" and e.get("Channel", "").startswith("PJSIP/1001")
                               and e.get("ChannelStateDesc") == "Ringing", since)
            assert abs(ts(answered[0]) - ts(ringing[0]) - 16.0) < TOL
            await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel", "").startswith("PJSIP/1001"),
                               since=since, timeout=20)
            got = [(e["Agent"], e["Level"], e["Rings"]) for e in alarms(ami, since)]
            assert got == [("1001", "warning", "3")]
            assert h.monitor.figures()["1001"]["late"] == 1
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_asterisk_restart_while_ringing_reconnects_without_double_counting(switch):
    """Asterisk goes down while agent 7301 rings (ring 1) and comes back: the monitor
    reconnects and resyncs, closes the vanished leg once (no alarm: it never reached the
    4th ring), and a call after the restart gets exactly one warning."""
    if switch.embedded is None:
        pytest.skip("restarting Asterisk needs the embedded switch")
    ami = await AmiRecorder(switch.ami_host, switch.ami_port, switch.username, switch.secret).connect()
    async with harness(switch, "cn") as h:
        try:
            await add_actors(ami, {"late7": 32.5})
            since = len(ami.events)
            await call(ami, "7301=Local/late7@test-agent")
            await ami.wait_for(lambda e: e.event == "DialBegin" and "late7@" in e.get("DestChannel", ""),
                               since=since, timeout=10)
            await until(lambda: h.monitor.figures().get("7301", {}).get("offered") == 1, 5)
        finally:
            ami.close()
        await asyncio.to_thread(switch.embedded.down)
        await asyncio.to_thread(switch.embedded.up)
        await until(lambda: h.conn.connects == 2 and h.tracker.resyncs == 2, 20)
        assert h.monitor.figures()["7301"] == {"offered": 1, "within_three": 0, "late": 0, "not_answered": 1,
                                               "apologised": 0}
        assert not h.monitor.legs and len(h.timers) == 0 and h.monitor.alarms == []
        ami = await AmiRecorder(switch.ami_host, switch.ami_port, switch.username, switch.secret).connect()
        try:
            await add_actors(ami, {"r4": 17.5})
            since = len(ami.events)
            await call(ami, "7302=Local/r4@test-agent")
            await wait_hangups(ami, since, 1, timeout=40)
            got = [(e["Agent"], e["Level"]) for e in alarms(ami, since)]
            assert got == [("7302", "warning")]
            assert [(n.agent, n.level) for n in h.monitor.alarms] == [("7302", "warning")]
            assert h.monitor.figures()["7302"]["late"] == 1
        finally:
            ami.close()
