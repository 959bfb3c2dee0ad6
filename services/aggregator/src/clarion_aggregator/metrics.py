"""Prometheus metrics of the aggregator (``clarion_aggregator_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from clarion_kit.metrics import get_or_create_counter, get_or_create_histogram, metric_name

SERVICE = "aggregator"


@dataclass(frozen=True)
class AggregatorMetrics:
    """Counters and histograms; :meth:`create` registers them once per process."""

    events: Counter
    suppressed: Counter
    groups: Counter
    notifications: Counter
    pushes: Counter
    emails: Counter
    digests: Counter
    materialised: Counter
    dead_lettered: Counter
    materialise_dropped: Counter
    batches_failed: Counter
    batch_seconds: Histogram
    rebuilds: Counter
    digest_items_unrestored: Counter

    @classmethod
    def create(cls) -> AggregatorMetrics:
        """The process-wide metrics (created on first use)."""

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return get_or_create_counter(metric_name(SERVICE, name), doc, labels)

        return cls(
            events=counter("domain_events_total", "Domain events consumed", ("type",)),
            suppressed=counter(
                "suppressed_total", "Recipients skipped by mutes or preferences", ("type",)
            ),
            groups=counter(
                "group_updates_total",
                "Aggregation outcomes (created/updated/duplicate)",
                ("outcome",),
            ),
            notifications=counter(
                "notifications_total", "Notification versions published", ("type",)
            ),
            pushes=counter("push_requests_total", "Push requests published"),
            emails=counter("email_requests_total", "Email requests published", ("kind",)),
            digests=counter("digest_items_total", "Items sent in digests"),
            materialised=counter(
                "materialised_total",
                "Preferences, profiles and presence records stored",
                ("topic",),
            ),
            dead_lettered=counter(
                "dead_lettered_total", "Invalid records sent to a DLQ", ("topic",)
            ),
            materialise_dropped=counter(
                "materialise_dropped_total",
                "State records given up after retries (re-read at the next start)",
            ),
            batches_failed=counter(
                "batches_failed_total",
                "Consumed batches that failed and are consumed again (seek back)",
                ("topic",),
            ),
            batch_seconds=get_or_create_histogram(
                metric_name(SERVICE, "batch_seconds"),
                "Time to process one consumed batch of domain events",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            ),
            rebuilds=counter(
                "state_rebuilds_total", "Redis state rebuilt from topics after it was lost"
            ),
            digest_items_unrestored=counter(
                "rebuild_digest_items_unrestored_total",
                "Digest items a state rebuild left out because their digest was already due",
            ),
        )
