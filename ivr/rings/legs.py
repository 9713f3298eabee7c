"""Agent legs (:class:`AgentLegs`, a base of :class:`~ivr.rings.monitor.RingMonitor`):
which dialled channel rings an agent, and which agent. A leg opens on ``DialBegin`` from
the ``ivr-agents`` context (announced just before by ``UserEvent IvrAgentDial`` with the
agent's number), on a queue's ``AgentCalled``, or on any dial of a configured agent's
device; :meth:`AgentLegs.is_agent_leg` is what the agent keys ask. A :class:`Leg` is one
such channel and its :class:`~ivr.rules.rings.RingWatch`; :class:`AgentFigures`, what is
counted per agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.ami.channels import STATE_RINGING, ChannelTracker, device_key, device_of
from ivr.rings.settings import RingSettings
from ivr.rules.rings import RingWatch

AGENTS_CONTEXT = "ivr-agents"


@dataclass
class AgentFigures:
    offered: int = 0
    within_three: int = 0  # answered before the warning threshold
    late: int = 0  # answered, but after it
    not_answered: int = 0
    apologised: int = 0  # answered after more than the critical threshold

    @property
    def answered(self) -> int:
        return self.within_three + self.late

    def as_dict(self) -> dict[str, int]:
        return {"offered": self.offered, "within_three": self.within_three, "late": self.late,
                "not_answered": self.not_answered, "apologised": self.apologised}


@dataclass
class Leg:
    uniqueid: str
    channel: str
    linkedid: str
    agent: str
    watch: RingWatch
    caller: str = ""  # the caller's channel (Dial()/Queue() side), for a Redirect
    rerouted: bool = False
    rang_at: float = 0.0  # the switch's time ringing began (wall clock, from its AMI timestamp)

    @property
    def key(self) -> tuple[str, str]:
        return ("ring", self.uniqueid)

    def at(self, elapsed: float) -> float | None:
        """The switch's time ``elapsed`` s after ringing began (None: it never rang)."""
        return self.rang_at + elapsed if self.rang_at else None


class AgentLegs:
    # Provided by RingMonitor.
    settings: RingSettings
    tracker: ChannelTracker
    legs: dict[str, Leg]
    _announced: dict[str, str]  # caller uniqueid -> agent number (IvrAgentDial)
    _at: Callable[[Any], float]
    _ringing: Callable[[Leg, float], None]
    _fig: Callable[[str], AgentFigures]

    # -- agent legs -------------------------------------------------------------------
    def is_agent_leg(self, uniqueid: str, channel: str = "") -> bool:
        """An :data:`AgentLegCheck`: a channel this monitor saw dialled as an agent (the
        hunt's ``DialBegin`` from ivr-agents, ``IvrAgentDial``, a queue's ``AgentCalled``,
        any dial of a configured agent's device; kept until its hang-up), or whose device
        is a configured agent's dial string (a call in progress when the controller
        started). A caller's channel is neither."""
        if uniqueid and uniqueid in self.legs:
            return True
        if not channel and uniqueid:
            ch = self.tracker.get(uniqueid)
            channel = ch.name if ch is not None else ""
        return bool(channel) and device_key(channel) in self.settings.agents

    # -- events ---------------------------------------------------------------------
    def _user_event(self, event: Any) -> None:
        # Sent by ivr-agents.conf on the caller's channel: its Uniqueid is the caller's.
        uid = event.get("Uniqueid")
        if event.get("UserEvent") == "IvrAgentDial" and isinstance(uid, str) and uid:
            self._announced[uid] = str(event.get("Agent", ""))

    def _agent_for(self, device: str, caller_uid: str, context: str) -> str | None:
        announced = self._announced.pop(caller_uid, None) if caller_uid else None
        if announced:
            return announced
        if device_key(device) in self.settings.agents:
            return self.settings.agents[device_key(device)]
        if context == AGENTS_CONTEXT:
            return device
        return None

    def _dial_begin(self, event: Any) -> None:
        uid = event.get("DestUniqueid", "")
        if not uid or uid in self.legs:
            return
        name = event.get("DestChannel", "")
        agent = self._agent_for(device_of(name), event.get("Uniqueid", ""), event.get("Context", ""))
        if agent is None:
            return
        self._open(uid, name, event.get("DestLinkedid") or event.get("Linkedid") or uid, agent,
                   event.get("Channel", ""))
        ch = self.tracker.get(uid)  # Newstate Ringing may have come first
        if event.get("DestChannelState") == str(STATE_RINGING) or (ch is not None and ch.state == STATE_RINGING):
            self._ringing(self.legs[uid], self._at(event))

    def _agent_called(self, event: Any) -> None:
        """A queue member is called: its agent is the [[agents]] entry whose dial string
        is the member interface, else the member's name. May come before or after the
        leg's DialBegin (app_queue publishes both)."""
        uid = event.get("DestUniqueid", "")
        if not uid:
            return
        iface = event.get("Interface", "")
        agent = self.settings.agents.get(device_key(iface)) or event.get("MemberName") or iface
        leg = self.legs.get(uid)
        if leg is None:
            self._open(uid, event.get("DestChannel", ""), event.get("DestLinkedid") or event.get("Linkedid") or uid,
                       agent, event.get("Channel", ""))
            ch = self.tracker.get(uid)
            if ch is not None and ch.state == STATE_RINGING:
                self._ringing(self.legs[uid], self._at(event))
        elif leg.agent != agent:
            if leg.watch.state != "idle":  # counted as offered under the device name already
                self._fig(leg.agent).offered -= 1
                self._fig(agent).offered += 1
            leg.agent = agent
        self.legs[uid].caller = self.legs[uid].caller or event.get("Channel", "")

    def _open(self, uid: str, channel: str, linkedid: str, agent: str, caller: str = "") -> None:
        watch = RingWatch(self.settings.cadence, self.settings.warn_rings, self.settings.critical_rings,
                          reroute=self.settings.reroute, reroute_target=self.settings.reroute_target)
        self.legs[uid] = Leg(uid, channel, linkedid, agent, watch, caller)
