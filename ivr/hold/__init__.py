"""Rule R4 at the switch: a held caller hears music, a reminder every 30 s, the choices
at one minute (keep waiting, leave a message, call-back) and a thank-you on resume.

``service.HoldService`` (AMI + FastAGI), ``store.HoldStore`` (the directory Asterisk
records messages into; the messages and call-backs themselves are the call records', fed
by the ``message.recorded`` and ``callback.requested`` events),
``metrics.HoldMetrics``, ``http.hold_routes`` (the HTTP API); :func:`build_hold` plugs
them into the app as one :class:`~ivr.feature.Feature`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ivr.ami.channels import AgentLegCheck
from ivr.feature import Feature, Runtime
from ivr.hold.http import HOLD_OPENAPI, hold_routes
from ivr.hold.metrics import HoldMetrics
from ivr.hold.service import HoldError, HoldService, HoldSettings, NoSuchCall
from ivr.hold.store import HoldStore
from ivr.sections import Config

__all__ = ["HoldError", "HoldService", "HoldSettings", "HoldStore", "NoSuchCall", "build_hold"]


def build_hold(rt: Runtime, config: Config, *,
               switch_path: Callable[[Path], str] | None = None,
               agent_leg: AgentLegCheck | None = None) -> Feature[HoldService]:
    """The hold feature on the app's runtime: AMI events, the held caller's FastAGI route,
    the HTTP routes and the metrics. ``switch_path`` maps a path of this host to the
    switch's view of it (the app knows whether Asterisk runs in a chroot); ``agent_leg``
    tells whether a channel is an agent leg (the ring monitor's view; default: configured
    agents' devices only), so the hold key is honoured from agents alone."""
    service = HoldService(
        rt.ami, rt.channels, rt.timers,
        HoldSettings.from_config(config.hold, config.switch, config.prompts, config.agents,
                                 switch_path=switch_path, callbacks=config.callbacks),
        bus=rt.bus, metrics=HoldMetrics(rt.metrics.registry), agent_leg=agent_leg, acting=rt.acting,
        once=rt.once, paired=bool(config.cluster.node))
    service.attach()
    return Feature("hold", service, agi_routes=service.agi_routes, http_routes=hold_routes(service),
                   openapi=HOLD_OPENAPI, on_close=service.close)
