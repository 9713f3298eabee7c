"""The controller: FastAGI server, AMI monitor and HTTP API around the pure rules."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import structlog

from ivr.agi.server import FastAgiServer
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection
from ivr.doctor import doctor_route
from ivr.events import EventBus
from ivr.flows.inbound import InboundFlow
from ivr.flows.speech import SpeechSettings, TalkDetector
from ivr.hold import build_hold
from ivr.http.operations import Operations
from ivr.metrics import Metrics
from ivr.netlimits import AcceptFailures, fd_budget
from ivr.rings import build_ring_monitor
from ivr.rings.answer import AgentAnsweredFlow
from ivr.rules.timers import TimerService
from ivr.transfer import build_transfer

if TYPE_CHECKING:
    from ivr.config import Config

log = structlog.get_logger("ivr.controller")


class Controller:
    """Everything that runs beside Asterisk, wired once.

    One AMI connection (with the channel tracker every feature reads), one FastAGI server
    (routes: ``inbound``, ``agent-answered``, ``doctor``, and those hold and transfer add),
    one timer service driving every rule machine, one event bus feeding the call records,
    the dashboard and the metrics. ``now`` is the wall clock the greeting is chosen by
    (injectable, so a test can make it a Mid-Autumn morning).
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
        self.channels.attach(self.ami)
        # R2/R3: greeting, then the silent-call script; callers heard by TALK_DETECT on AMI.
        self.inbound = InboundFlow(config, self.now)
        self.inbound.speech = TalkDetector(self.ami, SpeechSettings.from_config(config.silence))
        self.inbound.bus = self.bus
        # R1: ring alarms on every agent leg; the caller hears apology and agent number.
        self.rings = build_ring_monitor(self.ami, self.channels, self.timers, config, bus=self.bus,
                                        metrics=self.metrics)
        # Records on the bus, hang-up order (R6), HTTP API and dashboard.
        # Calls first: the FastAGI and HTTP connection caps fit under the fd limit together.
        agi_max, self.http_max_connections = fd_budget(config.agi.max_sessions + config.agi.max_pending,
                                                       config.http.max_connections)
        agi_config = dataclasses.replace(config.agi, max_sessions=max(agi_max - config.agi.max_pending, 1))
        self.operations = Operations(self)
        self.agi = FastAgiServer.from_config(
            {"inbound": self.inbound, "doctor": doctor_route(config),
             "agent-answered": AgentAnsweredFlow(self.rings, config)},
            agi_config, metrics=self.metrics,
        )
        self.accept_failures = AcceptFailures()
        # R5: confirmed warm transfer (agent key *2, POST /api/calls/{id}/transfer).
        self.transfer = build_transfer(self)
        # R4: hold reminders, choices and thanks (phone hold, agent key *8, HTTP API).
        self.hold = build_hold(self)

    async def start(self) -> None:
        self.accept_failures.install(asyncio.get_running_loop())
        # The records subscribe first (the first call's events are kept) without waiting
        # on the database; calls are served next, whatever the database does; the HTTP
        # API last.
        await self.operations.start_records()
        await self.agi.start()
        await self.ami.start()  # connects in the background, reconnects on its own
        await self.operations.start()
        log.info("controller.started", agi_port=self.agi.port)

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the switch is connected and the controller's view of it is synced."""
        await self.ami.wait_ready(timeout)

    async def stop(self, grace: float = 5.0) -> None:
        await self.agi.close(grace)
        await self.rings.close()
        await self.transfer.close()
        await self.hold.close()
        await self.timers.close()
        await self.ami.close()
        await self.operations.stop()
        self.accept_failures.uninstall()
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
