"""push-worker's FastStream application.

Run it with ``clarion-push-worker`` or
``faststream run clarion_push.app:create_app --factory``. It consumes
``clarion.push-subscriptions.v1`` (materialised into Redis) and
``clarion.push-requests.v1`` (group ``push-worker``), polls the schedule of
deferred requests and retries, and serves ``/healthz``, ``/readyz`` and
``/metrics`` on ``http_port`` (8004).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from faststream import FastStream
from faststream.kafka.annotations import KafkaMessage
from py_vapid import Vapid02
from pydantic import ValidationError
from redis.asyncio import Redis

from clarion_contracts.registry import DELIVERY_STATUS, PUSH_REQUESTS, PUSH_SUBSCRIPTIONS
from clarion_contracts.v1 import PushRequest, PushSubscription, utc_now
from clarion_kit.kafka import create_broker
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.retry import RetryPolicy, retry_call
from clarion_kit.scheduling import SchedulePoller
from clarion_kit.tracing import record_spans
from clarion_kit.worker import ChannelWorker, materialise
from clarion_push.adapters.kafka import KafkaEventSink
from clarion_push.adapters.store import DeliveryLog, SubscriptionStore, job_schedule
from clarion_push.adapters.webpush import VapidSigner, WebPushClient, load_vapid
from clarion_push.dispatcher import PushDispatcher
from clarion_push.settings import PushSettings

log = get_logger(__name__)


class PushWorker(ChannelWorker[PushSettings]):
    """The running parts of push-worker, built at start-up and closed at shutdown.

    The life cycle (Redis, checks, topics, poller, health server) is
    :class:`~clarion_kit.worker.ChannelWorker`'s; constructor arguments as there.
    """

    topics = (PUSH_REQUESTS, PUSH_SUBSCRIPTIONS, DELIVERY_STATUS)
    http: httpx.AsyncClient | None = None
    dispatcher: PushDispatcher | None = None

    def _vapid(self) -> Vapid02:
        if self.settings.vapid_private_key:
            return load_vapid(self.settings.vapid_private_key)
        if self.settings.is_production:
            raise RuntimeError("CLARION_PUSH_VAPID_PRIVATE_KEY is required in production")
        log.warning("push.vapid_key_generated", hint="run `clarion vapid generate` and set it")
        vapid = Vapid02()
        vapid.generate_keys()
        return vapid

    def build(self, redis: Redis) -> None:
        """Open the HTTP client and build the dispatcher.

        Raises:
            RuntimeError: no VAPID key is configured in production.
        """
        settings = self.settings
        self.http = httpx.AsyncClient(
            timeout=settings.request_timeout_seconds,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        self.dispatcher = PushDispatcher(
            store=SubscriptionStore(redis, settings.redis_prefix),
            schedule=job_schedule(redis, settings.redis_prefix),
            delivery_log=DeliveryLog(redis, settings.redis_prefix),
            client=WebPushClient(
                VapidSigner(self._vapid(), settings.vapid_subject),
                self.http,
                per_host=settings.max_in_flight_per_host,
            ),
            events=KafkaEventSink(self.broker, settings),
            policy=settings.backoff(),
            clock=self.clock,
            lease_seconds=settings.schedule_lease_seconds,
            sent_ttl_seconds=settings.sent_ttl_seconds,
            max_concurrent=settings.max_concurrent_requests,
        )

    def poller(self) -> SchedulePoller:
        """Runs ``schedule_batch`` due jobs a round; a full round is followed at once."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        batch = self.settings.schedule_batch
        return SchedulePoller(
            lambda: dispatcher.run_due(batch),
            interval=self.settings.schedule_poll_seconds,
            name="push-schedule-poller",
            log=log,
            failure_event="push.poll_failed",
            busy_at=batch,
        )

    @property
    def shutdown_timeout(self) -> float:
        """One push request: running deliveries and the poller's batch may finish."""
        return self.settings.request_timeout_seconds

    async def drain(self) -> None:
        """Wait for the deliveries the Kafka handler started in the background."""
        if self.dispatcher is not None:
            await self.dispatcher.drain(timeout=self.shutdown_timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self.http is not None:
            await self.http.aclose()

    async def on_subscription(self, msg: KafkaMessage) -> None:
        """Materialise one record of the subscriptions topic (empty value: delete the key).

        Raises:
            pydantic.ValidationError: not a :class:`PushSubscription`; the kit's DLQ
                middleware sends the record to the DLQ at once.
        """
        assert self.dispatcher is not None
        store = self.dispatcher.store
        await materialise(
            msg,
            apply=lambda body: store.apply(PushSubscription.from_bytes(body)),
            delete=store.remove,
        )

    async def on_requests(self, records: list[Any]) -> None:
        """Deliver (or defer) one consumer batch of push requests.

        A record that is not a :class:`PushRequest` is dead-lettered at once (the
        kit's DLQ headers, ``clarion_push-worker_dlq_messages_total``); the others
        go to :meth:`PushDispatcher.handle_batch`. Outages of Redis or the broker
        are waited out with the kit's retry (:func:`clarion_kit.retry.retry_call`),
        never dead-lettered.

        Raises:
            Exception: the batch kept failing for another reason; FastStream seeks
                back and it is consumed again.
        """
        dispatcher = self.dispatcher
        assert dispatcher is not None
        dlq = self.broker.clarion_dlq  # type: ignore[attr-defined]
        requests: list[PushRequest] = []
        for record in records:
            try:
                requests.append(PushRequest.from_bytes(record.value or b""))
            except (ValidationError, ValueError) as exc:
                await dlq.send(record, exc, 1)
        # One consumer span per record, in the trace its producer started.
        with record_spans(records):
            await retry_call(
                lambda: dispatcher.handle_batch(requests),
                RetryPolicy.from_settings(self.settings),
            )


def create_app(
    settings: PushSettings | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
    serve_http: bool = True,
) -> FastStream:
    """Build the push-worker application (nothing connects until it starts).

    Args:
        settings: defaults to :class:`PushSettings` read from the environment.
        clock: the current aware time (injectable for tests).
        serve_http: serve /healthz, /readyz and /metrics on ``settings.http_port``.
    """
    settings = settings or PushSettings()
    configure_logging(settings)
    worker = PushWorker(settings, create_broker(settings), clock=clock, serve_http=serve_http)
    # One consumer group per topic: members of one group subscribed to different topics
    # make every join rebalance both.
    worker.subscribe(PUSH_SUBSCRIPTIONS, worker.on_subscription, group_suffix="subscriptions")
    worker.subscribe(
        PUSH_REQUESTS, worker.on_requests, batch_max_records=settings.request_batch_max_records
    )
    return worker.application("push_worker")
