"""docker-compose.yml: valid against the Compose Specification JSON Schema, the six
services wired with health checks and start-up conditions, the topic job generated
from the registry, every bind-mounted file present."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

from clarion_contracts.registry import TOPICS


def test_compose_file_matches_the_compose_specification(helpers: Any, compose: Any) -> None:
    schema = json.loads((helpers.SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = list(validator.iter_errors(compose))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]]


def test_compose_schema_rejects_a_malformed_file(helpers: Any, compose: Any) -> None:
    """The vendored schema is strict enough to catch a typo in a service."""
    schema = json.loads((helpers.SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["aggregator"]["healthchek"] = broken["services"]["aggregator"]["healthcheck"]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_infrastructure_services(compose: Any) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    for name in ("prometheus", "grafana", "jaeger"):
        assert name in services
    for name in ("kafka", "redis", "postgres", "mailpit"):
        assert "healthcheck" in services[name], name
    job = services["kafka-topics"]
    assert job["restart"] == "no"
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_clarion_services_are_wired(helpers: Any, compose: Any) -> None:
    services = compose["services"]
    for name, spec in helpers.CLARION_SERVICES.items():
        svc = services[name]
        assert svc["build"]["args"]["SERVICE"] == name
        assert "healthcheck" in svc, name
        conditions = {dep: cfg["condition"] for dep, cfg in svc["depends_on"].items()}
        assert conditions["kafka-topics"] == "service_completed_successfully"
        assert conditions["redis"] == "service_healthy"
        assert conditions["postgres"] == "service_healthy"
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert env["CLARION_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["CLARION_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["CLARION_REDIS_URL"].startswith("redis://redis:")
        assert env["CLARION_OTEL_EXPORTER"] == "otlp"
        assert env["CLARION_OTEL_ENDPOINT"].startswith("http://jaeger:4318/")
        assert env["CLARION_JWT_SECRET"]
        assert env[spec["prefix"] + "HTTP_HOST"] == "0.0.0.0"
        assert env[spec["prefix"] + "HTTP_PORT"] == str(spec["http"])
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
    assert services["email-worker"]["environment"]["CLARION_EMAIL_SMTP_HOST"] == "mailpit"
    assert services["email-worker"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    gateway = services["realtime-gateway"]["environment"]
    assert gateway["CLARION_GATEWAY_WS_HOST"] == "0.0.0.0"


def test_bind_mounted_files_exist(helpers: Any, compose: Any) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("./"):
                assert (helpers.ROOT / source).exists(), f"{name}: {source} missing"
        for env_file in svc.get("env_file", []):
            if isinstance(env_file, dict) and env_file.get("required") is False:
                continue
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (helpers.ROOT / path).exists(), f"{name}: {path} missing"


def test_topic_script_creates_every_registry_topic(helpers: Any, tmp_path: Path) -> None:
    """Run the generated script with a stand-in for kafka-topics.sh that records calls."""
    record = tmp_path / "calls.jsonl"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "KAFKA_TOPICS_BIN": str(fake),
        "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
        "REPLICATION_FACTOR": "3",
        "TOPIC_PREFIX": "t1.",
    }
    script = helpers.ROOT / "deploy" / "compose" / "create-topics.sh"
    result = subprocess.run(
        ["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    seen: dict[str, tuple[int, dict[str, str]]] = {}
    for argv in calls:
        assert "--if-not-exists" in argv
        assert "--create" in argv
        assert argv[argv.index("--bootstrap-server") + 1] == "broker:9092"
        assert argv[argv.index("--replication-factor") + 1] == "3"
        name = argv[argv.index("--topic") + 1]
        configs = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--config")
        seen[name] = (int(argv[argv.index("--partitions") + 1]), configs)
    expected = {}
    for spec in TOPICS:
        expected["t1." + spec.name] = (spec.partitions, spec.config())
        expected["t1." + spec.dlq] = (spec.partitions, spec.dlq_config())
    assert seen == expected


def test_topic_job_runs_the_generated_script(compose: Any) -> None:
    job = compose["services"]["kafka-topics"]
    assert any(v.startswith("./deploy/compose/create-topics.sh:") for v in job["volumes"])
    assert job["entrypoint"][-1] == "/clarion/create-topics.sh"
