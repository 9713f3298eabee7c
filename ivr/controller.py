"""The controller: FastAGI server, AMI monitor and HTTP API around the pure rules."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from ivr.agi.server import FastAgiServer
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection
from ivr.callbacks import build_callbacks
from ivr.config import Config
from ivr.doctor import build_doctor
from ivr.events import EventBus
from ivr.feature import Feature, Runtime
from ivr.flows import build_inbound
from ivr.hold import build_hold
from ivr.http.operations import Operations
from ivr.metrics import Metrics
from ivr.rings import build_rings
from ivr.switch.embedded import default_cache_dir
from ivr.timers import TimerService
from ivr.transfer import build_transfer

log = structlog.get_logger("ivr.controller")


def switch_view(path: Path) -> str:
    """``path`` as Asterisk sees it: inside the embedded switch's chroot when it lies in
    its root filesystem, else unchanged (Asterisk on this host)."""
    rootfs = (default_cache_dir() / "rootfs").resolve()
    try:
        return "/" + str(path.resolve().relative_to(rootfs))
    except ValueError:
        return str(path)


class Controller:
    """Everything that runs beside Asterisk, wired once.

    The controller owns the runtime every feature shares (one AMI connection with the
    channel tracker, one timer service driving every rule machine, one event bus feeding
    the call records, the dashboard and the metrics) and hands it to each feature's
    builder; it registers what the features offer: FastAGI routes (``inbound``,
    ``agent-answered``, ``doctor``, ``hold``, ``transfer-target``, ``callback-agent``,
    ``callback-customer``) on one FastAGI server,
    HTTP routes on the operations surface. ``now`` is the wall clock the greeting is
    chosen by (injectable, so a test can make it a Mid-Autumn morning).
    """

    def __init__(self, config: Config, *, now: Callable[[], datetime] | None = None) -> None:
        self.config = config
        tz = ZoneInfo(config.switch.timezone)
        self.now = now or (lambda: datetime.now(tz))
        self.bus = EventBus()
        self.metrics = Metrics()
        self.timers = TimerService()
        self.ami = AmiConnection.from_config(config.ami)
        self.channels = ChannelTracker()
        self.channels.attach(self.ami)  # first: its resync runs before any feature's
        rt = Runtime(self.ami, self.channels, self.timers, self.bus, self.metrics)
        # The order features attach to AMI in is the order they see each event.
        inbound = build_inbound(rt, config, self.now)  # R2/R3: greeting, silent-call script
        rings = build_rings(rt, config)  # R1: ring alarms, apology and agent number
        # Records on the bus, hang-up order (R6), HTTP API and dashboard.
        self.operations = Operations(config, bus=self.bus, ami=self.ami, channels=self.channels,
                                     metrics=self.metrics, fastagi=lambda: self.agi.listening)
        transfer = build_transfer(rt, config)  # R5: confirmed warm transfer
        hold = build_hold(rt, config, switch_path=switch_view)  # R4: reminders, choices, thanks
        records = self.operations.records
        callbacks = build_callbacks(  # issue 18: call-backs placed by the switch, queue in the records
            rt, config, lambda: records.store.queue if records.store is not None else None)
        self.features: list[Feature[Any]] = [inbound, rings, transfer, hold, callbacks, build_doctor(config)]
        routes: dict[str, Any] = {}
        for feature in self.features:
            if taken := routes.keys() & feature.agi_routes.keys():
                raise ValueError(f"feature {feature.name}: FastAGI route(s) {sorted(taken)} served twice")
            routes.update(feature.agi_routes)
            if feature.http_routes or feature.openapi:
                self.operations.add_feature(feature.name, list(feature.http_routes), dict(feature.openapi))
        self.agi = FastAgiServer(routes, config.agi.host, config.agi.port)
        self.inbound, self.rings = inbound.service, rings.service
        self.transfer, self.hold, self.callbacks = transfer.service, hold.service, callbacks.service
        self.operations.services.extra["callbacks"] = self.callbacks.queue  # the dashboard's pending list

    async def start(self) -> None:
        # The records subscribe first (the first call's events are kept) without waiting
        # on the database; calls are served next, whatever the database does; the HTTP
        # API last.
        await self.operations.start_records()
        await self.agi.start()
        for feature in self.features:
            await feature.start()
        await self.ami.start()  # connects in the background, reconnects on its own
        await self.operations.start()
        log.info("controller.started", agi_port=self.agi.port)

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the switch is connected and the controller's view of it is synced."""
        await self.ami.wait_ready(timeout)

    async def stop(self, grace: float = 5.0) -> None:
        await self.agi.close(grace)
        for feature in self.features:
            await feature.close()
        await self.timers.close()
        await self.ami.close()
        await self.operations.stop()
        log.info("controller.stopped")

    async def run_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()
