"""R5 warm transfer: the service (AMI + FastAGI), its targets and its HTTP route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.transfer.service import TransferService


def build_transfer(controller: Any) -> TransferService:
    """Wire the transfer service into a controller: AMI events, the FastAGI route of the
    target's leg, the HTTP routes and the metrics registry."""
    from ivr.transfer.http import TRANSFER_OPENAPI, transfer_routes
    from ivr.transfer.service import TransferMetrics, TransferService, TransferSettings

    service = TransferService(
        controller.ami, TransferSettings.from_config(controller.config), timers=controller.timers,
        bus=controller.bus, metrics=TransferMetrics(controller.metrics.registry),
        agent_leg=controller.rings.is_agent_leg)
    service.attach()
    controller.agi.routes[TransferService.AGI_ROUTE] = service.target_agi
    controller.operations.add_feature("transfer", transfer_routes(service), TRANSFER_OPENAPI)
    return service
