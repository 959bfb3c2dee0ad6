"""Prometheus metrics of one gateway instance (its own registry, so instances can share a process).

Names follow :func:`clarion_kit.metrics.metric_name`: ``clarion_realtime_gateway_<name>``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from clarion_kit.metrics import metric_name

SERVICE = "realtime-gateway"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Buckets of the notification → frame written latency, in seconds."""


class GatewayMetrics:
    """Every metric the gateway exports.

    Attributes:
        connections: open, authenticated sessions (gauge).
        frames_sent: server frames written to sockets, by frame class (``notification``,
            ``inbox``, ``control``).
        slow_consumer_closes: sessions closed with 4008.
        closes: sessions closed, by close code.
        delivery_latency: seconds from a notification version's ``updated_at`` to its
            frame being written to a session.
        records: consumed Kafka records by topic and outcome (``appended``,
            ``duplicate``, ``invalid``).
        recoveries: connects by outcome (``recovered`` true/false).
        gap_fills: live gaps filled from the history.
        delivery_status: ``in_app delivered`` statuses published.
        presence: presence events published by status.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry

        def n(name: str) -> str:
            return metric_name(SERVICE, name)

        self.connections = Gauge(n("connections"), "Open WebSocket sessions", registry=reg)
        self.frames_sent = Counter(
            n("frames_sent_total"), "Server frames written", ("kind",), registry=reg
        )
        self.slow_consumer_closes = Counter(
            n("slow_consumer_closes_total"), "Sessions closed as slow consumers", registry=reg
        )
        self.closes = Counter(n("closes_total"), "Sessions closed", ("code",), registry=reg)
        self.delivery_latency = Histogram(
            n("delivery_latency_seconds"),
            "Notification updated_at to frame written",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.records = Counter(
            n("records_total"), "Kafka records consumed", ("topic", "outcome"), registry=reg
        )
        self.recoveries = Counter(
            n("recoveries_total"), "Connects by recovery outcome", ("recovered",), registry=reg
        )
        self.gap_fills = Counter(
            n("gap_fills_total"), "Live gaps filled from history", registry=reg
        )
        self.delivery_status = Counter(
            n("delivery_status_total"), "in_app delivery statuses published", registry=reg
        )
        self.presence = Counter(
            n("presence_events_total"), "Presence events published", ("status",), registry=reg
        )
        # Children resolved once: labels() costs a dict lookup and a lock per call.
        self.frames_notification = self.frames_sent.labels("notification")
        self.frames_inbox = self.frames_sent.labels("inbox")
        self.frames_control = self.frames_sent.labels("control")
