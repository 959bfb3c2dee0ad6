"""Settings shared by every Clarion service, read from environment variables.

Each service subclasses :class:`ServiceSettings` with its own prefix::

    class IngestSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="CLARION_INGEST_")
        service_name: str = "ingest-api"
        http_port: int = 8000

Infrastructure fields (:data:`SHARED_FIELDS`: Kafka, Redis, PostgreSQL, topic and
Redis prefixes, environment, JWT, OpenTelemetry, logging) are read from the
service-prefixed variable first (``CLARION_INGEST_REDIS_URL``) and fall back to the
unprefixed shared one (``CLARION_REDIS_URL``), so one deployment-wide value serves all
services while one service can still override it. Precedence, highest first:
constructor arguments, prefixed variables, shared ``CLARION_`` variables, ``.env``
file (when a subclass configures one), secrets directory, field defaults.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from clarion_contracts.registry import DLQ_SUFFIX, TopicSpec

SHARED_ENV_PREFIX = "CLARION_"
"""Prefix of the deployment-wide variables every service falls back to."""

DEV_JWT_SECRET = "clarion-dev-secret-change-me-0123456789abcdef"
"""The public development JWT signing secret; refused outside :data:`DEV_ENVIRONMENTS`."""

DEV_ENVIRONMENTS: frozenset[str] = frozenset({"development", "test"})
"""Environments where the public development credentials (:data:`DEV_JWT_SECRET`, the
development API key) and the interactive API docs are allowed."""

SHARED_FIELDS: frozenset[str] = frozenset(
    {
        "environment",
        "kafka_bootstrap_servers",
        "kafka_partitions_override",
        "kafka_replication_factor",
        "kafka_session_timeout_ms",
        "kafka_fetch_max_wait_ms",
        "kafka_background_fetch_max_wait_ms",
        "kafka_commit_interval_ms",
        "kafka_on_data_loss",
        "kafka_gap_confirm_ms",
        "redis_url",
        "database_url",
        "topic_prefix",
        "redis_prefix",
        "jwt_secret",
        "jwt_algorithm",
        "jwt_issuer",
        "jwt_audience",
        "jwks_url",
        "jwt_max_lifetime_seconds",
        "unsubscribe_token_max_lifetime_seconds",
        "api_docs_enabled",
        "otel_exporter",
        "otel_endpoint",
        "otel_sample_ratio",
        "log_level",
        "log_json",
    }
)
"""Fields that fall back to the unprefixed ``CLARION_<FIELD>`` variable."""

Environment = Literal["development", "test", "staging", "production"]


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SharedEnvSettingsSource(EnvSettingsSource):
    """Reads the :data:`SHARED_FIELDS` of a settings class from ``CLARION_<FIELD>`` variables.

    Placed after the class's own (prefixed) environment source, so a prefixed
    variable wins and the shared one is the fallback. Only shared fields are
    returned: ``CLARION_HTTP_PORT`` must not configure every service's port.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix=SHARED_ENV_PREFIX, case_sensitive=False)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the field's value from the environment, skipping non-shared fields."""
        if field_name not in SHARED_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__call__().items() if k in SHARED_FIELDS}


class ServiceSettings(BaseSettings):
    """Base settings of a Clarion service (pydantic-settings, environment variables).

    The base class reads ``CLARION_<FIELD>``; subclasses set their own ``env_prefix``
    and inherit the shared fallback described in the module docstring.

    Raises:
        pydantic.ValidationError: on construction, for malformed values or, when
            ``environment`` is not in :data:`DEV_ENVIRONMENTS`, for the public
            development JWT secret (whatever the algorithm: it also keys unsubscribe
            tokens), an HMAC secret under 32 bytes, or an asymmetric algorithm
            without ``jwks_url``.
    """

    model_config = SettingsConfigDict(
        env_prefix=SHARED_ENV_PREFIX, extra="ignore", case_sensitive=False
    )

    environment: Environment = "development"
    service_name: str = "clarion"
    instance_id: str = Field(default_factory=_default_instance_id)

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_partitions_override: int | None = Field(
        default=None,
        ge=1,
        description="Create every topic with this many partitions (development stacks)",
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics created at start-up"
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description=(
            "Consumer group session timeout. Apache Kafka refuses values below its "
            "group.min.session.timeout.ms (6000 by default); the embedded broker lets a "
            "new member join after about half of it, so test stacks use less"
        ),
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description=(
            "Fetch long-poll of consumers on the live path (domain events, notifications, "
            "inbox events), in ms. The embedded broker answers an empty fetch only when "
            "this wait ends, so it bounds the latency each hop adds"
        ),
    )
    kafka_background_fetch_max_wait_ms: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description=(
            "Fetch long-poll of consumers off the live path (state topics, delivery "
            "status, push and email requests, analytics), in ms: longer waits mean fewer "
            "empty fetches for the broker and the services to answer"
        ),
    )
    kafka_commit_interval_ms: int = Field(
        default=250,
        ge=0,
        le=60_000,
        description=(
            "Consumers commit the offsets of processed batches at most once per this many "
            "ms (0: after every batch). A crash or rebalance redelivers at most this much, "
            "which idempotent consumers absorb; each commit is a broker round trip"
        ),
    )
    kafka_on_data_loss: Literal["halt", "reset"] = Field(
        default="reset",
        description=(
            "What consumers do with a partition whose log lost records (the broker "
            "restarted empty, the topic was recreated, the end offset went backwards): "
            "'reset' resumes from the new log's earliest offset, 'halt' stops consuming "
            "the partition. Either way readiness fails and broker_data_loss_total counts it"
        ),
    )
    kafka_gap_confirm_ms: int = Field(
        default=500,
        ge=1,
        le=60_000,
        description=(
            "A gap in a partition's offsets is re-fetched for this long (ms) before it is "
            "accepted as legitimate (compaction, transaction markers); records after it "
            "are held back meanwhile"
        ),
    )
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "postgresql+asyncpg://clarion:clarion@localhost:5432/clarion"
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name (test isolation, multi-tenant)"
    )
    redis_prefix: str = Field(default="clarion:", description="Prepended to every Redis key")
    redis_max_connections: int = Field(
        default=100,
        ge=2,
        description=(
            "Connections the service's Redis pool opens at most; a caller finding them all "
            "busy waits for one (redis_pool_timeout_seconds) instead of failing"
        ),
    )
    redis_pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for a free pooled Redis connection before an error",
    )

    log_level: str = "INFO"
    log_json: bool = True

    otel_exporter: Literal["none", "otlp", "console"] = "none"
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces"
    )
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    jwt_secret: str = Field(default=DEV_JWT_SECRET, repr=False)
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwks_url: str | None = None
    jwt_max_lifetime_seconds: int = Field(
        default=86_400,
        ge=60,
        description=(
            "Longest accepted lifetime of an end-user or admin access token, in seconds: "
            "exp - iat, or exp - now when the token has no iat"
        ),
    )
    unsubscribe_token_max_lifetime_seconds: int = Field(
        default=90 * 86_400,
        ge=3600,
        description="Longest accepted lifetime of an unsubscribe token, in seconds",
    )
    api_docs_enabled: bool | None = Field(
        default=None,
        description="Serve /docs, /redoc and /openapi.json (unset: only in development and test)",
    )

    retry_max_attempts: int = Field(
        default=3, ge=1, description="Handler runs per record before it goes to the DLQ"
    )
    retry_initial_backoff_seconds: float = Field(default=0.1, ge=0.0)
    retry_max_backoff_seconds: float = Field(default=5.0, ge=0.0)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Insert the shared ``CLARION_`` source right after the prefixed environment."""
        return (
            init_settings,
            env_settings,
            SharedEnvSettingsSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _refuse_dev_credentials(self) -> Self:
        if self.allows_dev_credentials:
            return self
        if self.jwt_secret == DEV_JWT_SECRET:
            raise ValueError(
                f"the public development JWT secret is refused in {self.environment!r} "
                "(it signs tokens, unsubscribe links and the development API key): "
                "set CLARION_JWT_SECRET"
            )
        if self.jwt_algorithm.startswith("HS"):
            if len(self.jwt_secret.encode()) < 32:
                raise ValueError("jwt_secret must be at least 32 bytes for HMAC (RFC 7518 §3.2)")
        elif not self.jwks_url:
            raise ValueError(f"{self.jwt_algorithm} outside development needs jwks_url")
        return self

    @property
    def allows_dev_credentials(self) -> bool:
        """True in :data:`DEV_ENVIRONMENTS`, where the public development credentials work."""
        return self.environment in DEV_ENVIRONMENTS

    @property
    def serves_api_docs(self) -> bool:
        """Whether HTTP services serve ``/docs``, ``/redoc`` and ``/openapi.json``.

        ``api_docs_enabled`` when set, else only in :data:`DEV_ENVIRONMENTS`: the
        schema maps every endpoint for an attacker.
        """
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.allows_dev_credentials

    @property
    def is_production(self) -> bool:
        """True when ``environment == "production"``."""
        return self.environment == "production"

    def topic(self, spec_or_name: TopicSpec | str) -> str:
        """Runtime name of a topic: ``topic_prefix + spec.name``.

        Args:
            spec_or_name: a registry :class:`TopicSpec` or a bare topic name.
        """
        name = spec_or_name.name if isinstance(spec_or_name, TopicSpec) else spec_or_name
        return self.topic_prefix + name

    def dlq(self, spec_or_name: TopicSpec | str) -> str:
        """Runtime name of a topic's dead-letter twin: ``topic(spec) + ".dlq"``."""
        return self.topic(spec_or_name) + DLQ_SUFFIX

    def redis_key(self, *parts: str) -> str:
        """A namespaced Redis key: ``redis_prefix`` + parts joined by ``:``."""
        return self.redis_prefix + ":".join(parts)

    def partitions_for(self, spec: TopicSpec) -> int:
        """Partition count to create ``spec`` with (``kafka_partitions_override`` wins)."""
        return self.kafka_partitions_override or spec.partitions
