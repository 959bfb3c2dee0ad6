"""Settings of ingest-api, read from ``CLARION_INGEST_*`` environment variables.

Infrastructure fields (Kafka, Redis, PostgreSQL, JWT...) fall back to the shared
``CLARION_*`` variables (see :mod:`clarion_kit.settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarion_kit.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Configuration of the ingest-api service.

    Limits are in bytes, seconds and requests; ``api_key_hashes`` holds the
    lowercase hex SHA-256 digests of the producer API keys (never the keys).
    """

    model_config = SettingsConfigDict(
        env_prefix="CLARION_INGEST_", extra="ignore", case_sensitive=False
    )

    service_name: str = "ingest-api"
    http_port: int = Field(default=8000, ge=0, le=65535)

    api_key_hashes: list[str] = Field(
        default_factory=list, description="SHA-256 hex digests of accepted producer API keys"
    )
    max_batch_events: int = Field(default=500, ge=1, le=10_000)
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted (413 beyond)"
    )
    send_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long the outbox relay waits for the broker's acknowledgement of a batch",
    )
    store_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a write may wait for PostgreSQL before 503"
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 when PostgreSQL is unavailable"
    )
    store_pool_size: int = Field(
        default=12,
        ge=1,
        le=100,
        description="PostgreSQL connections kept open for POST /v1/events (8 more on bursts)",
    )

    outbox_relay: bool = Field(
        default=True,
        description="Run the outbox relay in this process (one replica relays at a time)",
    )
    outbox_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most outbox records one relay round produces"
    )
    outbox_poll_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Relay poll when no notification arrives; also the standby's lock retry",
    )
    outbox_retention_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long relayed rows are kept: the event_id idempotency window",
    )
    outbox_stats_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the outbox gauges are refreshed"
    )

    rate_limit_strategy: Literal["fixed", "sliding"] = "sliding"
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    # A producer key is a trusted backend, not a person: the budget must cover the
    # product's sustained ingest (500 single POSTs/s, profile imports) with headroom;
    # 6,000 a minute would cap one producer at 100 requests/s.
    rate_limit_api_key: int = Field(
        default=120_000, ge=0, description="Requests per window per API key (0: unlimited)"
    )
    rate_limit_user: int = Field(
        default=600, ge=0, description="Requests per window per end user (0: unlimited)"
    )

    api_key_failure_limit: int = Field(
        default=20,
        ge=0,
        description=(
            "Failed API-key attempts per window per client IP before every API-key request "
            "of that IP answers 429 until the window passes (0: unlimited)"
        ),
    )

    inbox_page_max: int = Field(default=100, ge=1, le=1000)
    inbox_page_default: int = Field(default=20, ge=1, le=1000)
    batch_delete_max: int = Field(default=500, ge=1, le=10_000)
    counts_cache_ttl_seconds: int = Field(default=3600, ge=1)

    consumer_group: str = Field(
        default="ingest-api", description="Kafka consumer group of the inbox read model"
    )
    consume_notifications: bool = Field(
        default=True, description="Materialise the inbox from clarion.notifications.v1"
    )
    consume_delivery_status: bool = Field(
        default=True, description="Record per-channel delivery on inbox rows"
    )
    batch_max_records: int = Field(
        default=500, ge=1, le=10_000, description="Most records one consumer batch applies"
    )
    batch_timeout_ms: int = Field(
        default=5,
        ge=1,
        description="How long a consumer waits for records before polling again (ms)",
    )
    run_migrations: bool = Field(default=True, description="Run alembic migrations at start-up")
    create_topics: bool = Field(default=True, description="Create missing topics at start-up")

    vapid_public_key: str | None = Field(
        default=None, description="Web Push VAPID public key (base64url), served to browsers"
    )
    public_gateway_url: str = "ws://localhost:8001/v1/ws"
    serve_demo: bool = Field(
        default=True, description="Serve the demo inbox page at / (development only)"
    )
