"""Prometheus metrics of rule R4, registered on the controller's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

HOLD_BUCKETS = (10, 30, 60, 90, 120, 180, 300, 600)


class HoldMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.durations = Histogram(
            "ivr_hold_duration_seconds", "How long callers were held (R4), by how the hold ended "
            "(resume, abandon, message, callback, agent_left)", ["outcome"],
            buckets=HOLD_BUCKETS, registry=self.registry)
        self.reminders = Counter(
            "ivr_hold_reminders", "Hold reminders played to held callers", registry=self.registry)
        self.choices = Counter(
            "ivr_hold_choices", "Choices held callers took at one minute (keep, message, callback)",
            ["choice"], registry=self.registry)
        self.abandons = Counter(
            "ivr_hold_abandons", "Callers who hung up while on hold", registry=self.registry)
        self.keys_refused = Counter(
            "ivr_hold_keys_refused", "Hold keys (UserEvent IvrHoldKey) refused: not from a "
            "known agent leg (issue 13)", registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
