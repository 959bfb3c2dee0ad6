"""The policy and reporting side of Clarion consumers: metrics, readiness flag, settings.

:class:`ConsumerGuard` is what a :class:`clarion_kit.continuity.ContinuityConsumer`
counts offset gaps and broker data loss into and how it reacts to data loss;
:class:`DataLossMonitor` is the readiness flag a service's ``/readyz`` checks. The
behaviour itself is described in :mod:`clarion_kit.continuity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from clarion_kit.metrics import get_or_create_counter, metric_name

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter

    from clarion_kit.settings import ServiceSettings

DataLossPolicy = Literal["halt", "reset"]
"""What a consumer does with a partition after broker data loss (see the module docstring)."""


class BrokerDataLossError(RuntimeError):
    """Raised by :meth:`DataLossMonitor.check` once a consumer detected broker data loss."""


class DataLossMonitor:
    """The readiness flag of broker data loss, shared by a service's consumers.

    Holds one entry per affected partition (``"<topic>[<partition>]"`` -> what was
    seen). Readiness checks call :meth:`check`; an operator who has dealt with the
    loss (replayed the producers, accepted it) calls :meth:`clear`, or restarts.
    """

    def __init__(self) -> None:
        self._events: dict[str, str] = {}

    def record(self, topic: str, partition: int, detail: str) -> None:
        """Flag ``topic``/``partition`` as having lost data (``detail``: what was seen)."""
        self._events[f"{topic}[{partition}]"] = detail

    @property
    def events(self) -> dict[str, str]:
        """A copy of the flagged partitions and what was seen on each."""
        return dict(self._events)

    @property
    def lost(self) -> bool:
        """True once any partition was flagged (until :meth:`clear`)."""
        return bool(self._events)

    def clear(self) -> None:
        """Forget what was flagged: readiness no longer fails because of it."""
        self._events.clear()

    async def check(self) -> None:
        """Readiness check (``HealthChecks.add("kafka-data", monitor.check)``).

        Raises:
            BrokerDataLossError: a partition was flagged since the start or the last
                :meth:`clear`; the message names the partitions.
        """
        if self._events:
            parts = "; ".join(f"{tp}: {detail}" for tp, detail in sorted(self._events.items()))
            raise BrokerDataLossError(f"broker data loss: {parts}"[:500])


@dataclass
class ConsumerGuard:
    """What a :class:`ContinuityConsumer` reports to and how it reacts.

    Args:
        service: service name, for the ``clarion_<service>_*`` metric names.
        on_data_loss: ``"reset"`` or ``"halt"`` (module docstring).
        gap_confirm_ms: how long a gap must persist across re-fetches before it is
            accepted as legitimate, in ms (> 0).
        registry: Prometheus registry (default: the process one).
        monitor: the readiness flag (a new one by default).
    """

    service: str = "clarion"
    on_data_loss: DataLossPolicy = "reset"
    gap_confirm_ms: int = 500
    registry: CollectorRegistry | None = None
    monitor: DataLossMonitor = field(default_factory=DataLossMonitor)
    gaps: Counter = field(init=False)
    gaps_confirmed: Counter = field(init=False)
    data_loss: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.gaps = get_or_create_counter(
            metric_name(self.service, "consumer_offset_gaps_total"),
            "Fetches whose records skipped an offset the consumer had not seen yet",
            ("topic",),
            self.registry,
        )
        self.gaps_confirmed = get_or_create_counter(
            metric_name(self.service, "consumer_offset_gaps_confirmed_total"),
            "Offset gaps still present after re-fetching, accepted as legitimate",
            ("topic",),
            self.registry,
        )
        self.data_loss = get_or_create_counter(
            metric_name(self.service, "broker_data_loss_total"),
            "Partitions whose log lost records: position past the end, or end went backwards",
            ("topic",),
            self.registry,
        )

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        *,
        registry: CollectorRegistry | None = None,
        monitor: DataLossMonitor | None = None,
    ) -> ConsumerGuard:
        """A guard from ``service_name``, ``kafka_on_data_loss`` and ``kafka_gap_confirm_ms``."""
        return cls(
            service=settings.service_name,
            on_data_loss=settings.kafka_on_data_loss,
            gap_confirm_ms=settings.kafka_gap_confirm_ms,
            registry=registry,
            monitor=monitor if monitor is not None else DataLossMonitor(),
        )
