"""email-worker settings: environment variables prefixed ``CLARION_EMAIL_``.

Infrastructure settings (Kafka, Redis, prefixes, JWT secret...) fall back to the
shared ``CLARION_*`` variables, see :class:`clarion_kit.settings.ServiceSettings`.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from clarion_email.domain.retry import BackoffPolicy
from clarion_kit.settings import ServiceSettings


class EmailSettings(ServiceSettings):
    """Settings of email-worker.

    ``smtp_security``: ``none`` (plain, the dev sink), ``starttls`` (RFC 3207
    upgrade on the submission port 587) or ``tls`` (implicit TLS, port 465).
    ``domain_rate_overrides`` maps a recipient domain to ``"rate/burst"``, e.g.
    ``{"gmail.com": "5/20"}`` (JSON in the environment variable).
    """

    model_config = SettingsConfigDict(env_prefix="CLARION_EMAIL_", extra="ignore")

    service_name: str = "email-worker"
    http_port: int = Field(default=8005, ge=0, le=65535)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_validate_certs: bool = True

    from_address: str = "notifications@clarion.local"
    from_name: str = "Clarion"
    message_id_domain: str = Field(
        default="clarion.local", description="Right-hand side of generated Message-IDs"
    )
    public_api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public base URL of ingest-api (one-click unsubscribe target)",
    )
    unsubscribe_token_ttl_seconds: int = Field(
        default=60 * 86400,
        ge=3600,
        description=(
            "Lifetime of the unsubscribe token in each email, in seconds; at most the shared "
            "unsubscribe_token_max_lifetime_seconds that ingest-api accepts"
        ),
    )
    product_name: str = "Clarion"
    templates_dir: str | None = Field(
        default=None, description="A folder of templates searched before the built-in ones"
    )

    domain_rate_per_second: float = Field(default=10.0, gt=0)
    domain_burst: int = Field(default=20, ge=1)
    domain_rate_overrides: dict[str, str] = Field(default_factory=dict)
    max_inline_rate_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Wait this long at most for a domain's token; longer waits are scheduled",
    )

    max_attempts: int = Field(default=6, ge=1, description="SMTP attempts before the DLQ")
    backoff_base_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=900.0, gt=0)
    profile_wait_attempts: int = Field(
        default=3, ge=1, description="Tries to find a not-yet-materialised profile"
    )

    schedule_poll_seconds: float = Field(default=0.5, gt=0)
    send_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A claim on a request in the send log; longer than one SMTP transaction",
    )
    send_log_ttl_seconds: int = Field(default=30 * 86400, ge=3600)

    @model_validator(mode="after")
    def _unsubscribe_ttl_within_accepted_lifetime(self) -> Self:
        if self.unsubscribe_token_ttl_seconds > self.unsubscribe_token_max_lifetime_seconds:
            raise ValueError(
                "unsubscribe_token_ttl_seconds exceeds unsubscribe_token_max_lifetime_seconds: "
                "ingest-api would refuse every unsubscribe link"
            )
        return self

    def backoff(self) -> BackoffPolicy:
        """The retry policy these settings describe."""
        return BackoffPolicy(
            max_attempts=self.max_attempts,
            base_seconds=self.backoff_base_seconds,
            max_seconds=self.backoff_max_seconds,
        )

    def rate_overrides(self) -> dict[str, tuple[float, int]]:
        """``domain_rate_overrides`` parsed to ``{domain: (rate, burst)}``.

        Raises:
            ValueError: an entry is not ``"<rate>/<burst>"``.
        """
        out: dict[str, tuple[float, int]] = {}
        for domain, spec in self.domain_rate_overrides.items():
            rate, sep, burst = spec.partition("/")
            if not sep:
                raise ValueError(f"rate override for {domain} must be 'rate/burst'")
            out[domain.lower()] = (float(rate), int(burst))
        return out
