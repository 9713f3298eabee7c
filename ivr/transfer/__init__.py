"""R5 warm transfer: the service (AMI + FastAGI), its targets and its HTTP route;
:func:`build_transfer` plugs them into the app as one :class:`~ivr.feature.Feature`."""

from __future__ import annotations

from ivr.ami.channels import AgentLegCheck
from ivr.feature import Feature, Runtime
from ivr.sections import Config
from ivr.transfer.http import TRANSFER_OPENAPI, transfer_routes
from ivr.transfer.metrics import TransferMetrics
from ivr.transfer.service import TransferService
from ivr.transfer.settings import TransferSettings
from ivr.transfer.takeover import take_over

__all__ = ["TransferService", "TransferSettings", "build_transfer", "take_over"]


def build_transfer(rt: Runtime, config: Config, *,
                   agent_leg: AgentLegCheck | None = None) -> Feature[TransferService]:
    """The transfer feature on the app's runtime: AMI events, the FastAGI route of the
    target's leg, the HTTP routes and the metrics. ``agent_leg``: see ``build_hold``."""
    service = TransferService(
        rt.ami, TransferSettings.from_config(config.transfer, config.hold, config.switch,
                                             config.prompts, config.agents),
        timers=rt.timers, bus=rt.bus, metrics=TransferMetrics(rt.metrics.registry),
        agent_leg=agent_leg, acting=rt.acting, once=rt.once)
    service.attach()
    return Feature("transfer", service, agi_routes={TransferService.AGI_ROUTE: service.target_agi},
                   http_routes=transfer_routes(service), openapi=TRANSFER_OPENAPI,
                   on_close=service.close)
