"""How a feature plugs into the app (the direction of wazo-calld's ``Plugin.load``).

The app owns the runtime (:class:`Runtime`: one AMI connection with its channel tracker,
one timer service, one event bus, one metrics registry) and hands it, with the feature's
own typed configuration section, to the feature's builder. The builder wires its service
to the runtime and returns a :class:`Feature`: what it offers the app (FastAGI routes,
HTTP routes with their OpenAPI paths) and how to close it. The app registers what it is
offered; a feature never imports the app, and the app never reaches into a feature::

    hold = build_hold(runtime, config, switch_path=switch_view)   # Feature[HoldService]
    agi_routes.update(hold.agi_routes); http.add_feature(hold.name, hold.http_routes, hold.openapi)
    ...
    await hold.close()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web

from ivr.agi.channel import AgiChannel
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection
from ivr.events import EventBus
from ivr.metrics import Metrics
from ivr.once import Once
from ivr.timers import TimerService

AgiRoute = Callable[[AgiChannel], Awaitable[Any]]
S = TypeVar("S")


@dataclass(frozen=True)
class Runtime:
    """What the app owns and every feature may use."""

    ami: AmiConnection
    channels: ChannelTracker  # attached to ``ami`` before any feature (its resync runs first)
    timers: TimerService
    bus: EventBus
    metrics: Metrics  # the controller's registry (features add their own collectors to it)
    # True while this controller may act on the switch: always, except a standby of a
    # pair ([cluster]). AMI actions are gated in the connection itself (AmiConnection.guard);
    # this is for what a feature does elsewhere (webhooks, alarm log lines).
    acting: Callable[[], bool] = lambda: True
    # Each action a rule takes, once per switch (a pair: keyed in PostgreSQL; else at once).
    once: Once = field(default_factory=Once)


@dataclass
class Feature(Generic[S]):
    """What one feature offers the app: its service (for the app's own use and tests),
    FastAGI routes by name, HTTP routes with their OpenAPI ``paths`` entries, and what to
    run when the app starts (before the AMI connection opens) and stops."""

    name: str
    service: S
    agi_routes: Mapping[str, AgiRoute] = field(default_factory=dict)
    http_routes: Sequence[web.RouteDef] = ()
    openapi: Mapping[str, Any] = field(default_factory=dict)
    on_start: Callable[[], Awaitable[None]] | None = None
    # The app stops taking calls, before the FastAGI sessions in progress get their grace:
    # hand back at once what another controller should serve from its start.
    on_stopping: Callable[[], Awaitable[None]] | None = None
    on_close: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        if self.on_start is not None:
            await self.on_start()

    async def stopping(self) -> None:
        if self.on_stopping is not None:
            await self.on_stopping()

    async def close(self) -> None:
        if self.on_close is not None:
            await self.on_close()
