"""Prometheus metrics of analytics, updated after each batch commits.

Besides its own consumer health, analytics exports platform-wide delivery
signals it is the one service to see in full (every channel's status reports),
which the alert rules in ``deploy/prometheus/alerts.yml`` use:

- ``clarion_analytics_messages_total{topic,outcome}``: outcome ``applied``,
  ``duplicate`` (redelivery absorbed by a dedup key) or ``poison`` (DLQ).
- ``clarion_analytics_batch_seconds{topic}``: time to apply one batch.
- ``clarion_analytics_batch_failures_total{topic,error_type}``: failed attempts
  (each is retried).
- ``clarion_analytics_delivery_status_total{channel,status}``: distinct status reports.
- ``clarion_analytics_delivery_latency_seconds{channel}``: notification emitted ->
  delivered.
- ``clarion_analytics_notification_latency_seconds{stage}``: event -> notification
  (``event_to_notification``, ``ingest_to_notification``).
- ``clarion_analytics_consumer_lag{topic,partition}``: records behind the partition's
  high watermark after the last batch (the consumer's own view of its lag).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from clarion_analytics.adapters.postgres import Applied
from clarion_analytics.domain.samples import NOTIFICATION_TO_DELIVERY
from clarion_kit.metrics import get_or_create_counter, get_or_create_histogram, metric_name

SERVICE = "analytics"
LATENCY_BUCKETS_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0
)  # fmt: skip


_gauges: dict[tuple[int, str], Gauge] = {}


def _gauge(
    name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry | None
) -> Gauge:
    """The gauge ``name`` in ``registry``, created once per registry."""
    reg = registry if registry is not None else REGISTRY
    key = (id(reg), name)
    if key not in _gauges:
        _gauges[key] = Gauge(name, documentation, labels, registry=reg)
    return _gauges[key]


class AnalyticsMetrics:
    """The analytics collectors in ``registry`` (default: the process registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.messages = get_or_create_counter(
            metric_name(SERVICE, "messages_total"),
            "Consumed records by topic and outcome (applied, duplicate, poison)",
            ("topic", "outcome"),
            registry,
        )
        self.batch_seconds = get_or_create_histogram(
            metric_name(SERVICE, "batch_seconds"),
            "Seconds to apply one consumer batch in PostgreSQL",
            ("topic",),
            registry,
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.batch_failures = get_or_create_counter(
            metric_name(SERVICE, "batch_failures_total"),
            "Failed attempts to apply a batch (each is retried)",
            ("topic", "error_type"),
            registry,
        )
        self.statuses = get_or_create_counter(
            metric_name(SERVICE, "delivery_status_total"),
            "Distinct delivery status reports by channel and status",
            ("channel", "status"),
            registry,
        )
        self.delivery_latency = get_or_create_histogram(
            metric_name(SERVICE, "delivery_latency_seconds"),
            "Seconds from a notification version being emitted to its delivery",
            ("channel",),
            registry,
            LATENCY_BUCKETS_SECONDS,
        )
        self.notification_latency = get_or_create_histogram(
            metric_name(SERVICE, "notification_latency_seconds"),
            "Seconds from the domain event (or its ingestion) to the notification",
            ("stage",),
            registry,
            LATENCY_BUCKETS_SECONDS,
        )

        self.consumer_lag = _gauge(
            metric_name(SERVICE, "consumer_lag"),
            "Records between the committed batch and the partition's high watermark",
            ("topic", "partition"),
            registry,
        )

    def lag(self, topic: str, partition: int, records: int) -> None:
        """Set the consumer lag of one partition (records, never negative)."""
        self.consumer_lag.labels(topic, str(partition)).set(max(records, 0))

    def poison(self, topic: str, error_type: str) -> None:
        """Count one record sent to the DLQ."""
        self.messages.labels(topic, "poison").inc()

    def batch_failed(self, topic: str, error_type: str) -> None:
        """Count one failed attempt to apply a batch."""
        self.batch_failures.labels(topic, error_type).inc()

    def batch_applied(self, topic: str, applied: Applied, seconds: float) -> None:
        """Record a committed batch: outcomes, status reports and latency samples."""
        self.batch_seconds.labels(topic).observe(seconds)
        if applied.applied:
            self.messages.labels(topic, "applied").inc(applied.applied)
        if applied.duplicates:
            self.messages.labels(topic, "duplicate").inc(applied.duplicates)
        for status in applied.statuses:
            self.statuses.labels(status.channel.value, status.status.value).inc()
        for sample in applied.samples:
            seconds_ = max(sample.latency_ms, 0.0) / 1000.0
            if sample.stage == NOTIFICATION_TO_DELIVERY:
                self.delivery_latency.labels(sample.channel).observe(seconds_)
            else:
                self.notification_latency.labels(sample.stage).observe(seconds_)
