"""Configuration and connection settings of the development stack.

:class:`StackConfig` says how to start a :class:`~clarion_devstack.stack.Stack`;
:class:`StackInfo` is what a running one hands out: the addresses of its Kafka-protocol
broker, Redis and PostgreSQL, also as the shared ``CLARION_*`` environment variables
every service reads (rendered as shell ``export`` lines or a ``.env`` file).

A stack keeps its files under one data directory, ``<project>/.clarion/devstack`` by
default (``$CLARION_DEVSTACK_DIR`` overrides it), locked with an exclusive ``flock`` on
``<dir>/.lock`` while the stack runs; :func:`remove_stale_data_dirs` clears the
directories of stacks whose process was killed.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clarion_devstack.ports import LOOPBACK, split_host_port

ENV_KAFKA = "CLARION_KAFKA_BOOTSTRAP_SERVERS"
ENV_REDIS = "CLARION_REDIS_URL"
ENV_DATABASE = "CLARION_DATABASE_URL"
#: Overrides the default data directory ``<project>/.clarion/devstack``.
ENV_DATA_DIR = "CLARION_DEVSTACK_DIR"

KAFKA = "kafka"
REDIS = "redis"
POSTGRES = "postgres"
SERVERS: tuple[str, ...] = (KAFKA, REDIS, POSTGRES)
SERVER_ENV: Mapping[str, str] = {KAFKA: ENV_KAFKA, REDIS: ENV_REDIS, POSTGRES: ENV_DATABASE}


class StackError(RuntimeError):
    """The stack could not be started (a server failed, timed out or is missing)."""


@dataclass(frozen=True)
class StackInfo:
    """Connection settings of a running stack.

    Attributes:
        kafka_bootstrap_servers: ``"127.0.0.1:<port>"``, Kafka protocol bootstrap list.
        redis_url: ``"redis://127.0.0.1:<port>/0"``.
        database_url: SQLAlchemy URL ``"postgresql+asyncpg://user:pw@127.0.0.1:<port>/db"``.
    """

    kafka_bootstrap_servers: str
    redis_url: str
    database_url: str

    def env(self) -> dict[str, str]:
        """Return the settings as the shared Clarion environment variables.

        Returns:
            ``{"CLARION_KAFKA_BOOTSTRAP_SERVERS": ..., "CLARION_REDIS_URL": ...,
            "CLARION_DATABASE_URL": ...}``, read by every service's settings.
        """
        return {
            ENV_KAFKA: self.kafka_bootstrap_servers,
            ENV_REDIS: self.redis_url,
            ENV_DATABASE: self.database_url,
        }

    def to_dict(self) -> dict[str, str]:
        """Return the three settings keyed by attribute name (for JSON state files)."""
        return {
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "redis_url": self.redis_url,
            "database_url": self.database_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StackInfo:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            KeyError: when a setting is missing.
        """
        return cls(
            kafka_bootstrap_servers=str(data["kafka_bootstrap_servers"]),
            redis_url=str(data["redis_url"]),
            database_url=str(data["database_url"]),
        )


def render_exports(env: Mapping[str, str]) -> str:
    """Render variables as POSIX shell ``export`` lines, values quoted for the shell.

    Args:
        env: variable name to value.

    Returns:
        One ``export NAME=value`` line per variable, sorted by name, ending in a newline
        (empty string for an empty mapping), suitable for ``eval "$(...)"``.
    """
    return "".join(f"export {key}={shlex.quote(env[key])}\n" for key in sorted(env))


def render_env_file(env: Mapping[str, str]) -> str:
    """Render variables as a ``.env`` file readable by shells and by pydantic-settings.

    Args:
        env: variable name to value.

    Returns:
        A comment line, then one ``NAME=value`` line per variable sorted by name; values
        are shell-quoted only when they contain characters that need it.
    """
    lines = ["# Clarion development stack; load with `set -a; . <this file>; set +a`\n"]
    lines.extend(f"{key}={shlex.quote(env[key])}\n" for key in sorted(env))
    return "".join(lines)


def find_project_root(start: Path | None = None) -> Path:
    """Find the Clarion workspace root: the nearest ancestor holding ``.git`` or a uv workspace.

    Args:
        start: directory to search from, the current directory by default.

    Returns:
        The root directory, or ``start`` itself when no marker is found.
    """
    origin = (start or Path.cwd()).resolve()
    for candidate in (origin, *origin.parents):
        if (candidate / ".git").exists():
            return candidate
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text("utf-8"):
            return candidate
    return origin


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return where the development stack keeps its files.

    ``$CLARION_DEVSTACK_DIR`` when set, else ``<project root>/.clarion/devstack``.
    """
    env = os.environ if environ is None else environ
    override = env.get(ENV_DATA_DIR)
    if override:
        return Path(override).expanduser().resolve()
    return find_project_root() / ".clarion" / "devstack"


@dataclass(frozen=True)
class StackConfig:
    """How to start a :class:`Stack`.

    Attributes:
        data_dir: directory for logs, configuration and PostgreSQL's cluster; created
            when missing; ``kafka/``, ``redis/`` and ``postgres/`` inside are replaced
            on every start.
        host: loopback address every server binds and advertises.
        startup_timeout: seconds allowed for all servers to answer.
        stop_timeout: seconds a server gets to exit after its stop signal before it is
            killed.
        environ: variables consulted for ``CLARION_*`` overrides; ``None`` means
            ``os.environ`` at start time.
        postgres_user, postgres_password, postgres_database: login and database created
            in the embedded PostgreSQL cluster.
    """

    data_dir: Path
    host: str = LOOPBACK
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0
    environ: Mapping[str, str] | None = None
    postgres_user: str = "clarion"
    postgres_password: str = "clarion"
    postgres_database: str = "clarion"

    @classmethod
    def default(cls, **overrides: Any) -> StackConfig:
        """Config with :func:`default_data_dir` as data directory; ``overrides`` replace fields."""
        overrides.setdefault("data_dir", default_data_dir(overrides.get("environ")))
        return cls(**overrides)


def server_ports(info: StackInfo) -> dict[str, tuple[str, int]]:
    """Return ``{"kafka": (host, port), "redis": ..., "postgres": ...}`` of a stack's servers.

    The first bootstrap server stands for Kafka. Default ports (9092, 6379, 5432) fill in
    addresses without one.
    """
    from urllib.parse import urlsplit

    redis = urlsplit(info.redis_url)
    postgres = urlsplit(info.database_url)
    return {
        KAFKA: split_host_port(info.kafka_bootstrap_servers.split(",")[0].strip(), 9092),
        REDIS: (redis.hostname or LOOPBACK, redis.port or 6379),
        POSTGRES: (postgres.hostname or LOOPBACK, postgres.port or 5432),
    }


def remove_stale_data_dirs(parent: Path, prefix: str, *, min_age: float = 600.0) -> list[Path]:
    """Delete data directories left behind by stacks whose process was killed.

    A directory counts as stale when its name starts with ``prefix``, it was last
    modified at least ``min_age`` seconds ago and no running stack holds its lock
    (a live :class:`Stack` keeps an exclusive ``flock`` on ``<dir>/.lock``).

    Args:
        parent: directory to scan (for example the system temp directory).
        prefix: name prefix of stack data directories.
        min_age: seconds; younger directories may belong to a stack still starting.

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    now = time.time()
    for path in parent.glob(prefix + "*"):
        try:
            if not path.is_dir() or now - path.stat().st_mtime < min_age:
                continue
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running stack owns it
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
