"""The controller's HTTP side: JSON API, live dashboard, health and metrics (aiohttp)."""

from ivr.http.app import HttpServer, build_app
from ivr.http.services import HttpSettings, Services

__all__ = ["HttpServer", "HttpSettings", "Services", "build_app"]
