"""Call-backs the switch places itself (issue 18): the scheduler service (AMI + FastAGI),
its HTTP routes and metrics; :func:`build_callbacks` plugs them into the app as one
:class:`~ivr.feature.Feature`. The durable queue is the call records'
(``ivr/records/callbacks.py``): the app hands the builder a function returning it."""

from __future__ import annotations

from collections.abc import Callable

from ivr.callbacks.http import CALLBACK_OPENAPI, callback_routes
from ivr.callbacks.metrics import CallbackMetrics
from ivr.callbacks.model import CallbackQueueStore, CallbackSettings
from ivr.callbacks.service import CallbackService
from ivr.feature import Feature, Runtime
from ivr.sections import Config

__all__ = ["CallbackService", "CallbackSettings", "build_callbacks"]


def build_callbacks(rt: Runtime, config: Config,
                    store: Callable[[], CallbackQueueStore | None]) -> Feature[CallbackService]:
    service = CallbackService(
        rt.ami, rt.channels, CallbackSettings.from_config(config.callbacks, config.switch, config.prompts,
                                                          config.agents, config.hold),
        store=store, bus=rt.bus, metrics=CallbackMetrics(rt.metrics.registry), acting=rt.acting,
        node=config.cluster.node)
    service.attach()
    return Feature("callbacks", service, agi_routes=service.agi_routes, http_routes=callback_routes(service),
                   openapi=CALLBACK_OPENAPI, on_start=service.start, on_stopping=service.stopping_now,
                   on_close=service.close)
