"""Helpers for tests that run a Clarion service on the embedded stack.

* :func:`eventually` polls a condition (the ``wait_until`` fixture hands it out);
* :class:`TopicTap` collects every record of some topics; :func:`first_record`
  reads one record of a topic (a DLQ, typically) and :func:`record_headers` its headers;
* :func:`running_worker` starts a FastStream service app in-process with a
  producer and a tap beside it; :class:`WorkerHarness` bundles them for a test;
* :func:`run_service_until_ready` (:func:`run_until_ready` for any command) runs a
  service as a process until its ``/readyz`` answers 200, then stops it with SIGTERM.

Importing this module is cheap: aiokafka and httpx are imported when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clarion_contracts.registry import DELIVERY_STATUS, TopicSpec
from clarion_contracts.v1 import DeliveryStatus
from clarion_devstack.ports import find_free_port
from clarion_devstack.pytest_plugin import TEST_SESSION_TIMEOUT_MS


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Args:
        predicate: a function returning a value or an awaitable of one.
        timeout: seconds until giving up.
        interval: seconds between polls.
        what: named in the error.

    Raises:
        AssertionError: nothing truthy within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class TopicTap:
    """Collects every record of ``topics`` in :attr:`records`, from their start.

    It reads without a consumer group, so it takes no partitions from the
    service under test. :meth:`start` returns once the consumer runs;
    :meth:`stop` ends it.
    """

    bootstrap: str
    topics: list[str]
    records: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        """Start consuming (aiokafka ``ConsumerRecord`` objects land in :attr:`records`).

        Raises:
            aiokafka.errors.KafkaError: the broker is unreachable.
        """
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            self.records.append(record)

    async def stop(self) -> None:
        """Stop consuming; :attr:`records` stays as it is."""
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        await self._consumer.stop()

    def values(self, topic: str) -> list[Any]:
        """The records collected from ``topic``, in arrival order."""
        return [r for r in self.records if r.topic == topic]


async def first_record(bootstrap: str, topic: str, timeout: float = 30.0) -> Any:
    """The first record of ``topic`` (offset order; waits for one to arrive).

    Raises:
        TimeoutError: no record within ``timeout`` seconds.
        aiokafka.errors.KafkaError: the broker is unreachable.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        return await asyncio.wait_for(consumer.getone(), timeout)
    finally:
        await consumer.stop()


def record_headers(record: Any) -> dict[str, str]:
    """A consumed record's headers as ``{name: UTF-8 text}`` (a later duplicate name wins).

    Raises:
        UnicodeDecodeError: a header value is not UTF-8.
    """
    return {name: value.decode() for name, value in record.headers}


@asynccontextmanager
async def running_worker(
    app: Any, context_name: str, bootstrap: str, tap_topics: Sequence[str]
) -> AsyncIterator[tuple[Any, Any, TopicTap]]:
    """Start a FastStream service ``app`` with a producer and a :class:`TopicTap` beside it.

    Everything started is stopped on exit, the app last.

    Args:
        app: a FastStream application, not started yet.
        context_name: the context global holding the service's worker object.
        bootstrap: the stack's Kafka bootstrap servers.
        tap_topics: runtime names of the topics to collect.

    Yields:
        ``(worker, producer, tap)``: the worker, an aiokafka producer
        (``acks="all"``, started) and the started tap.

    Raises:
        Exception: whatever the app's start-up hooks raise.
    """
    from aiokafka import AIOKafkaProducer

    await app.start()
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            tap = TopicTap(bootstrap, list(tap_topics))
            await tap.start()
            try:
                yield app.context.get(context_name), producer, tap
            finally:
                await tap.stop()
        finally:
            await producer.stop()
    finally:
        await app.stop()


@dataclass
class WorkerHarness:
    """A service running in-process (:func:`running_worker`) and what a test drives it with.

    Services' tests subclass it with their own fields and helpers.
    """

    settings: Any
    worker: Any
    producer: Any
    tap: TopicTap

    async def publish(self, spec: TopicSpec | str, key: str, value: bytes) -> None:
        """Produce ``value`` under ``key`` to the runtime topic of ``spec``; wait for the ack."""
        await self.producer.send_and_wait(self.settings.topic(spec), value=value, key=key.encode())

    def statuses(self) -> list[DeliveryStatus]:
        """The delivery statuses the tap collected (it must tap the status topic)."""
        topic = self.settings.topic(DELIVERY_STATUS)
        return [DeliveryStatus.from_bytes(r.value) for r in self.tap.values(topic)]

    async def first_dead_letter(self, spec: TopicSpec | str) -> tuple[bytes, dict[str, str]]:
        """Value and headers (:func:`record_headers`) of the first record of ``spec``'s DLQ.

        Raises:
            TimeoutError: the DLQ stayed empty for 30 seconds.
        """
        record = await first_record(self.settings.kafka_bootstrap_servers, self.settings.dlq(spec))
        return record.value, record_headers(record)


def console_script(name: str) -> str:
    """Path of console script ``name`` installed beside this interpreter."""
    return str(Path(sys.executable).with_name(name))


@dataclass(frozen=True)
class ProcessRun:
    """What :func:`run_until_ready` saw.

    Attributes:
        ready: the last ``/readyz`` response (an ``httpx.Response``), or None if
            none was answered.
        returncode: the exit status (negative: killed by that signal).
        output: stdout and stderr together.
    """

    ready: Any | None
    returncode: int | None
    output: bytes

    @property
    def output_tail(self) -> str:
        """The last 2000 characters of the output (for assertion messages)."""
        return self.output.decode(errors="replace")[-2000:]

    def assert_ready_then_stopped(self, *checks: str) -> None:
        """Assert ``/readyz`` answered 200 with each of ``checks`` ok, then a clean exit (0).

        Raises:
            AssertionError: otherwise; the message ends with :attr:`output_tail`.
        """
        assert self.ready is not None, f"/readyz never answered\n{self.output_tail}"
        assert self.ready.status_code == 200, f"{self.ready.text}\n{self.output_tail}"
        report = self.ready.json()["checks"]
        for name in checks:
            assert report[name]["ok"] is True, f"check {name}: {report[name]}"
        assert self.returncode == 0, f"exit status {self.returncode}\n{self.output_tail}"


async def run_until_ready(
    command: Sequence[str],
    env: Mapping[str, str],
    port: int,
    *,
    attempts: int = 300,
    interval: float = 0.1,
    exit_timeout: float = 30.0,
) -> ProcessRun:
    """Run ``command`` until ``GET http://127.0.0.1:<port>/readyz`` answers 200, then SIGTERM it.

    ``/readyz`` is asked up to ``attempts`` times, ``interval`` seconds apart,
    stopping early if the process exits. Once it answered 200 the process gets
    SIGTERM and ``exit_timeout`` seconds to exit; a process that never got ready
    is killed.

    Raises:
        TimeoutError: the process did not exit within ``exit_timeout`` after SIGTERM
            (it is killed).
        OSError: ``command`` could not be started.
    """
    import httpx

    proc = await asyncio.create_subprocess_exec(
        *command, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        ready: Any | None = None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(attempts):
                try:
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.returncode is not None:
                    break
                await asyncio.sleep(interval)
        # It may have exited on its own meanwhile: there is then nothing to signal.
        with contextlib.suppress(ProcessLookupError):
            if ready is not None and ready.status_code == 200:
                proc.send_signal(signal.SIGTERM)
            else:
                proc.kill()
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=exit_timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return ProcessRun(ready, proc.returncode, output)


async def run_service_until_ready(
    script: str, port_variable: str, env: Mapping[str, str]
) -> ProcessRun:
    """Run a service's console script on the stack until ready, then SIGTERM it.

    The process gets this process's environment, then ``env`` (``stack_env``), then
    ``<port_variable>`` (e.g. ``CLARION_PUSH_HTTP_PORT``) set to a free port,
    ``CLARION_KAFKA_SESSION_TIMEOUT_MS`` to
    :data:`~clarion_devstack.pytest_plugin.TEST_SESSION_TIMEOUT_MS` and JSON logs.

    Raises:
        TimeoutError / OSError: as :func:`run_until_ready`.
    """
    port = find_free_port()
    full_env = {
        **os.environ,
        **env,
        port_variable: str(port),
        "CLARION_KAFKA_SESSION_TIMEOUT_MS": str(TEST_SESSION_TIMEOUT_MS),
        "CLARION_LOG_JSON": "true",
    }
    return await run_until_ready([console_script(script)], full_env, port)
