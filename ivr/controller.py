"""The controller: FastAGI server, AMI monitor and HTTP API around the pure rules."""

from __future__ import annotations

import asyncio
import dataclasses
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
from ivr.cluster import Lease, Standalone, check_start
from ivr.config import Config
from ivr.doctor import build_doctor
from ivr.events import EventBus
from ivr.feature import Feature, Runtime
from ivr.flows import build_inbound
from ivr.hold import build_hold
from ivr.http.operations import Operations
from ivr.metrics import Metrics
from ivr.netlimits import AcceptFailures, fd_budget, split_agi
from ivr.once import Once
from ivr.rings import build_rings
from ivr.switch.rootfs import default_cache_dir
from ivr.timers import TimerService
from ivr.transfer import build_transfer, take_over
from ivr.unclear import build_unclear

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
    ``agent-answered``, ``doctor``, ``hold``, ``unclear``, ``transfer-target``, ``callback-agent``,
    ``callback-customer``) on one FastAGI server,
    HTTP routes on the operations surface. ``now`` is the wall clock the greeting is
    chosen by (injectable, so a test can make it a Mid-Autumn morning).
    """

    def __init__(self, config: Config, *, now: Callable[[], datetime] | None = None) -> None:
        self.config = config
        tz = ZoneInfo(config.switch.timezone)
        self.now = now or (lambda: datetime.now(tz))
        self.bus = EventBus(switch=config.cluster.switch)  # the switch: part of each record's id
        self.metrics = Metrics()
        self.timers = TimerService()
        self.ami = AmiConnection.from_config(config.ami)
        self.channels = ChannelTracker()
        self.channels.attach(self.ami)  # first: its resync runs before any feature's
        # A controller pair ([cluster]): only the lease holder changes the switch.
        self.lease = Lease.from_config(config.cluster, config.database) if config.cluster.node else None
        # Without [cluster] on PostgreSQL: refuses to start beside a pair of the same switch.
        self.standalone = Standalone.from_config(config.cluster, config.database) if self.lease is None else None
        acting = self.lease.may_act if self.lease is not None else (lambda: True)
        self.once = Once.from_config(config.cluster, config.database, self.lease)  # each rule's action once per switch
        rt = Runtime(self.ami, self.channels, self.timers, self.bus, self.metrics, acting=acting, once=self.once)
        # The order features attach to AMI in is the order they see each event.
        inbound = build_inbound(rt, config, self.now)  # R2/R3: greeting, silent-call script
        rings = build_rings(rt, config)  # R1: ring alarms, apology and agent number
        # Records on the bus, hang-up order (R6), HTTP API and dashboard.
        # Calls first: the FastAGI and HTTP connection caps fit under the fd limit together.
        agi_max, http_max = fd_budget(config.agi.max_sessions + config.agi.max_pending,
                                      config.http.max_connections)
        sessions, pending = split_agi(agi_max, config.agi.max_sessions, config.agi.max_pending)
        agi_config = dataclasses.replace(config.agi, max_sessions=sessions, max_pending=pending)
        self.operations = Operations(config, bus=self.bus, ami=self.ami, channels=self.channels,
                                     metrics=self.metrics, fastagi=lambda: self.agi.listening,
                                     http_max_connections=http_max,
                                     acting=acting if self.lease is not None else None)
        # The agent keys (hold, transfer) are honoured from agent legs only: the ring
        # monitor knows every leg dialled as an agent (issue 13).
        agent_leg = rings.service.is_agent_leg
        transfer = build_transfer(rt, config, agent_leg=agent_leg)  # R5: confirmed warm transfer
        hold = build_hold(rt, config, switch_path=switch_view, agent_leg=agent_leg)  # R4
        # R3: a line too faint or too noisy (agent key, API)
        unclear = build_unclear(rt, config, agent_leg=agent_leg)
        records = self.operations.records
        callbacks = build_callbacks(  # issue 18: call-backs placed by the switch, queue in the records
            rt, config, lambda: records.store.queue if records.store is not None else None)
        self.features: list[Feature[Any]] = [inbound, rings, transfer, hold, unclear, callbacks,
                                              build_doctor(config)]
        routes: dict[str, Any] = {}
        for feature in self.features:
            if taken := routes.keys() & feature.agi_routes.keys():
                raise ValueError(f"feature {feature.name}: FastAGI route(s) {sorted(taken)} served twice")
            routes.update(feature.agi_routes)
            if feature.http_routes or feature.openapi:
                self.operations.add_feature(feature.name, list(feature.http_routes), dict(feature.openapi))
        self.agi = FastAgiServer.from_config(routes, agi_config, metrics=self.metrics)
        self.accept_failures = AcceptFailures()
        if self.lease is not None:
            self._join_cluster(self.lease)
        else:
            self.metrics.leader.labels("").set(1)
            self.operations.services.status["role"] = lambda: "leader"
            if self.standalone is not None:
                self.operations.services.status["standalone"] = self.standalone.status
        self.inbound, self.rings = inbound.service, rings.service
        self.transfer, self.hold = transfer.service, hold.service
        self.unclear, self.callbacks = unclear.service, callbacks.service
        self.operations.services.extra["callbacks"] = self.callbacks.queue  # the dashboard's pending list
        self._takeover: asyncio.Future[Any] | None = None

    def _join_cluster(self, lease: Lease) -> None:
        """Gate the switch on the lease: every AMI action that changes the switch (one
        place: the connection's guard) is sent only while this node holds the lease, or on
        a channel whose FastAGI session runs here (no other node drives that channel);
        a standby's FastAGI lets each call go to the next address; /healthz and the
        metrics say the role."""
        agi = self.agi

        def guard(action: dict[str, Any]) -> bool:
            if lease.may_act() or action.get("Channel") in agi.channels:
                return True
            lease.withheld += 1
            log.info("cluster.withheld", action=action.get("Action"), node=lease.node)
            return False

        self.ami.guard = guard
        agi.serving = lease.may_act
        node = lease.node
        self.metrics.leader.labels(node).set(0)

        def on_change(role: str, token: int) -> None:
            self.metrics.leader.labels(node).set(1 if role == "leader" else 0)
            self.metrics.lease_token.labels(node).set(token)
            if role == "leader":
                self._takeover = asyncio.ensure_future(self._after_takeover())

        lease.on_change(on_change)
        status = self.operations.services.status
        status["role"] = lambda: lease.role
        status["cluster"] = lambda: {"node": lease.node, "switch": lease.switch, "token": lease.token,
                                     "takeovers": lease.takeovers, "withheld": lease.withheld,
                                     "actions": {**self.once.counts, "pending_now": self.once.pending},
                                     "claims": self.once.claims(),
                                     **({"error": lease.last_error} if lease.last_error else {})}

    async def _after_takeover(self) -> None:
        """A new leader resyncs as after an AMI login: the channels, the ring legs, the
        dialplan globals (a standby's were withheld) and the records of calls that ended
        while nobody recorded them; then it takes over the transfers in progress (issue 17:
        holds and silent calls come back by FastAGI, ring legs were followed all along)."""
        try:
            await self.ami.resync()
            await take_over(self.transfer)
        except Exception as exc:  # noqa: BLE001 - the next AMI login resyncs again
            log.warning("cluster.resync_failed", error=str(exc))

    @property
    def role(self) -> str:
        return self.lease.role if self.lease is not None else "leader"

    async def start(self) -> None:
        # Another controller drives this switch on the database: SwitchTaken, nothing started.
        if self.lease is not None:
            await check_start(self.lease.url, self.lease.switch, self.lease.node,
                              timeout=self.config.database.connect_timeout)
        elif self.standalone is not None:
            await self.standalone.start()
        self.accept_failures.install(asyncio.get_running_loop())
        # The records subscribe first (the first call's events are kept) without waiting
        # on the database; calls are served next, whatever the database does; the HTTP
        # API last.
        await self.operations.start_records()
        await self.agi.start()
        for feature in self.features:
            await feature.start()
        if self.lease is not None:
            await self.lease.start()  # a standby until the lease is taken
        await self.ami.start()  # connects in the background, reconnects on its own
        await self.operations.start()
        log.info("controller.started", agi_port=self.agi.port)

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the switch is connected and the controller's view of it is synced."""
        await self.ami.wait_ready(timeout)

    async def stop(self, grace: float = 5.0) -> None:
        if self.lease is not None:
            await self.lease.close()  # hand the lease over before the calls in progress end
            if self._takeover is not None:
                await asyncio.gather(self._takeover, return_exceptions=True)
        for feature in self.features:
            await feature.stopping()  # e.g. a call-back agent's announcement: handed back at once
        await self.agi.close(grace)
        for feature in self.features:
            await feature.close()
        await self.timers.close()
        await self.once.close()
        await self.ami.close()
        await self.operations.stop()
        if self.standalone is not None:
            await self.standalone.close()  # the switch is free once nothing here acts
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
