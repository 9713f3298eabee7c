"""R1 at the switch: follow every ringing agent leg over AMI, raise ring alarms, re-route,
and decide at answer time what the caller hears (apology, agent number)."""

from ivr.rings.monitor import AgentFigures, AnswerDecision, RingMonitor, RingSettings

__all__ = ["AgentFigures", "AnswerDecision", "RingMonitor", "RingSettings", "build_ring_monitor"]


def build_ring_monitor(conn, tracker, timers, config, *, bus=None, metrics=None):  # type: ignore[no-untyped-def]
    """The controller's ring monitor with the alarm sinks ``config.alarms`` asks for."""
    from ivr.alarms.sinks import sinks_from_config

    monitor = RingMonitor(conn, tracker, timers, RingSettings.from_config(config), bus=bus,
                          sinks=sinks_from_config(getattr(config, "alarms", None), conn), metrics=metrics)
    monitor.attach()
    return monitor
