"""The ring monitor: one :class:`~ivr.rules.rings.RingWatch` per ringing agent leg.

An *agent leg* is a dialled channel that rings an agent: ``DialBegin`` from the
``ivr-agents`` context (announced just before by ``UserEvent IvrAgentDial`` with the
agent's number), from ``Queue()`` (``AgentCalled``), or from anything else (Originate)
whose device is a configured agent. Its watch starts when the leg rings (``Newstate``
Ringing) and is driven by the :class:`~ivr.timers.TimerService`; the leg ends on
answer (``Newstate`` Up / ``DialEnd`` ANSWER), ``DialEnd`` without answer, or hang-up.

Times come from Asterisk's own event timestamps, mapped onto the timer clock, so a late
event (or a resync after an outage) does not shift the count. A leg's state survives an
AMI reconnect: after the channel resync a leg whose channel vanished is closed as not
answered, one that went Up meanwhile is closed as answered, and a watch that already
raised an alarm never raises it again.

Here: ringing, answer and end of a leg, the alarms, the figures, the answer-time decision.
Which channels are agent legs: :mod:`ivr.rings.legs`; moving a call on: :mod:`ivr.rings.reroute`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.alarms.sinks import AlarmSink, RingAlarmNotice
from ivr.ami.channels import (
    STATE_RINGING,
    STATE_UP,
    Channel,
    ChannelTracker,
    device_key,
    device_of,
    event_time,
)
from ivr.ami.connection import AmiConnection
from ivr.events import EventBus
from ivr.metrics import Metrics
from ivr.rings.legs import AgentFigures, AgentLegs, Leg
from ivr.rings.reroute import Rerouting
from ivr.rings.settings import RingSettings
from ivr.rules.rings import Answered, NotAnswered, Reroute, RingAlarm, answer_verdict
from ivr.tasks import TaskSet
from ivr.timers import TimerService

__all__ = ["AgentFigures", "AnswerDecision", "Leg", "RingMonitor", "RingSettings", "device_key"]

log = structlog.get_logger("ivr.rings")


@dataclass(frozen=True)
class AnswerDecision:
    """What the caller hears when ``agent`` answered: the apology when ``late``."""

    agent: str
    rings: int  # rings the caller heard on this call (across re-routes)
    late: bool


class RingMonitor(AgentLegs, Rerouting):
    def __init__(
        self,
        conn: AmiConnection,
        tracker: ChannelTracker,
        timers: TimerService,
        settings: RingSettings,
        *,
        bus: EventBus | None = None,
        sinks: Iterable[AlarmSink] = (),
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.conn, self.tracker, self.timers, self.settings = conn, tracker, timers, settings
        self.bus, self.sinks, self.metrics = bus, list(sinks), metrics
        self.wall = wall
        self.legs: dict[str, Leg] = {}
        self.call_first_ring: dict[str, float] = {}  # linkedid -> timer-clock time
        self._announced: dict[str, str] = {}  # caller uniqueid -> agent number (IvrAgentDial)
        self._redirected: set[str] = set()  # linkedids already moved to the reroute target
        self.figures_by_agent: dict[str, AgentFigures] = {}
        self.alarms: list[RingAlarmNotice] = []
        self._tasks = TaskSet("ring.task_failed")  # re-routes under way

    # -- wiring ---------------------------------------------------------------------
    def attach(self) -> None:
        """Subscribe to the connection (after ``tracker.attach``: resync runs first)."""
        for name, handler in (("DialBegin", self._dial_begin), ("AgentCalled", self._agent_called),
                              ("Newstate", self._newstate), ("DialEnd", self._dial_end),
                              ("UserEvent", self._user_event)):
            self.conn.subscribe(name, handler)
        self.tracker.on_gone(self._gone)
        self.conn.on_connected(self._reconcile)
        if self.settings.globals:
            self.conn.on_connected(self._publish_globals)

    async def _publish_globals(self) -> None:
        """Tell ivr-agents.conf whom to ring (IVR_AGENTS), for how long (IVR_AGENT_TIMEOUT)
        and where to re-route (IVR_REROUTE_TARGET): globals, set at every (re)connect."""
        for name, value in self.settings.globals.items():
            await self.conn.action({"Action": "Setvar", "Variable": name, "Value": value}, 5.0)

    def _at(self, event: Any) -> float:
        """The event's Asterisk timestamp on the timer clock."""
        return self._timer_clock(event_time(event))

    def _timer_clock(self, switch_time: float) -> float:
        """An Asterisk timestamp (epoch seconds) on the timer clock: that long before now
        (never in the future)."""
        return self.timers.now() - max(0.0, self.wall() - switch_time)

    # -- figures for the dashboard ---------------------------------------------------
    def figures(self) -> dict[str, dict[str, int]]:
        """Per agent: offered, within_three, late, not_answered, apologised."""
        return {agent: f.as_dict() for agent, f in sorted(self.figures_by_agent.items())}

    def _fig(self, agent: str) -> AgentFigures:
        return self.figures_by_agent.setdefault(agent, AgentFigures())

    def _ringing(self, leg: Leg, at: float) -> None:
        if leg.watch.state != "idle":
            return
        leg.watch.start(at, call_started=self.call_first_ring.setdefault(leg.linkedid, at))
        leg.rang_at = self.wall() - (self.timers.now() - at)
        self._fig(leg.agent).offered += 1
        log.info("ring.started", agent=leg.agent, channel=leg.channel, uniqueid=leg.uniqueid, linkedid=leg.linkedid)
        self._emit("ring.started", leg, fact="ring.started", at=leg.rang_at)
        self.timers.add(leg.key, leg.watch, functools.partial(self._apply, leg))

    def _newstate(self, event: Any) -> None:
        leg = self.legs.get(event.get("Uniqueid", ""))
        if leg is None:
            return
        state = int(event.get("ChannelState") or 0)
        if state == STATE_RINGING:
            self._ringing(leg, self._at(event))
        elif state == STATE_UP:
            self._answer(leg, self._at(event))

    def _dial_end(self, event: Any) -> None:
        leg = self.legs.get(event.get("DestUniqueid", ""))
        if leg is None:
            return
        status = event.get("DialStatus", "")
        if status == "ANSWER":
            self._answer(leg, self._at(event))
        else:
            self._stop(leg, self._at(event), "reroute" if leg.rerouted else status.lower() or "noanswer")

    def _gone(self, ch: Channel, reason: str) -> None:
        leg = self.legs.pop(ch.uniqueid, None)
        if leg is not None:
            self._stop(leg, self.timers.now(), reason)
        self._announced.pop(ch.uniqueid, None)
        linked = ch.linkedid
        if linked not in self.call_first_ring and linked not in self._redirected:
            return  # nothing to forget for this call: no scan of its channels and legs
        if not self.tracker.call(linked) and not any(lg.linkedid == linked for lg in self.legs.values()):
            self.call_first_ring.pop(linked, None)
            self._redirected.discard(linked)

    async def _reconcile(self) -> None:
        """After a reconnect (the tracker has resynced): legs that were answered while
        events were lost are closed as answered at the time the switch reports."""
        for leg in list(self.legs.values()):
            ch = self.tracker.get(leg.uniqueid)
            if ch is not None and ch.state == STATE_UP and leg.watch.state in ("idle", "ringing"):
                at = self._timer_clock(ch.state_changed)
                if leg.watch.state == "idle":
                    self._ringing(leg, at)
                self._answer(leg, at)

    # -- state changes ----------------------------------------------------------------
    def _answer(self, leg: Leg, at: float) -> None:
        if leg.watch.state == "idle":  # answered without ringing (auto-answer)
            self._ringing(leg, at)
        self._apply(leg, leg.watch.answer(at))
        self.timers.remove(leg.key)

    def _stop(self, leg: Leg, at: float, reason: str) -> None:
        self._apply(leg, leg.watch.stop(at, reason))
        self.timers.remove(leg.key)

    def _apply(self, leg: Leg, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, RingAlarm):
                self._alarm(leg, action)
            elif isinstance(action, Reroute):
                self._reroute(leg, action.target)
            elif isinstance(action, Answered):
                fig = self._fig(leg.agent)
                if action.within_three:
                    fig.within_three += 1
                else:
                    fig.late += 1
                fig.apologised += int(action.late)
                if self.metrics is not None:
                    self.metrics.rings_to_answer.labels(leg.agent).observe(action.rings)
                    self.metrics.ring_legs.labels(leg.agent, "within_three" if action.within_three else "late").inc()
                log.info("ring.answered", agent=leg.agent, rings=action.rings, within_three=action.within_three,
                         late=action.late, elapsed=round(action.elapsed, 3), uniqueid=leg.uniqueid)
                self._emit("ring.answered", leg, fact="ring.end", at=leg.at(action.elapsed),
                           rings=action.rings, within_three=action.within_three, late=action.late,
                           elapsed=action.elapsed)
            elif isinstance(action, NotAnswered):
                self._fig(leg.agent).not_answered += 1
                if self.metrics is not None:
                    self.metrics.ring_legs.labels(leg.agent, "not_answered").inc()
                log.info("ring.noanswer", agent=leg.agent, rings=action.rings, reason=action.reason,
                         uniqueid=leg.uniqueid)
                self._emit("ring.noanswer", leg, fact="ring.end", at=leg.at(action.elapsed),
                           rings=action.rings, reason=action.reason, elapsed=action.elapsed)

    def _alarm(self, leg: Leg, alarm: RingAlarm) -> None:
        notice = RingAlarmNotice(leg.agent, leg.channel, leg.uniqueid, leg.linkedid, alarm.rings, alarm.level,
                                 at=self.wall())
        self.alarms.append(notice)
        if self.metrics is not None:
            self.metrics.ring_alarms.labels(leg.agent, alarm.level).inc()
        # Recorded by the node that sends it (alarms.sinks.RecordSink, under its once key).
        for sink in self.sinks:
            try:
                sink.emit(notice)
            except Exception:
                log.exception("ring.alarm_sink_failed", sink=type(sink).__name__)


    async def close(self) -> None:
        await self._tasks.close()
        for sink in self.sinks:
            await sink.close()

    def _emit(self, kind: str, leg: Leg, fact: str = "", at: float | None = None, *, decided: bool = False,
              **data: Any) -> None:
        """``fact``: a switch fact of the leg (its start, its end: one each), recorded by
        every node under the same id (:meth:`EventBus.fact`); else this node's event
        (``decided``: under an id made of the leg, once whoever leads writes it)."""
        if self.bus is None:
            return
        data = {"agent": leg.agent, "channel": leg.channel, "uniqueid": leg.uniqueid, **data}
        if fact:
            self.bus.fact(kind, leg.linkedid, (leg.uniqueid, fact), at=at, **data)
        elif decided:
            self.bus.decided(kind, leg.linkedid, (leg.uniqueid, kind), at=at, **data)
        else:
            self.bus.emit(kind, leg.linkedid, **data)

    # -- answer-time decision (the agent-answered FastAGI route) ------------------------
    def answer_decision(self, linkedid: str, peer_channel: str, member: str = "") -> AnswerDecision:
        """Rings the caller heard until ``peer_channel`` answered, and whether the caller
        must hear the apology: the answered leg's :class:`RingWatch` decided both
        (call-level: rings before a re-route count too). Queue() gives no peer channel,
        only the ``member`` interface that answered (MEMBERINTERFACE): the call's leg on
        that device is the one."""
        leg = next((lg for lg in self.legs.values() if peer_channel and lg.channel == peer_channel), None)
        if leg is None and member:
            legs = [lg for lg in self.legs.values()
                    if lg.linkedid == linkedid and device_key(lg.channel) == device_key(member)]
            leg = max(legs, key=lambda lg: lg.watch.answered is not None, default=None)
        now = self.timers.now()
        if leg is not None and leg.watch.state in ("idle", "ringing"):
            self._answer(leg, now)  # the AGI request overtook the Newstate Up event
        agent = leg.agent if leg is not None else device_of(peer_channel or member)
        answered = leg.watch.answered if leg is not None else None
        if answered is not None:
            return AnswerDecision(agent, answered.call_rings, answered.late)
        # No watched leg answered (a dial the monitor does not follow): the same rule,
        # counted from the call's first ring if any agent rang.
        rings, late = answer_verdict(self.settings.cadence, self.settings.critical_rings,
                                     self.call_first_ring.get(linkedid, now), now)
        return AnswerDecision(agent, rings, late)
