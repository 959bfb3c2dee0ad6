"""Settings of the realtime-gateway, read from ``CLARION_GATEWAY_*`` environment variables.

Infrastructure fields fall back to the shared ``CLARION_*`` variables (see
:mod:`clarion_kit.settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, IPvAnyNetwork
from pydantic_settings import SettingsConfigDict

from clarion_kit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Everything the gateway can be configured with; times are seconds unless named ``_ms``."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_GATEWAY_", extra="ignore", case_sensitive=False
    )

    service_name: str = "realtime-gateway"
    consumer_group: str = "realtime-gateway"

    ws_host: str = "127.0.0.1"
    ws_port: int = Field(default=8001, ge=0, le=65535, description="WebSocket port (/v1/ws)")
    http_port: int = Field(default=8011, ge=0, le=65535, description="/healthz /readyz /metrics")

    connect_timeout: float = Field(default=5.0, gt=0, description="Time to send `connect`")
    ping_interval: float | None = Field(default=20.0, description="WebSocket ping period")
    ping_timeout: float | None = Field(default=20.0, description="Pong wait before closing")
    close_timeout: float = Field(default=5.0, gt=0, description="Closing handshake wait")
    idle_timeout: float = Field(
        default=300.0, gt=0, description="Close a session after this long without client data"
    )
    compression: Literal["deflate"] | None = Field(
        default=None, description="permessage-deflate (RFC 7692) when 'deflate'; off by default"
    )
    max_message_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="Largest client message in bytes; a larger one closes with 1009",
    )
    max_sessions_per_user: int = Field(
        default=20, ge=1, description="Sessions one user may hold on one instance (then 1008)"
    )
    max_connections_per_ip: int = Field(
        default=200,
        ge=1,
        description="Connections one client address may hold on one instance (then 1008)",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Reverse proxies whose X-Forwarded-For names the client (JSON list of CIDRs)",
    )
    frame_rate: float = Field(
        default=5.0, gt=0, description="Client frames per second allowed on average (then 1008)"
    )
    frame_burst: int = Field(default=20, ge=1, description="Client frames allowed at once")
    send_queue_size: int = Field(
        default=256, ge=1, description="Frames queued per session before it is a slow consumer"
    )
    write_limit: int = Field(default=64 * 1024, description="Transport buffer high-water mark")
    socket_send_buffer: int | None = Field(
        default=None,
        description="SO_SNDBUF of session sockets in bytes (None: the kernel's autotuning)",
    )

    history_size: int = Field(default=200, ge=1, description="Entries kept per user (MAXLEN)")
    history_ttl: int = Field(
        default=24 * 3600, ge=1, description="History expires this long after the last entry"
    )
    meta_ttl: int = Field(
        default=7 * 24 * 3600, ge=1, description="Epoch/seq/unread/dedup keys expire after this"
    )

    kafka_auto_offset_reset: Literal["earliest", "latest"] = "latest"
    kafka_max_batch: int = Field(default=500, ge=1)

    presence_debounce: float = Field(
        default=2.0, ge=0, description="A user's status must hold this long before it is published"
    )
    heartbeat_interval: float = Field(default=5.0, gt=0)
    heartbeat_ttl: int = Field(
        default=15, ge=1, description="An instance without heartbeat this long is dead"
    )
    sweep_interval: float = Field(default=5.0, gt=0)

    delivery_status_dedup_ttl: int = Field(default=7 * 24 * 3600, ge=1)
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
