"""Settings of the aggregator, from ``CLARION_AGGREGATOR_*`` environment variables.

Infrastructure fields (Kafka, Redis, prefixes...) fall back to the shared
``CLARION_*`` variables (see :mod:`clarion_kit.settings`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarion_kit.settings import ServiceSettings


class AggregatorSettings(ServiceSettings):
    """Configuration of the aggregator service.

    Attributes:
        consumer_group: consumer group of the domain-event subscriber; the group id
            used is ``topic_prefix + consumer_group`` (``aggregator`` by default).
        rules_path: aggregation rules YAML (``None``: the packaged ``rules.yaml``).
        templates_dir: templates directory (``None``: the packaged templates).
        push_throttle_seconds: at most one push (or immediate email) per
            notification per this many seconds while it grows in its window.
        push_ttl_seconds: Web Push TTL of push requests (RFC 8030 §5.2).
        state_ttl_seconds: lifetime of aggregation groups and dedup keys in Redis.
        batch_max_records: most records consumed per batch (a batch shares its Redis
            round trips and one round of broker acknowledgements).
        fanout_batch_size: recipients per batch when expanding an audience.
        digest_interval_seconds: how often the digest flusher looks for due digests.
        digest_lease_seconds: how long a claimed digest is reserved before another
            instance may send it again (crash safety).
        rebuild_lookback_seconds: how far back (record time) a rebuild reads
            ``clarion.notifications.v1``; longer than the longest aggregation window
            plus the consumer lag that may be redelivered.
        rebuild_settle_seconds: wait before a rebuild takes the topics' ends, so that
            records other instances were producing when Redis was lost are included.
        rebuild_lock_seconds: lease of the rebuild lock (renewed while reading).
    """

    model_config = SettingsConfigDict(
        env_prefix="CLARION_AGGREGATOR_", extra="ignore", case_sensitive=False
    )

    service_name: str = "aggregator"
    http_port: int = Field(default=8003, ge=0, le=65535)
    consumer_group: str = "aggregator"

    rules_path: str | None = None
    templates_dir: str | None = None
    push_throttle_seconds: float = Field(default=300.0, ge=0)
    push_ttl_seconds: int = Field(default=86400, ge=0)
    state_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    batch_max_records: int = Field(default=2000, ge=1)
    fanout_batch_size: int = Field(default=2000, ge=1)
    digest_interval_seconds: float = Field(default=5.0, gt=0)
    digest_lease_seconds: float = Field(default=120.0, gt=0)
    rebuild_lookback_seconds: float = Field(
        default=3 * 3600.0,
        gt=0,
        description="How far back a Redis state rebuild reads the notifications topic",
    )
    rebuild_settle_seconds: float = Field(
        default=2.0, ge=0, description="Wait before a rebuild takes the topics' ends"
    )
    rebuild_lock_seconds: float = Field(
        default=60.0, gt=0, description="Lease of the rebuild lock (renewed while reading)"
    )
