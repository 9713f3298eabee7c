"""The operations surface of a running controller, in one piece for ``ivr/controller.py``:
call records fed by the EventBus, the hang-up order tracker (R6) on the AMI connection,
and the HTTP server (API, dashboard, health, metrics).

Neither holds calls up: the records never wait on the database (it is opened, and
reopened after any failure, in the background, every call to it bounded; while it is
away ``/healthz`` says ``database`` is down, its ``records`` block says ``down`` with the
events spooled to disk and any dropped, and the record endpoints answer 503); if the HTTP
port is taken it runs on without the API (logged as ``http.unavailable``).

After every AMI (re)connect and channel resync, and when the database opens, the records
of calls that are no longer on the switch are closed (``call.ended`` with
``hung_up_first = "unknown"``, ``reason = "ended-while-disconnected"``): their hang-up fell
in an outage, or in a previous controller's lifetime. When the database opens, messages
an earlier version kept as JSON files in ``[hold] messages_dir`` are taken into the
records (``ivr/records/legacy.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from prometheus_client import REGISTRY

from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection
from ivr.events import EventBus
from ivr.hangups import HangupTracker
from ivr.http.app import HttpServer
from ivr.http.forward import Forwarder
from ivr.http.services import HttpSettings, Services
from ivr.metrics import Metrics
from ivr.records import CallRecorder, CallStore
from ivr.records.db import DatabaseError
from ivr.records.keeper import RecordsKeeper
from ivr.records.legacy import import_json_messages
from ivr.rings.settings import RingSettings
from ivr.sections import Config

log = structlog.get_logger("ivr.operations")


def ring_period(config: Config) -> tuple[float, int, int]:
    """s per ring, and the warning and critical ring counts, as the ring monitor has them."""
    settings = RingSettings.from_config(config.rings, config.switch, config.agents)
    return settings.cadence.period, settings.warn_rings, settings.critical_rings


class Operations:
    """Given what it reads, never the controller: the configuration, the event bus, the AMI
    connection with its channel tracker, the metrics, and whether FastAGI listens."""

    def __init__(self, config: Config, *, bus: EventBus, ami: AmiConnection, channels: ChannelTracker,
                 metrics: Metrics | None = None, fastagi: Callable[[], bool] = lambda: False,
                 http_max_connections: int | None = None,
                 acting: Callable[[], bool] | None = None) -> None:
        """``http_max_connections``: the HTTP cap the controller fitted under the fd limit
        beside FastAGI's (default ``[http] max_connections``)."""
        long_call_seconds = config.http.long_call_seconds
        self.ami, self.channels = ami, channels
        self.hangups = HangupTracker(bus)
        self.hangups.attach(ami)
        # After the channel tracker's resync (registered first, in the controller).
        ami.on_connected(self._reconcile_after_login)
        self._reconciled_at = -1  # the tracker's resync count last reconciled
        self._legacy_messages = Path(config.hold.messages_dir)  # JSON files of an earlier version
        self.records = RecordsKeeper(
            config.database.url, bus, on_open=self._records_open, on_down=self._records_down,
            on_drop=(lambda reason, n: metrics.records_dropped.labels(reason).inc(n)) if metrics else None,
            settings=config.database, accept=acting, switch=config.cluster.switch,
            on_duplicate=metrics.records_duplicates.inc if metrics else None,
            on_after_end=(lambda kind: metrics.records_after_end.labels(kind).inc()) if metrics else None)
        if metrics is not None:
            spool = self.records.spool
            metrics.records_spooled.set_function(lambda: float(spool.pending) if spool is not None else 0.0)
        period, warn, critical = ring_period(config)
        registries = [REGISTRY]
        if metrics is not None and metrics.registry is not REGISTRY:
            registries.append(metrics.registry)
        self.services = Services(
            store=None, bus=bus, tz=ZoneInfo(config.switch.timezone),
            agents={a.number: a.name for a in config.agents}, registries=registries,
            ring_period=period, warn_rings=warn, critical_rings=critical, long_call_seconds=long_call_seconds,
            hold_limit=config.hold.choices_after,
            health={"ami": lambda: ami.connected, "fastagi": fastagi,
                    "database": self.records.ping},
            status={"records": self.records.status, "switch": lambda: config.cluster.switch},
            switch=config.cluster.switch,
        )
        self.forwarder: Forwarder | None = None
        if config.cluster.node:  # a controller pair: changing requests go to the switch's leader
            keeper = self.records
            self.forwarder = self.services.forwarder = Forwarder(
                switch=config.cluster.switch, node=config.cluster.node, advertise=config.cluster.advertise,
                acting=acting or (lambda: True), timeout=config.cluster.forward_timeout,
                db=lambda: keeper.store.db if keeper.store is not None else None,
                on_outcome=(lambda outcome: metrics.forwarded.labels(outcome).inc()) if metrics else None)
            self.services.status["forwarding"] = self.forwarder.status
        if metrics is not None:
            metrics.switch.labels(config.cluster.switch, config.cluster.node).set(1)
        self.http = HttpServer(self.services, HttpSettings(
            host=config.http.host, port=config.http.port, token=config.http.token or None,
            public=tuple(config.http.public),
            max_connections=http_max_connections or config.http.max_connections,
            keepalive_timeout=config.http.keepalive_timeout), metrics=metrics)

    def add_feature(self, name: str, routes: list[web.RouteDef], openapi_paths: dict[str, Any]) -> None:
        self.http.add_feature(name, routes, openapi_paths)

    @property
    def recorder(self) -> CallRecorder:
        return self.records.recorder

    async def _records_open(self, store: CallStore) -> None:
        self.services.store, self.services.recorder = store, self.records.recorder
        if self.forwarder is not None:
            await self.forwarder.register(store.db)
        await self.close_ended_calls(force=True)
        try:  # an upgrade loses no message: the old JSON files go into the records (once)
            await import_json_messages(store, self._legacy_messages)
        except DatabaseError as exc:  # the files stay; tried again at the next opening
            log.warning("records.legacy_import_failed", error=str(exc))

    def _records_down(self) -> None:
        self.services.store = None  # the record endpoints answer 503 until it is back

    async def _reconcile_after_login(self) -> None:
        await self.close_ended_calls()

    async def close_ended_calls(self, force: bool = False) -> list[str]:
        """Close the records of calls no longer on the switch (after a resync)."""
        channels = self.channels
        if not self.ami.connected or channels.resyncs == 0:
            return []
        if channels.resyncs == self._reconciled_at and not force:
            return []  # the resync failed: the tracker's view is not fresh
        self._reconciled_at = channels.resyncs
        store = self.records.store
        recorded = await store.open_calls() if store is not None else []
        return self.hangups.reconcile(list(channels.channels.values()), recorded)

    async def start_records(self) -> None:
        """Subscribe the records to the bus; never waits on the database, never raises
        for it."""
        await self.records.start()

    async def start(self) -> None:
        await self.records.start()  # a no-op when start_records() ran
        try:
            await self.http.start()
        except OSError as exc:  # port taken: calls go on, the API is what is missing
            log.error("http.unavailable", host=self.http.settings.host, port=self.http.settings.port,
                      error=str(exc))
            return
        forwarder, host = self.forwarder, self.http.settings.host
        if forwarder is not None and not forwarder.advertise and host not in ("", "0.0.0.0", "::"):  # noqa: S104 - compared, not bound
            forwarder.advertise = f"http://{f'[{host}]' if ':' in host else host}:{self.http.port}"
            if self.records.store is not None:
                await forwarder.register(self.records.store.db)

    async def stop(self) -> None:
        await self.http.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        await self.records.stop()  # writes what is still queued (bounded), then closes
        self.services.store = None
