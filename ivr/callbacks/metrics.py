"""Prometheus metrics of the call-backs, registered on the controller's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CallbackMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.attempts = Counter(
            "ivr_callback_attempts", "Call-back attempts by outcome (connected, no-answer, busy, machine, "
            "no-live-answer, agent-declined, agent-no-answer)", ["outcome"], registry=self.registry)
        self.pending = Gauge(
            "ivr_callbacks_pending", "Open call-backs waiting in line (as of the last look at the queue)",
            registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
