"""RingMonitor over a real AmiConnection to the in-memory AMI server, on a fake clock:
alarms exactly once, answer decisions, reroute, and reconnects with resync."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection, Backoff
from ivr.ami.testing import FakeAmi
from ivr.events import EventBus
from ivr.metrics import Metrics
from ivr.rings import RingMonitor, RingSettings
from ivr.rules.rings import Cadence
from ivr.timers import TimerService
from tests.fakes import Clock, until

CALLER = {"Uniqueid": "100.1", "Linkedid": "100.1", "Channel": "Local/x@c-00000001;1", "Context": "ivr-agents"}
LEG = {"DestUniqueid": "100.2", "DestLinkedid": "100.1", "DestChannel": "PJSIP/1001-00000002"}


class Rig:
    def __init__(self, fake: FakeAmi, reroute: bool = False, settings: RingSettings | None = None) -> None:
        self.fake = fake
        self.clock = Clock()
        self.conn = AmiConnection("127.0.0.1", fake.port, "ivr", "secret", ping_interval=60,
                                  backoff=Backoff(initial=0.01, maximum=0.02, jitter=0))
        self.tracker = ChannelTracker()
        self.tracker.attach(self.conn)
        self.timers = TimerService(clock=self.clock)
        self.bus = EventBus()
        self.metrics = Metrics()
        settings = settings or RingSettings(Cadence.for_zone("cn"), reroute=reroute, agents={"PJSIP/1001": "1001"})
        self.monitor = RingMonitor(self.conn, self.tracker, self.timers, settings, bus=self.bus,
                                   metrics=self.metrics, wall=self.clock)
        self.monitor.attach()

    async def start(self) -> Rig:
        await self.conn.start()
        await self.conn.wait_connected(2)
        await self.sync()
        return self

    async def sync(self) -> None:
        """A round trip: every event sent before it has been handled."""
        await self.conn.action({"Action": "Ping"}, 2)

    async def event(self, **fields: str) -> None:
        self.fake.event({"Timestamp": f"{self.clock.t:.6f}", **fields})
        await self.sync()

    async def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        await self.timers.settle()

    async def ring(self) -> None:
        await self.event(Event="DialBegin", **CALLER, **LEG, DestChannelState="0")
        await self.event(Event="Newstate", Uniqueid=LEG["DestUniqueid"], Linkedid="100.1",
                         Channel=LEG["DestChannel"], ChannelState="5", ChannelStateDesc="Ringing")

    async def answer(self) -> None:
        await self.event(Event="Newstate", Uniqueid=LEG["DestUniqueid"], Linkedid="100.1",
                         Channel=LEG["DestChannel"], ChannelState="6", ChannelStateDesc="Up")

    async def reconnect(self) -> None:
        """Drop the AMI connection; return once logged in again and resynced."""
        logins, resyncs = self.fake.logins, self.tracker.resyncs
        self.fake.drop()
        await self.fake.wait_for(lambda: self.fake.logins == logins + 1, 2)
        await self.conn.wait_connected(2)
        for _ in range(100):  # round trips until the resync has been applied (bounded)
            await self.sync()
            if self.tracker.resyncs > resyncs:
                return
        raise AssertionError("no resync after the reconnect")

    def levels(self) -> list[tuple[str, int]]:
        return [(n.level, n.rings) for n in self.monitor.alarms]

    async def close(self) -> None:
        await self.monitor.close()
        await self.timers.close()
        await self.conn.close()


@contextlib.asynccontextmanager
async def started(**kw: Any) -> AsyncIterator[Rig]:
    """A started Rig on its own fake AMI (``rig.fake``), closed afterwards."""
    async with FakeAmi() as fake:
        r = await Rig(fake, **kw).start()
        try:
            yield r
        finally:
            await r.close()


@pytest.fixture
async def rig():
    async with started() as r:
        yield r


async def test_warning_at_three_rings_critical_at_six_each_once_then_apology(rig):
    await rig.ring()
    await rig.advance(14.9)
    assert rig.levels() == []
    await rig.advance(0.1)  # 15 s: the 4th ring starts
    assert rig.levels() == [("warning", 3)]
    await rig.advance(15.0)
    await rig.advance(5.0)
    assert rig.levels() == [("warning", 3), ("critical", 6)]
    await rig.advance(2.0)  # 37 s: ring 8
    await rig.answer()
    decision = rig.monitor.answer_decision("100.1", LEG["DestChannel"])
    assert (decision.agent, decision.rings, decision.late) == ("1001", 8, True)
    assert rig.monitor.figures()["1001"] == {"offered": 1, "within_three": 0, "late": 1, "not_answered": 0,
                                             "apologised": 1}
    assert rig.metrics.value("ivr_ring_alarms_total", {"agent": "1001", "level": "warning"}) == 1
    assert rig.metrics.value("ivr_rings_to_answer_sum", {"agent": "1001"}) == 8


async def test_answer_within_three_rings_raises_nothing(rig):
    await rig.ring()
    await rig.advance(12.0)
    await rig.answer()
    await rig.advance(60.0)
    assert rig.levels() == []
    assert rig.monitor.figures()["1001"]["within_three"] == 1
    assert not rig.monitor.answer_decision("100.1", LEG["DestChannel"]).late


async def test_dials_to_non_agents_are_not_watched(rig):
    await rig.event(Event="DialBegin", Uniqueid="200.1", Linkedid="200.1", Context="somewhere",
                    DestUniqueid="200.2", DestChannel="PJSIP/9999-00000009")
    assert rig.monitor.legs == {}


async def test_reconnect_mid_ring_never_repeats_an_alarm(rig):
    await rig.ring()
    await rig.advance(16.0)
    assert rig.levels() == [("warning", 3)]
    rig.fake.channels = [{"Uniqueid": LEG["DestUniqueid"], "Linkedid": "100.1", "Channel": LEG["DestChannel"],
                          "ChannelState": "5", "ChannelStateDesc": "Ringing"},
                         {**CALLER, "ChannelState": "6", "ChannelStateDesc": "Up"}]
    await rig.reconnect()
    assert rig.tracker.resyncs == 2
    await rig.event(Event="DialBegin", **CALLER, **LEG, DestChannelState="5")  # a repeat changes nothing
    await rig.advance(15.0)
    assert rig.levels() == [("warning", 3), ("critical", 6)]
    assert rig.monitor.figures()["1001"]["offered"] == 1


async def test_leg_answered_during_outage_is_closed_as_answered_at_resync(rig):
    await rig.ring()
    await rig.advance(5.0)
    rig.fake.channels = [{"Uniqueid": LEG["DestUniqueid"], "Linkedid": "100.1", "Channel": LEG["DestChannel"],
                          "ChannelState": "6", "ChannelStateDesc": "Up", "Timestamp": f"{rig.clock.t:.6f}"}]
    await rig.reconnect()
    await rig.advance(60.0)
    assert rig.levels() == []
    assert rig.monitor.figures()["1001"]["within_three"] == 1


async def test_leg_vanished_during_outage_is_not_answered_once(rig):
    await rig.ring()
    await rig.advance(5.0)
    rig.fake.channels = []
    await rig.reconnect()
    await rig.advance(60.0)
    assert rig.levels() == []
    assert rig.monitor.figures()["1001"]["not_answered"] == 1
    assert not rig.monitor.legs and len(rig.timers) == 0


async def test_reroute_hangs_up_the_ringing_leg_with_cause_no_answer():
    async with started(reroute=True) as rig:
        await rig.ring()
        await rig.advance(15.0)
        await rig.fake.wait_for(lambda: rig.fake.count("Hangup") == 1, 2)
        hangup = next(a for a in rig.fake.actions if a["Action"] == "Hangup")
        # by Uniqueid, once the switch confirmed the leg is this call's (AMI Status)
        assert (hangup["Channel"], hangup["Cause"]) == (LEG["DestUniqueid"], "19")
        assert rig.fake.count("Status") >= 1
        await rig.event(Event="DialEnd", **CALLER, **LEG, DialStatus="NOANSWER")
        assert rig.monitor.figures()["1001"]["not_answered"] == 1


async def test_reroute_never_hangs_up_a_channel_of_another_call():
    """Issue 13 (2d): the events named a leg whose Uniqueid the switch gives to a channel
    of another call (forged, or stale): at the reroute nothing is hung up."""
    async with started(reroute=True) as rig:
        rig.fake.live.add(LEG["DestUniqueid"], "PJSIP/1003-00000009", "999.1")  # the switch's truth
        with capture_logs() as logs:
            await rig.ring()
            await rig.advance(15.0)
            await rig.fake.wait_for(lambda: rig.fake.count("Status") >= 1, 2)
            await until(lambda: any(e["event"] == "ami.hangup_refused" for e in logs), 2,
                        "the refusal after the Status reply")
        assert rig.fake.count("Hangup") == 0
        await rig.event(Event="DialEnd", **CALLER, **LEG, DialStatus="NOANSWER")


async def test_a_reroute_that_fails_unexpectedly_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-route's background task is in the monitor's TaskSet: an error it did not
    expect is logged (ring.task_failed), never lost with the task."""
    async def broken(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("ivr.rings.reroute.hang_up_confirmed", broken)
    async with started(reroute=True) as rig:
        with capture_logs() as logs:
            await rig.ring()
            await rig.advance(15.0)
            await until(lambda: any(e["event"] == "ring.task_failed" for e in logs), 2,
                        "the failed re-route task logged")
        assert "RuntimeError('boom')" in next(e["error"] for e in logs if e["event"] == "ring.task_failed")


async def test_apology_counts_rings_of_earlier_agents_on_the_same_call(rig):
    await rig.ring()
    await rig.advance(20.0)
    await rig.event(Event="DialEnd", **CALLER, **LEG, DialStatus="NOANSWER")
    second = {"DestUniqueid": "100.3", "DestLinkedid": "100.1", "DestChannel": "PJSIP/1001-00000003"}
    await rig.event(Event="DialBegin", **CALLER, **second, DestChannelState="5")
    await rig.advance(12.0)  # 3 rings for this agent, 32 s (ring 7) for the caller
    await rig.event(Event="Newstate", Uniqueid="100.3", Linkedid="100.1", Channel=second["DestChannel"],
                    ChannelState="6")
    decision = rig.monitor.answer_decision("100.1", second["DestChannel"])
    assert (decision.rings, decision.late) == (7, True)
    # one decision: the apology the caller hears is the one the figures count
    assert rig.monitor.figures()["1001"]["apologised"] == 1


async def test_agent_legs_for_the_key_checks() -> None:
    """Issue 13: the hold and transfer keys are honoured only from agent legs. The monitor
    knows a leg dialled from ivr-agents (kept while it lasts), a configured agent's
    device, and never the caller's channel."""
    settings = RingSettings(Cadence.for_zone("cn"), agents={"PJSIP/1001": "1001"})
    async with started(settings=settings) as r:
        hunt = {"DestUniqueid": "100.5", "DestLinkedid": "100.1", "DestChannel": "Local/1009@desk-00000005;1"}
        await r.event(Event="DialBegin", **CALLER, **hunt, DestChannelState="0")
        await r.event(Event="Newstate", Uniqueid="100.5", Linkedid="100.1", Channel=hunt["DestChannel"],
                      ChannelState="6", ChannelStateDesc="Up")  # answered: still an agent leg
        assert r.monitor.is_agent_leg("100.5", hunt["DestChannel"])
        assert r.monitor.is_agent_leg("100.5")  # by Uniqueid alone
        assert r.monitor.is_agent_leg("200.9", "PJSIP/1001-0000000a")  # a configured device
        assert not r.monitor.is_agent_leg(CALLER["Uniqueid"], CALLER["Channel"])
        assert not r.monitor.is_agent_leg("100.7", "PJSIP/anonymous-00000007")
        assert not r.monitor.is_agent_leg("", "")
        await r.event(Event="Hangup", Uniqueid="100.5", Linkedid="100.1", Channel=hunt["DestChannel"])
        assert not r.monitor.is_agent_leg("100.5", hunt["DestChannel"])  # gone
        # a DialBegin from anywhere else (an originated caller, say) is not an agent leg
        other = {"DestUniqueid": "100.8", "DestLinkedid": "100.8", "DestChannel": "Local/c@callers-00000008;1"}
        await r.event(Event="DialBegin", **other, DestChannelState="0")
        assert not r.monitor.is_agent_leg("100.8", other["DestChannel"])
