"""The controller's HTTP side: JSON API, live dashboard, health and metrics (aiohttp)."""

from ivr.http.app import HttpServer, HttpSettings, Services, build_app

__all__ = ["HttpServer", "HttpSettings", "Services", "build_app"]
