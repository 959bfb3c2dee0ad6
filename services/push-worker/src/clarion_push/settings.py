"""push-worker settings: environment variables prefixed ``CLARION_PUSH_``.

Infrastructure settings (Kafka, Redis, topic/Redis prefixes...) fall back to the
shared ``CLARION_*`` variables, see :class:`clarion_kit.settings.ServiceSettings`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarion_kit.settings import ServiceSettings
from clarion_push.domain.retry import BackoffPolicy


class PushSettings(ServiceSettings):
    """Settings of push-worker.

    ``vapid_private_key`` is the application server's P-256 key as PEM or as the
    base64url raw 32-byte scalar (``clarion vapid generate`` prints both forms);
    browsers subscribed with the matching public key as ``applicationServerKey``.
    """

    model_config = SettingsConfigDict(env_prefix="CLARION_PUSH_", extra="ignore")

    service_name: str = "push-worker"
    http_port: int = Field(default=8004, ge=0, le=65535)

    vapid_private_key: str | None = Field(
        default=None,
        repr=False,
        description="VAPID private key (PEM or base64url raw); generated per process if unset "
        "outside production",
    )
    vapid_subject: str = Field(
        default="mailto:push@clarion.local",
        description="RFC 8292 `sub` claim: a mailto: or https: contact of the operator",
    )

    max_in_flight_per_host: int = Field(
        default=32, ge=1, description="Concurrent POSTs to one push service host"
    )
    max_concurrent_requests: int = Field(
        default=256, ge=1, description="Push requests being delivered at once"
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, description="Attempts before the DLQ")
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    max_retry_after_seconds: float = Field(
        default=3600.0, gt=0, description="Upper bound honoured for a Retry-After header"
    )
    schedule_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often deferred and retried deliveries are polled"
    )
    schedule_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed scheduled job reappears after this long"
    )
    schedule_batch: int = Field(default=100, ge=1)
    request_batch_max_records: int = Field(
        default=500,
        ge=1,
        description="Push requests handed to the handler per consumer batch at most",
    )
    sent_ttl_seconds: int = Field(
        default=7 * 86400,
        ge=60,
        description="How long a delivered (request, subscription) "
        "pair is remembered against redelivery",
    )

    def backoff(self) -> BackoffPolicy:
        """The retry policy these settings describe."""
        return BackoffPolicy(
            max_attempts=self.max_attempts,
            base_seconds=self.backoff_base_seconds,
            max_seconds=self.backoff_max_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
        )
