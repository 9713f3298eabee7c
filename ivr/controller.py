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

        # R1: the AMI connection, the channel tracker and the ring monitor (issue #4).
        from ivr.ami.channels import ChannelTracker
        from ivr.ami.connection import AmiConnection
        from ivr.events import EventBus
        from ivr.metrics import Metrics
        from ivr.rings import build_ring_monitor
        from ivr.rings.answer import AgentAnsweredFlow
        from ivr.rules.timers import TimerService

        self.bus = EventBus()
        self.metrics = Metrics()
        self.timers = TimerService()
        self.ami = AmiConnection.from_config(config.ami)
        self.channels = ChannelTracker()
        self.channels.attach(self.ami)
        # R3: the inbound flow hears callers by TALK_DETECT on this AMI connection (issue #5).
        from ivr.flows.speech import SpeechSettings, TalkDetector

        self.inbound.speech = TalkDetector(self.ami, SpeechSettings.from_config(config.silence))
        self.inbound.bus = self.bus
        self.rings = build_ring_monitor(self.ami, self.channels, self.timers, config, bus=self.bus,
                                        metrics=self.metrics)
        # Issue #8: call records on the bus, hang-up order (R6), HTTP API and dashboard.
        from ivr.http.operations import Operations

        self.operations = Operations(self)
        self.agi = FastAgiServer(
            {"inbound": self.inbound, "doctor": doctor_route(config),
             "agent-answered": AgentAnsweredFlow(self.rings, config)},
            config.agi.host, config.agi.port,
        )
        # R5: confirmed warm transfer (issue #7): agent key *2 and POST /api/calls/{id}/transfer.
        from ivr.transfer import build_transfer

        self.transfer = build_transfer(self)
        # R4: hold reminders, choices and thanks (issue #6): phone hold, agent key *8, HTTP API.
        from ivr.hold import build_hold

        self.hold = build_hold(self)

    async def start(self) -> None:
        await self.operations.start()  # records first: the first call's events are kept
        await self.agi.start()
        await self.ami.start()  # connects in the background, reconnects on its own
        log.info("controller.started", agi_port=self.agi.port)

    async def stop(self, grace: float = 5.0) -> None:
        await self.agi.close(grace)
        await self.rings.close()
        await self.transfer.close()
        await self.hold.close()
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
