"""Settings: prefixed variables, shared ``CLARION_`` fallback, production guards, names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from clarion_contracts.registry import DOMAIN_EVENTS, PREFERENCES
from clarion_kit.settings import DEV_JWT_SECRET, SHARED_FIELDS, ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CLARION_INGEST_")

    service_name: str = "ingest-api"
    http_port: int = 8000
    max_batch: int = 100


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    s = IngestSettings()
    assert s.service_name == "ingest-api"
    assert s.environment == "development"
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.jwt_secret == DEV_JWT_SECRET
    assert s.topic_prefix == ""


def test_shared_variable_is_the_fallback(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_KAFKA_BOOTSTRAP_SERVERS", "shared:9092")
    clean_env.setenv("CLARION_REDIS_URL", "redis://shared:6379/1")
    clean_env.setenv("CLARION_TOPIC_PREFIX", "p1.")
    clean_env.setenv("CLARION_LOG_JSON", "false")
    s = IngestSettings()
    assert s.kafka_bootstrap_servers == "shared:9092"
    assert s.redis_url == "redis://shared:6379/1"
    assert s.topic_prefix == "p1."
    assert s.log_json is False


def test_prefixed_variable_wins_over_shared(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_KAFKA_BOOTSTRAP_SERVERS", "shared:9092")
    clean_env.setenv("CLARION_INGEST_KAFKA_BOOTSTRAP_SERVERS", "mine:9092")
    clean_env.setenv("CLARION_ENVIRONMENT", "test")
    clean_env.setenv("CLARION_INGEST_ENVIRONMENT", "staging")
    clean_env.setenv("CLARION_JWT_SECRET", "s" * 40)
    s = IngestSettings()
    assert s.kafka_bootstrap_servers == "mine:9092"
    assert s.environment == "staging"


def test_constructor_arguments_win_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_INGEST_REDIS_URL", "redis://env:6379/0")
    assert IngestSettings(redis_url="redis://arg:6379/0").redis_url == "redis://arg:6379/0"


def test_service_fields_do_not_fall_back(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_HTTP_PORT", "9999")
    clean_env.setenv("CLARION_SERVICE_NAME", "other")
    clean_env.setenv("CLARION_MAX_BATCH", "5")
    s = IngestSettings()
    assert s.http_port == 8000
    assert s.service_name == "ingest-api"
    assert s.max_batch == 100
    clean_env.setenv("CLARION_INGEST_MAX_BATCH", "7")
    assert IngestSettings().max_batch == 7


def test_shared_fields_exist_on_the_base() -> None:
    assert set(ServiceSettings.model_fields) >= SHARED_FIELDS


def test_other_services_prefix_is_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_AGGREGATOR_REDIS_URL", "redis://agg:6379/0")
    assert IngestSettings().redis_url == "redis://localhost:6379/0"


def test_production_refuses_dev_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="development JWT secret"):
        IngestSettings()
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        IngestSettings(jwt_secret="short")
    s = IngestSettings(jwt_secret="x" * 40)
    assert s.is_production


def test_production_asymmetric_needs_jwks(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="jwks_url"):
        IngestSettings(environment="production", jwt_algorithm="RS256", jwt_secret="x" * 40)
    s = IngestSettings(
        environment="production",
        jwt_algorithm="RS256",
        jwks_url="https://idp/jwks",
        jwt_secret="x" * 40,
    )
    assert s.jwks_url == "https://idp/jwks"


def test_secret_not_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    assert DEV_JWT_SECRET not in repr(IngestSettings())


def test_invalid_value_is_a_validation_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_OTEL_EXPORTER", "jaeger")
    with pytest.raises(ValidationError):
        IngestSettings()


def test_topic_names(clean_env: pytest.MonkeyPatch) -> None:
    s = IngestSettings(topic_prefix="t1.")
    assert s.topic(DOMAIN_EVENTS) == "t1.clarion.domain-events.v1"
    assert s.topic("raw") == "t1.raw"
    assert s.dlq(DOMAIN_EVENTS) == "t1.clarion.domain-events.v1.dlq"
    assert s.redis_key("dedup", "e1") == "clarion:dedup:e1"


def test_partitions_override(clean_env: pytest.MonkeyPatch) -> None:
    assert IngestSettings().partitions_for(PREFERENCES) == PREFERENCES.partitions
    clean_env.setenv("CLARION_KAFKA_PARTITIONS_OVERRIDE", "2")
    assert IngestSettings().partitions_for(PREFERENCES) == 2
