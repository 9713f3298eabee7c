"""R1 at the switch: follow every ringing agent leg over AMI, raise ring alarms, re-route,
and decide at answer time what the caller hears (apology, agent number).
:func:`build_rings` plugs the monitor and its FastAGI route into the app."""

from __future__ import annotations

from ivr.alarms.sinks import sinks_from_config
from ivr.feature import Feature, Runtime
from ivr.rings.answer import AgentAnsweredFlow
from ivr.rings.monitor import AgentFigures, AnswerDecision, RingMonitor
from ivr.rings.settings import RingSettings
from ivr.sections import Config

__all__ = ["AgentFigures", "AnswerDecision", "RingMonitor", "RingSettings", "build_rings"]


def build_rings(rt: Runtime, config: Config) -> Feature[RingMonitor]:
    """The ring monitor on the app's runtime, with the alarm sinks ``[alarms]`` asks for,
    and the ``agent-answered`` FastAGI route (apology and agent number at answer)."""
    monitor = RingMonitor(rt.ami, rt.channels, rt.timers,
                          RingSettings.from_config(config.rings, config.switch, config.agents),
                          bus=rt.bus, sinks=sinks_from_config(config.alarms, rt.ami, rt.once, rt.bus),
                          metrics=rt.metrics)
    monitor.attach()
    return Feature("rings", monitor,
                   agi_routes={"agent-answered": AgentAnsweredFlow(monitor, config.switch, config.prompts)},
                   on_close=monitor.close)
