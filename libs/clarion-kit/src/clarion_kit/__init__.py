"""Shared runtime of Clarion services.

Modules: :mod:`~clarion_kit.settings` (environment settings), :mod:`~clarion_kit.kafka`
(FastStream broker, topic creation), :mod:`~clarion_kit.retry` (retries and DLQ),
:mod:`~clarion_kit.dedup` (idempotent consumers), :mod:`~clarion_kit.redis`,
:mod:`~clarion_kit.scheduling` (deferred jobs on Redis and their poller),
:mod:`~clarion_kit.worker` (the frame of the channel workers),
:mod:`~clarion_kit.db` (SQLAlchemy async, Alembic), :mod:`~clarion_kit.logging`,
:mod:`~clarion_kit.metrics`, :mod:`~clarion_kit.tracing`, :mod:`~clarion_kit.health`,
:mod:`~clarion_kit.auth` (JWT, API keys) and :mod:`~clarion_kit.problems` (RFC 9457).
Import from the modules; this package imports nothing heavy itself.
"""
