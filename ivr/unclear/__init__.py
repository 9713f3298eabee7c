"""Rule R3 at the switch, a line too faint or too noisy: the agent's key or the API takes the
caller aside, asks them to speak up (twice), then says goodbye and releases; clear speech
returns them to the agent. ``service.UnclearService``, ``http.unclear_routes``;
:func:`build_unclear` plugs them into the app as one :class:`~ivr.feature.Feature`."""

from __future__ import annotations

from ivr.ami.channels import AgentLegCheck
from ivr.feature import Feature, Runtime
from ivr.sections import Config
from ivr.unclear.http import UNCLEAR_OPENAPI, unclear_routes
from ivr.unclear.metrics import UnclearMetrics
from ivr.unclear.service import UnclearService
from ivr.unclear.session import UnclearError, UnclearSettings

__all__ = ["UnclearError", "UnclearService", "UnclearSettings", "build_unclear"]


def build_unclear(rt: Runtime, config: Config, *, agent_leg: AgentLegCheck | None = None) -> Feature[UnclearService]:
    """``agent_leg(uniqueid, channel)``: whether a channel is an agent's leg (the ring
    monitor knows); the key is refused from any other channel."""
    service = UnclearService(
        rt.ami, rt.channels,
        UnclearSettings.from_config(config.unclear, config.switch, config.prompts, config.agents),
        bus=rt.bus, metrics=UnclearMetrics(rt.metrics.registry), agent_leg=agent_leg, acting=rt.acting,
        once=rt.once, paired=bool(config.cluster.node))
    service.attach()
    return Feature("unclear", service, agi_routes=service.agi_routes, http_routes=unclear_routes(service),
                   openapi=UNCLEAR_OPENAPI, on_close=service.close)
