"""Typed keys of the aiohttp application."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ivr.http.services import HttpSettings, Services
from ivr.http.throttle import AuthThrottle

SERVICES: web.AppKey[Services] = web.AppKey("services")
SETTINGS: web.AppKey[HttpSettings] = web.AppKey("settings")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams", set)
THROTTLE: web.AppKey[AuthThrottle] = web.AppKey("throttle")
