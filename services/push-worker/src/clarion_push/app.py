"""push-worker's FastStream application.

Run it with ``clarion-push-worker`` or
``faststream run clarion_push.app:create_app --factory``. It consumes
``clarion.push-subscriptions.v1`` (materialised into Redis) and
``clarion.push-requests.v1`` (group ``push-worker``), polls the schedule of
deferred requests and retries, and serves ``/healthz``, ``/readyz`` and
``/metrics`` on ``http_port`` (8004).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from py_vapid import Vapid02
from redis.asyncio import Redis

from clarion_contracts.registry import DELIVERY_STATUS, PUSH_REQUESTS, PUSH_SUBSCRIPTIONS
from clarion_contracts.v1 import PushRequest, PushSubscription
from clarion_kit.health import HealthChecks, HealthServer, health_app
from clarion_kit.kafka import create_broker, ensure_topics, subscriber_options
from clarion_kit.kafka import ping as kafka_ping
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.redis import create_redis
from clarion_push.adapters.kafka import KafkaEventSink
from clarion_push.adapters.store import DeliveryLog, Schedule, SubscriptionStore
from clarion_push.adapters.webpush import VapidSigner, WebPushClient, load_vapid
from clarion_push.dispatcher import PushDispatcher
from clarion_push.settings import PushSettings

log = get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PushWorker:
    """The running parts of push-worker, built at start-up and closed at shutdown.

    Args:
        settings: the service settings.
        broker: the Kafka broker the subscribers are registered on.
        clock: the current aware time; tests inject one to move time.
        serve_http: serve the health/metrics endpoints (tests may turn it off).
    """

    def __init__(
        self,
        settings: PushSettings,
        broker: KafkaBroker,
        clock: Callable[[], datetime] = _utcnow,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.serve_http = serve_http
        self.checks = HealthChecks()
        self.redis: Redis | None = None
        self.http: httpx.AsyncClient | None = None
        self.dispatcher: PushDispatcher | None = None
        self.health_server: HealthServer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _vapid(self) -> Vapid02:
        if self.settings.vapid_private_key:
            return load_vapid(self.settings.vapid_private_key)
        if self.settings.is_production:
            raise RuntimeError("CLARION_PUSH_VAPID_PRIVATE_KEY is required in production")
        log.warning("push.vapid_key_generated", hint="run `clarion vapid generate` and set it")
        vapid = Vapid02()
        vapid.generate_keys()
        return vapid

    async def on_startup(self) -> None:
        """Connect Redis, build the dispatcher and make sure the topics exist."""
        settings = self.settings
        self.redis = create_redis(settings)
        self.http = httpx.AsyncClient(
            timeout=settings.request_timeout_seconds,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        self.dispatcher = PushDispatcher(
            store=SubscriptionStore(self.redis, settings.redis_prefix),
            schedule=Schedule(self.redis, settings.redis_prefix),
            delivery_log=DeliveryLog(self.redis, settings.redis_prefix),
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
        redis = self.redis
        self.checks.add("redis", lambda: redis.ping(), timeout=1.0)
        self.checks.add("kafka", lambda: kafka_ping(self.broker), timeout=2.5)
        await ensure_topics(settings, specs=(PUSH_REQUESTS, PUSH_SUBSCRIPTIONS, DELIVERY_STATUS))

    async def after_startup(self) -> None:
        """Start the schedule poller and the health/metrics server."""
        self._poller = asyncio.create_task(self._poll(), name="push-schedule-poller")
        if self.serve_http:
            self.health_server = HealthServer(
                health_app(self.checks), self.settings.http_host, self.settings.http_port
            )
            await self.health_server.start()

    async def on_shutdown(self) -> None:
        """Stop polling before the broker stops, so running jobs can still publish."""
        self.checks.set_ready(False)
        self._stopping.set()
        if self.dispatcher is not None:
            await self.dispatcher.drain(timeout=self.settings.request_timeout_seconds)
        if self._poller is not None:
            # Let the current batch finish: a job cut short is claimed again after its lease.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._poller, timeout=self.settings.request_timeout_seconds)

    async def after_shutdown(self) -> None:
        """Close the HTTP client, Redis and the health server."""
        if self.health_server is not None:
            await self.health_server.stop()
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    async def _poll(self) -> None:
        assert self.dispatcher is not None
        while not self._stopping.is_set():
            try:
                claimed = await self.dispatcher.run_due(self.settings.schedule_batch)
            except Exception as exc:  # Redis hiccup: keep polling, the jobs are still there
                log.error("push.poll_failed", error=repr(exc))
                claimed = 0
            if claimed < self.settings.schedule_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), timeout=self.settings.schedule_poll_seconds
                    )

    async def on_subscription(self, msg: KafkaMessage) -> None:
        """Materialise one record of the subscriptions topic (empty value: delete the key).

        Raises:
            pydantic.ValidationError: not a :class:`PushSubscription`; the kit's DLQ
                middleware sends the record to the DLQ at once.
        """
        assert self.dispatcher is not None
        if not msg.body:
            key = msg.raw_message.key  # type: ignore[union-attr]
            if key:
                await self.dispatcher.store.remove(key.decode())
            return
        await self.dispatcher.store.apply(PushSubscription.from_bytes(msg.body))

    async def on_request(self, msg: KafkaMessage) -> None:
        """Deliver (or defer) one push request.

        Raises:
            pydantic.ValidationError: not a :class:`PushRequest` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        await self.dispatcher.handle(PushRequest.from_bytes(msg.body))


def create_app(
    settings: PushSettings | None = None,
    *,
    clock: Callable[[], datetime] = _utcnow,
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
    broker = create_broker(settings)
    worker = PushWorker(settings, broker, clock=clock, serve_http=serve_http)
    # One consumer group per topic: members of one group subscribed to different topics
    # make every join rebalance both.
    broker.subscriber(
        settings.topic(PUSH_SUBSCRIPTIONS),
        **subscriber_options(
            settings, group_id=f"{settings.service_name}-subscriptions", background=True
        ),
    )(worker.on_subscription)
    broker.subscriber(
        settings.topic(PUSH_REQUESTS), **subscriber_options(settings, background=True)
    )(worker.on_request)
    app = FastStream(broker)
    app.on_startup(worker.on_startup)
    app.after_startup(worker.after_startup)
    app.on_shutdown(worker.on_shutdown)
    app.after_shutdown(worker.after_shutdown)
    app.context.set_global("push_worker", worker)
    return app
