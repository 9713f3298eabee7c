"""Prometheus metrics of the controller (prometheus-client), in one registry per
controller so that several controllers (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RING_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 15)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.ring_alarms = Counter(
            "ivr_ring_alarms", "Ring alarms raised (R1), by agent and level",
            ["agent", "level"], registry=self.registry)
        self.rings_to_answer = Histogram(
            "ivr_rings_to_answer", "Rings (tone-zone cadence periods) until an agent answered",
            ["agent"], buckets=RING_BUCKETS, registry=self.registry)
        self.ring_legs = Counter(
            "ivr_ring_legs", "Agent legs that rang, by agent and outcome "
            "(within_three, late, not_answered)", ["agent", "outcome"], registry=self.registry)
        # Call records: what is lost is counted (reasons: spool_full, spool_unwritable,
        # spool_corrupt, rejected, queue_full, shutdown, leader_died); what waits on disk is a gauge.
        self.records_dropped = Counter(
            "ivr_records_dropped", "Call events lost to the records, by reason", ["reason"],
            registry=self.registry)
        self.records_duplicates = Counter(
            "ivr_records_duplicates", "Call events found on record already and skipped (written by "
            "another node of the pair, or replayed from the spool)", registry=self.registry)
        self.records_after_end = Counter(
            "ivr_records_after_end", "Call events written but timed after their call's end, so they "
            "change no figure (a pair's nodes, or clocks apart), by event kind", ["kind"],
            registry=self.registry)
        self.records_spooled = Gauge(
            "ivr_records_spooled", "Call events waiting in the records spool for the database",
            registry=self.registry)
        self.agi_refused = Counter(
            "ivr_agi_refused", "FastAGI connections refused, by reason (bad key, no key configured, "
            "bad header, busy, evicted)", ["reason"], registry=self.registry)
        self.http_refused = Counter(
            "ivr_http_connections_refused", "HTTP connections closed at the connection cap "
            "(evicted: an idle one made room; refused: none was idle)", ["reason"], registry=self.registry)

        # A controller pair ([cluster]): 1 while this node is the leader, 0 as a standby
        # (a controller without [cluster] is always the leader).
        self.leader = Gauge("ivr_cluster_leader", "1 while this controller is the leader of its switch",
                            ["node"], registry=self.registry)
        self.lease_token = Gauge("ivr_cluster_token", "Fencing token of this node's current or last leadership",
                                 ["node"], registry=self.registry)
        # Many switches (issue 17): the switch this node serves, as a label set to 1.
        self.switch = Gauge("ivr_switch_info", "The switch this controller serves ([cluster] switch)",
                            ["switch", "node"], registry=self.registry)
        self.forwarded = Counter("ivr_api_forwarded", "Changing API requests sent on to a switch's leader, "
                                 "by outcome (answered, failed)", ["outcome"], registry=self.registry)

    def exposition(self) -> bytes:
        """The text format for a /metrics endpoint."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str]) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
