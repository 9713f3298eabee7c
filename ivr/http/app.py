"""The HTTP server: JSON API, dashboard, health and metrics, on one aiohttp app.

Each feature brings its routes (a list of aiohttp ``RouteDef``) and their OpenAPI paths;
a handler parses the request and calls a service, and only services touch the switch::

    server = HttpServer(services, settings)
    server.add_feature("hold", hold_routes(hold_service), openapi_paths)   # before start()
    await server.start()

The core features here read the call records (:mod:`ivr.http.calls`) and serve the
dashboard (:mod:`ivr.http.dashboard`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ivr.http import auth, calls, dashboard
from ivr.http.forward import forward_middleware
from ivr.http.keys import OPENAPI, SERVICES, SETTINGS, STREAMS, THROTTLE
from ivr.http.security import add_security_headers
from ivr.http.services import HealthCheck, HttpSettings, Services
from ivr.http.throttle import AuthThrottle
from ivr.metrics import Metrics
from ivr.netlimits import CappedHttpSite, Throttled
from ivr.web.errors import CLIENT_MAX_SIZE, error_middleware

log = structlog.get_logger("ivr.http")

def base_openapi() -> dict[str, Any]:
    text = resources.files("ivr.http").joinpath("openapi.json").read_text(encoding="utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


async def _check(name: str, check: HealthCheck, timeout: float) -> dict[str, Any]:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
        return {"ok": bool(result)} if not isinstance(result, dict) else {"ok": True, **result}
    except Exception as exc:  # noqa: BLE001 - a failing check is the answer
        return {"ok": False, "error": str(exc) or type(exc).__name__}


async def healthz(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    settings: HttpSettings = request.app[SETTINGS]
    names = list(services.health)
    results = await asyncio.gather(*(_check(n, services.health[n], settings.health_timeout) for n in names))
    checks = dict(zip(names, results, strict=True))
    ok = all(c["ok"] for c in checks.values())
    blocks = {name: block() for name, block in services.status.items()}
    return web.json_response({"status": "ok" if ok else "failing", "checks": checks, **blocks},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    registries = [*services.registries, request.app[THROTTLE].registry]
    body = b"".join(generate_latest(r) for r in registries)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def route_table(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, as OpenAPI spells them (HEAD left out)."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or (info.get("prefix", "") + "/{filename}")
        if route.method != "HEAD":
            out.add((route.method.lower(), path))
    return out


def undocumented(app: web.Application, doc: dict[str, Any]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(routes missing from the document, documented operations with no route)."""
    documented = {(method, path) for path, item in doc["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    routes = route_table(app)
    return routes - documented, documented - routes


def build_app(services: Services, settings: HttpSettings,
              features: Sequence[tuple[str, list[web.RouteDef], dict[str, Any]]] = ()) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth.auth_middleware, forward_middleware],
                          client_max_size=settings.client_max_size)
    app[SERVICES], app[SETTINGS] = services, settings
    app[CLIENT_MAX_SIZE] = settings.client_max_size
    app[STREAMS] = set()
    app[THROTTLE] = AuthThrottle(settings.throttle)
    app.on_response_prepare.append(add_security_headers)
    doc = base_openapi()
    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics),
                    web.get("/api/openapi.json", openapi)])
    app.add_routes(auth.routes())
    app.add_routes(calls.routes())
    app.add_routes(dashboard.routes())
    for name, routes, paths in features:
        app.add_routes(routes)
        for path, item in paths.items():
            if doc["paths"].get(path, {}).keys() & item.keys():  # another method on a path is fine
                raise ValueError(f"feature {name}: {path} is documented twice")
            doc["paths"][path] = {**doc["paths"].get(path, {}), **item}
    app[OPENAPI] = doc
    missing, stale = undocumented(app, doc)
    if missing or stale:
        raise ValueError(f"the OpenAPI document is out of step: undocumented {sorted(missing)}, "
                         f"no route for {sorted(stale)}")
    app.on_shutdown.append(dashboard.close_streams)
    if services.forwarder is not None:
        forwarder = services.forwarder

        async def close_forwarder(_app: web.Application) -> None:
            await forwarder.close()

        app.on_cleanup.append(close_forwarder)
    return app


class HttpServer:
    def __init__(self, services: Services, settings: HttpSettings, *, metrics: Metrics | None = None) -> None:
        self.services = services
        self.metrics = metrics
        self.site: CappedHttpSite | None = None
        self.settings = settings
        self.features: list[tuple[str, list[web.RouteDef], dict[str, Any]]] = []
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.port = settings.port
        self._throttle = Throttled()

    def add_feature(self, name: str, routes: list[web.RouteDef], openapi_paths: dict[str, Any]) -> None:
        """Plug a feature's routes in (before :meth:`start`); every route must be documented."""
        if self.app is not None:
            raise RuntimeError("add features before the HTTP server starts")
        self.features.append((name, routes, openapi_paths))

    async def start(self) -> None:
        self.app = build_app(self.services, self.settings, self.features)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0,
                                     keepalive_timeout=self.settings.keepalive_timeout)
        await self._runner.setup()
        site = self.site = CappedHttpSite(self._runner, self.settings.host, self.settings.port,
                                          max_connections=self.settings.max_connections,
                                          on_refused=self._refused)
        await site.start()
        self.port = site.port  # the bound one (port 0: chosen by the system)
        log.info("http.listening", host=self.settings.host, port=self.port,
                 auth="token" if self.settings.token else "not configured")

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.http_refused.labels(reason=reason).inc()
        self._throttle.warning("http.connection_cap", reason, max_connections=self.settings.max_connections)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
