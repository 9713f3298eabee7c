"""The operations surface of a running controller, in one piece for ``ivr/controller.py``:
call records fed by the EventBus, the hang-up order tracker (R6) on the AMI connection,
and the HTTP server (API, dashboard, health, metrics).

Neither holds calls up: if the database cannot be opened the controller runs on without
records (``/healthz`` says so and the record endpoints answer 503); if the HTTP port is
taken it runs on without the API (logged as ``http.unavailable``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from prometheus_client import REGISTRY

from ivr.hangups import HangupTracker
from ivr.http.app import HttpServer, HttpSettings, Services
from ivr.records import CallRecorder, CallStore, DatabaseError

if TYPE_CHECKING:
    from ivr.controller import Controller

log = structlog.get_logger("ivr.operations")


def ring_period(config: Any) -> tuple[float, int]:
    from ivr.rings.monitor import RingSettings

    settings = RingSettings.from_config(config)
    return settings.cadence.period, settings.warn_rings


class Operations:
    def __init__(self, controller: Controller) -> None:
        config = controller.config
        long_call_seconds = config.http.long_call_seconds
        self.controller = controller
        self.hangups = HangupTracker(controller.bus)
        self.hangups.attach(controller.ami)
        period, warn = ring_period(config)
        registries = [REGISTRY]
        metrics = getattr(controller, "metrics", None)
        if metrics is not None and getattr(metrics, "registry", REGISTRY) is not REGISTRY:
            registries.append(metrics.registry)
        self.services = Services(
            store=None, bus=controller.bus, tz=ZoneInfo(config.switch.timezone),
            agents={a.number: a.name for a in config.agents}, registries=registries,
            ring_period=period, warn_rings=warn, long_call_seconds=long_call_seconds,
            health={"ami": lambda: controller.ami.connected, "fastagi": lambda: controller.agi.listening,
                    "database": self._database_ok},
        )
        self.http = HttpServer(self.services, HttpSettings(
            host=config.http.host, port=config.http.port, token=config.http.token or None,
            public=tuple(config.http.public)))
        self.recorder: CallRecorder | None = None

    def add_feature(self, name: str, routes: list[web.RouteDef], openapi_paths: dict[str, Any]) -> None:
        self.http.add_feature(name, routes, openapi_paths)

    async def _database_ok(self) -> bool:
        if self.services.store is None:
            raise DatabaseError("the call records database could not be opened")
        return await self.services.store.ping()

    async def start(self) -> None:
        try:
            store = await CallStore.open(self.controller.config.database.url)
        except DatabaseError as exc:
            log.error("records.unavailable", error=str(exc))
        else:
            self.services.store = store
            self.recorder = self.services.recorder = CallRecorder(store, self.controller.bus)
            await self.recorder.start()
        try:
            await self.http.start()
        except OSError as exc:  # port taken: calls go on, the API is what is missing
            log.error("http.unavailable", host=self.http.settings.host, port=self.http.settings.port,
                      error=str(exc))

    async def stop(self) -> None:
        await self.http.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.services.store is not None:
            await self.services.store.close()
            self.services.store = None
