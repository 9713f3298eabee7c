"""What the HTTP handlers may use (:class:`Services`) and how the server listens
(:class:`HttpSettings`): the one module ``app``, ``calls``, ``dashboard`` and ``keys`` share,
so none of them imports another's insides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import REGISTRY, CollectorRegistry

from ivr.events import EventBus
from ivr.http.throttle import ThrottlePolicy
from ivr.records import CallRecorder, CallStore
from ivr.rules.rings import Cadence
from ivr.sections import HoldConfig, HttpConfig, RingsConfig, SwitchConfig
from ivr.web.errors import Unavailable

# True/False, or a JSON object of details (healthy unless it says "ok": false).
HealthCheck = Callable[[], bool | dict[str, Any] | Awaitable[bool | dict[str, Any]]]


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    public: tuple[str, ...] = ("/healthz", "/metrics")
    client_max_size: int = 64 * 1024  # bytes; every request body of this API is small
    health_timeout: float = 2.0
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)  # wrong tokens, per address
    max_connections: int = 64  # at the cap the oldest idle connection is closed (ivr/netlimits.py)
    keepalive_timeout: float = 10.0  # s an idle keep-alive connection (or a silent new one) is kept


@dataclass
class Services:
    """What the HTTP handlers may use. Features put their own services in ``extra``."""

    store: CallStore | None  # None: the records database is unavailable (the API says 503)
    bus: EventBus
    tz: ZoneInfo
    recorder: CallRecorder | None = None
    agents: dict[str, str] = field(default_factory=dict)  # number -> name
    health: dict[str, HealthCheck] = field(default_factory=dict)
    # Extra blocks of /healthz (name -> a function returning a JSON object), e.g. records.
    status: dict[str, Callable[[], Any]] = field(default_factory=dict)
    registries: list[CollectorRegistry] = field(default_factory=lambda: [REGISTRY])
    # The dashboard's rings: s per ring of the tone zone's cadence, and the R1 thresholds.
    ring_period: float = Cadence.for_zone(SwitchConfig().tone_zone).period
    warn_rings: int = RingsConfig().warn_rings
    critical_rings: int = RingsConfig().critical_rings
    long_call_seconds: float = HttpConfig().long_call_seconds
    hold_limit: float = HoldConfig().choices_after  # R4: s on hold that count as too long
    extra: dict[str, Any] = field(default_factory=dict)
    forwarder: Any = None  # ivr.http.forward.Forwarder of a controller pair (issue 17); None: none
    switch: str = "default"  # the switch this node serves ([cluster] switch)

    @property
    def records(self) -> CallStore:
        if self.store is None:
            raise Unavailable("the call records are unavailable: the database could not be opened",
                              error_id="records-unavailable")
        return self.store
