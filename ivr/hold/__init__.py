"""Rule R4 at the switch: a held caller hears music, a reminder every 30 s, the choices
at one minute (keep waiting, leave a message, call-back) and a thank-you on resume.

``service.HoldService`` (AMI + FastAGI), ``store.HoldStore`` (messages and call-backs),
``metrics.HoldMetrics``, ``http.hold_routes`` (the HTTP API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ivr.hold.service import HoldError, HoldService, HoldSettings, NoSuchCall
from ivr.hold.store import HoldStore

__all__ = ["HoldError", "HoldService", "HoldSettings", "HoldStore", "NoSuchCall", "build_hold"]


def switch_view(path: Path) -> str:
    """``path`` as Asterisk sees it: inside the embedded switch's chroot when it lies in
    its root filesystem, else unchanged (Asterisk on this host)."""
    from ivr.switch.embedded import default_cache_dir

    rootfs = (default_cache_dir() / "rootfs").resolve()
    try:
        return "/" + str(path.resolve().relative_to(rootfs))
    except ValueError:
        return str(path)


def build_hold(controller: Any) -> HoldService:
    """Wire the hold service into a controller: AMI events, the FastAGI route of the held
    caller, the HTTP routes and the metrics registry."""
    from ivr.hold.http import HOLD_OPENAPI, hold_routes
    from ivr.hold.metrics import HoldMetrics

    service = HoldService(
        controller.ami, controller.channels, controller.timers,
        HoldSettings.from_config(controller.config, switch_path=switch_view),
        bus=controller.bus, metrics=HoldMetrics(controller.metrics.registry),
        agent_leg=controller.rings.is_agent_leg)
    service.attach()
    controller.agi.routes.update(service.agi_routes)
    controller.operations.add_feature("hold", hold_routes(service), HOLD_OPENAPI)
    return service
