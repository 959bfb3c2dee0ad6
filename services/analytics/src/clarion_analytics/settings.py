"""Settings of analytics, from ``CLARION_ANALYTICS_*`` environment variables.

Infrastructure fields (Kafka, PostgreSQL, JWT, topic prefix...) fall back to the
shared ``CLARION_*`` variables (see :mod:`clarion_kit.settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarion_kit.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    """Configuration of the analytics service (consumer + HTTP API + dashboard)."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_ANALYTICS_", extra="ignore", case_sensitive=False
    )

    service_name: str = "analytics"
    http_port: int = Field(default=8002, ge=0, le=65535)
    consumer_group: str = Field(default="analytics", description="Kafka consumer group id")
    consume: bool = Field(
        default=True, description="Consume the topics (false: serve the API over stored data)"
    )
    batch_max_records: int = Field(
        default=500, ge=1, le=10_000, description="Most records one consumer batch applies"
    )
    batch_timeout_ms: int = Field(
        default=50, ge=1, description="How long a batch waits to fill before it is applied"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts: earliest or latest"
    )
    migrate_on_start: bool = Field(
        default=True, description="Run the Alembic migrations at start-up"
    )
    create_topics: bool = Field(
        default=True, description="Create missing topics (and DLQs) at start-up"
    )
    processed_retention_days: int = Field(
        default=14, ge=1, description="How long dedup keys are kept (beyond topic retention)"
    )
    facts_retention_days: int = Field(
        default=35,
        ge=1,
        description=(
            "How long per-notification facts are kept: a read or click arriving later than "
            "this after creation is no longer counted"
        ),
    )
    admin_scope: str = Field(default="admin", description="JWT scope the analytics API requires")
