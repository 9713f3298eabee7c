"""Prometheus metrics of R5 warm transfers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class TransferMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.outcomes = Counter(
            "ivr_transfers", "Warm transfers (R5) by outcome: completed, refused, timeout, "
            "noanswer, busy, hangup, abandoned", ["outcome"], registry=self.registry)
        self.confirm_seconds = Histogram(
            "ivr_transfer_confirm_seconds", "Time from the target's answer to its confirmation",
            buckets=(2, 4, 6, 8, 10, 15, 20, 30, 45), registry=self.registry)
        self.keys_refused = Counter(
            "ivr_transfer_keys_refused", "Transfer keys (UserEvent IvrTransferRequest) refused: "
            "not from a known agent leg (issue 13)", registry=self.registry)
