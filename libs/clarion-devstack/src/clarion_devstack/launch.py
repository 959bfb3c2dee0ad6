"""Launch all six Clarion services (and the development mail sink,
:mod:`clarion_devstack.mailsink`) as processes.

Shared by ``clarion run``, the end-to-end tests and ``clarion bench``: one
place that knows each service's console script, its ports and the settings
that wire it to the stack and to the other services.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from clarion_devstack.stack import StackInfo
from clarion_devstack.supervisor import ServiceSpec


@dataclass(frozen=True)
class Ports:
    """Loopback ports of every process (the documented defaults)."""

    ingest: int = 8000
    gateway: int = 8001
    gateway_http: int = 8011
    analytics: int = 8002
    aggregator: int = 8003
    push: int = 8004
    email: int = 8005
    smtp: int = 8025
    mail_web: int = 8026
    gateway_b: int = 8021
    gateway_b_http: int = 8031

    @classmethod
    def free(cls) -> Ports:
        """Ports the OS says are free right now (for tests running beside a dev stack)."""
        socks = []
        try:
            for _ in fields(cls):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                socks.append(sock)
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for sock in socks:
                sock.close()


@dataclass
class LaunchConfig:
    """What to launch and how.

    Attributes:
        info: the stack's connection settings.
        ports: where each process listens.
        state_dir: logs and generated keys (``logs/``, ``vapid.json``, ``mail/``).
        environment: ``development`` (demo page, dev tokens) or ``test``.
        topic_prefix / redis_prefix: isolation of one run from another on shared servers.
        gateways: 1, or 2 to run a second realtime-gateway instance (same consumer group).
        extra_env: more variables for every process.
    """

    info: StackInfo
    ports: Ports = field(default_factory=Ports)
    state_dir: Path = Path(".clarion/run")
    environment: str = "development"
    topic_prefix: str = ""
    redis_prefix: str = "clarion:"
    gateways: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)


def _script(name: str) -> str:
    """Path of a console script installed beside this interpreter."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} is not installed; run `make install`")
    return found


def vapid_keys(state_dir: Path) -> dict[str, str]:
    """Development VAPID keys (RFC 8292), generated once and kept in ``vapid.json``.

    Returns:
        ``{"private_key": base64url raw P-256 private key,
        "public_key": base64url uncompressed point (the applicationServerKey)}``.
    """
    path = state_dir / "vapid.json"
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    import base64

    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid02

    vapid = Vapid02()
    vapid.generate_keys()
    private_number = vapid.private_key.private_numbers().private_value
    raw_private = private_number.to_bytes(32, "big")
    raw_public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    keys = {"private_key": b64(raw_private), "public_key": b64(raw_public)}
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys))
    return keys


OFF_PATH_NICE = 10
"""CPU priority increment of the services off the live path (push-worker, email-worker,
analytics, the mail sink) when one machine runs everything: domain event -> inbox ->
WebSocket frame goes first, as a Kubernetes PriorityClass or CPU requests would
arrange it; the others catch up with their lag."""


def service_specs(config: LaunchConfig) -> list[ServiceSpec]:
    """The processes of a full Clarion, in start order (sink first, ingest-api last).

    Push-worker, email-worker, analytics and the mail sink run at
    :data:`OFF_PATH_NICE`."""
    p = config.ports
    keys = vapid_keys(config.state_dir)
    common = {
        **config.info.env(),
        "CLARION_ENVIRONMENT": config.environment,
        "CLARION_TOPIC_PREFIX": config.topic_prefix,
        "CLARION_REDIS_PREFIX": config.redis_prefix,
        "CLARION_LOG_JSON": "true",
        # One partition per topic: one instance of each service consumes everything, and
        # the embedded broker's cost grows with partitions (fixed work per partition in
        # every fetch) and with stored batches (each fetch lists every batch stored in
        # the partition; a produce to N partitions stores N batches).
        "CLARION_KAFKA_PARTITIONS_OVERRIDE": "1",
        # Tansu lets a new member join after about half the session timeout.
        "CLARION_KAFKA_SESSION_TIMEOUT_MS": "3000",
        **config.extra_env,
    }
    api = f"http://127.0.0.1:{p.ingest}"

    def spec(name: str, script: str, port: int, env: dict[str, str], nice: int = 0) -> ServiceSpec:
        return ServiceSpec(
            name=name,
            argv=[_script(script)],
            env={**common, **env},
            ready_url=f"http://127.0.0.1:{port}/readyz",
            nice=nice,
        )

    specs = [
        ServiceSpec(
            name="mail-sink",
            argv=[
                _script("clarion-mail-sink"),
                "--smtp-port",
                str(p.smtp),
                "--web-port",
                str(p.mail_web),
                "--maildir",
                str(config.state_dir / "mail"),
            ],
            env=common,
            ready_url=None,
            nice=OFF_PATH_NICE,
        ),
        spec(
            "aggregator",
            "clarion-aggregator",
            p.aggregator,
            {"CLARION_AGGREGATOR_HTTP_PORT": str(p.aggregator)},
        ),
        spec(
            "realtime-gateway",
            "clarion-gateway",
            p.gateway_http,
            {
                "CLARION_GATEWAY_WS_PORT": str(p.gateway),
                "CLARION_GATEWAY_HTTP_PORT": str(p.gateway_http),
                "CLARION_GATEWAY_KAFKA_AUTO_OFFSET_RESET": "earliest",
                # Every local client (browser, replay, benchmark) is one address.
                "CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP": "100000",
            },
        ),
        spec(
            "push-worker",
            "clarion-push-worker",
            p.push,
            {
                "CLARION_PUSH_HTTP_PORT": str(p.push),
                "CLARION_PUSH_VAPID_PRIVATE_KEY": keys["private_key"],
            },
            OFF_PATH_NICE,
        ),
        spec(
            "email-worker",
            "clarion-email-worker",
            p.email,
            {
                "CLARION_EMAIL_HTTP_PORT": str(p.email),
                "CLARION_EMAIL_SMTP_PORT": str(p.smtp),
                "CLARION_EMAIL_PUBLIC_API_URL": api,
            },
            OFF_PATH_NICE,
        ),
        spec(
            "analytics",
            "clarion-analytics",
            p.analytics,
            {"CLARION_ANALYTICS_HTTP_PORT": str(p.analytics)},
            OFF_PATH_NICE,
        ),
        spec(
            "ingest-api",
            "clarion-ingest-api",
            p.ingest,
            {
                "CLARION_INGEST_HTTP_PORT": str(p.ingest),
                "CLARION_INGEST_VAPID_PUBLIC_KEY": keys["public_key"],
                "CLARION_INGEST_PUBLIC_GATEWAY_URL": f"ws://127.0.0.1:{p.gateway}/v1/ws",
            },
        ),
    ]
    if config.gateways > 1:
        specs.insert(
            3,
            spec(
                "realtime-gateway-b",
                "clarion-gateway",
                p.gateway_b_http,
                {
                    "CLARION_GATEWAY_WS_PORT": str(p.gateway_b),
                    "CLARION_GATEWAY_HTTP_PORT": str(p.gateway_b_http),
                    "CLARION_GATEWAY_KAFKA_AUTO_OFFSET_RESET": "earliest",
                    "CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP": "100000",
                },
            ),
        )
    return specs


def urls(ports: Ports) -> dict[str, str]:
    """What a person opens: API, gateway, demo inbox, dashboard, sent mail."""
    return {
        "API (OpenAPI docs)": f"http://127.0.0.1:{ports.ingest}/docs",
        "Demo inbox": f"http://127.0.0.1:{ports.ingest}/",
        "WebSocket gateway": f"ws://127.0.0.1:{ports.gateway}/v1/ws",
        "Analytics dashboard": f"http://127.0.0.1:{ports.analytics}/",
        "Sent mail": f"http://127.0.0.1:{ports.mail_web}/",
        "Metrics (ingest-api)": f"http://127.0.0.1:{ports.ingest}/metrics",
    }
