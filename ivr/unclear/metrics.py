"""Prometheus metrics of the unclear-line rule (R3), on the controller's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class UnclearMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.started = Counter(
            "ivr_unclear_started", "Unclear-line scripts started by agents (R3), by reason "
            "(faint, noisy) and how (key, api)", ["reason", "via"], registry=self.registry)
        self.stages = Counter(
            "ivr_unclear_stages", "Unclear-line stages reached (ask, ask-again, goodbye, release, "
            "returned, hungup)", ["stage", "reason"], registry=self.registry)
        self.outcomes = Counter(
            "ivr_unclear_outcomes", "How unclear-line scripts ended (returned, released, hungup, "
            "failed)", ["outcome", "reason"], registry=self.registry)
        self.keys_refused = Counter(
            "ivr_unclear_keys_refused", "Unclear-line keys from channels that are not an agent's "
            "leg (refused)", registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
