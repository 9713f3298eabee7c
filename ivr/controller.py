"""The controller: FastAGI server, AMI monitor and HTTP API around the pure rules."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import structlog

from ivr.agi.server import FastAgiServer
from ivr.flows.inbound import InboundFlow

if TYPE_CHECKING:
    from ivr.config import Config

log = structlog.get_logger("ivr.controller")


class Controller:
    def __init__(self, config: Config, *, now: Callable[[], datetime] | None = None) -> None:
        self.config = config
        tz = ZoneInfo(config.switch.timezone)
        self.now = now or (lambda: datetime.now(tz))
        self.inbound = InboundFlow(config, self.now)
        from ivr.doctor import doctor_route

        self.agi = FastAgiServer(
            {"inbound": self.inbound, "doctor": doctor_route(config)}, config.agi.host, config.agi.port
        )

    async def start(self) -> None:
        await self.agi.start()
        log.info("controller.started", agi_port=self.agi.port)

    async def stop(self, grace: float = 5.0) -> None:
        await self.agi.close(grace)
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
