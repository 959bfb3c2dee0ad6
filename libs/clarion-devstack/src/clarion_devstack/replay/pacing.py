"""Pacing of a replay to what the pipeline sustains (pure: no clock, no I/O).

ingest-api answers 202 as soon as an event is in its outbox, far faster than the
aggregator and the realtime-gateway deliver it: a replay sent "as fast as
accepted" builds a backlog, and every frame then waits behind it (seconds of
accepted -> frame latency on a laptop). :class:`ReplayPacer` keeps the backlog
small instead, with TCP congestion control's scheme applied to the send rate
(slow start, then additive increase / multiplicative decrease, AIMD):

* every control step (:meth:`ReplayPacer.observe`) gets the live path's recent
  accepted -> frame latency and/or its consumer lag (records the live consumer
  groups have not consumed yet);
* if either is above its bound, the rate is multiplied by ``decrease`` (< 1) and
  slow start ends;
* if the known ones are within bounds, the rate is multiplied by ``increase``
  (> 1) during slow start, afterwards raised by ``step`` events/s;
* with no measurement at all it is kept.

:meth:`ReplayPacer.schedule` turns the rate into send times (a token bucket
without burst): the caller passes the current time and gets how long to wait
before sending a batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaceLimits:
    """Bounds and gains of a :class:`ReplayPacer`.

    Attributes:
        target_latency_ms: recent accepted -> frame latency (ms, p50) above which
            the rate decreases.
        max_backlog: consumer lag of the live path (records) above which the rate
            decreases.
        initial_rate / min_rate / max_rate: events per second.
        increase / decrease: factors applied per control step (``increase`` > 1,
            during slow start; 0 < ``decrease`` < 1).
        step: events/s added per control step within bounds after slow start.
    """

    target_latency_ms: float = 500.0
    max_backlog: int = 1000
    initial_rate: float = 200.0
    min_rate: float = 10.0
    max_rate: float = 50_000.0
    increase: float = 1.25
    decrease: float = 0.6
    step: float = 50.0

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.initial_rate <= self.max_rate:
            raise ValueError("need 0 < min_rate <= initial_rate <= max_rate")
        if self.increase <= 1 or not 0 < self.decrease < 1 or self.step <= 0:
            raise ValueError("need increase > 1, 0 < decrease < 1 and step > 0")


@dataclass(frozen=True)
class PipelineSignal:
    """One measurement of the live path; ``None`` where nothing was measured.

    ``latency_ms``: p50 of the accepted -> frame latencies seen since the last
    measurement; ``backlog``: records the live consumer groups still have to consume.
    """

    latency_ms: float | None = None
    backlog: int | None = None


class ReplayPacer:
    """The send rate of a replay, adjusted to the pipeline by AIMD (see the module).

    Times are in seconds of any monotonic clock the caller chooses.
    """

    def __init__(self, limits: PaceLimits | None = None) -> None:
        self.limits = limits or PaceLimits()
        self._rate = self.limits.initial_rate
        self._next_at: float | None = None
        self._slow_start = True
        self.last = PipelineSignal()

    @property
    def rate(self) -> float:
        """The current target rate, events per second."""
        return self._rate

    def overloaded(self, signal: PipelineSignal) -> bool | None:
        """True if ``signal`` exceeds a bound, False if within them, None if unknown."""
        limits = self.limits
        checks = [
            signal.latency_ms > limits.target_latency_ms if signal.latency_ms is not None else None,
            signal.backlog > limits.max_backlog if signal.backlog is not None else None,
        ]
        known = [c for c in checks if c is not None]
        return any(known) if known else None

    def observe(self, signal: PipelineSignal) -> float:
        """Apply one control step for ``signal``; returns the new rate (events/s)."""
        self.last = signal
        over = self.overloaded(signal)
        limits = self.limits
        if over is True:
            self._slow_start = False
            self._rate = max(limits.min_rate, self._rate * limits.decrease)
        elif over is False:
            grown = self._rate * limits.increase if self._slow_start else self._rate + limits.step
            self._rate = min(limits.max_rate, grown)
        return self._rate

    def schedule(self, events: int, now: float) -> float:
        """Seconds to wait from ``now`` before sending ``events`` events (0: send now).

        Consecutive batches are spaced ``events / rate`` apart; time spent idle
        (a slow answer) is not saved up for a burst later.
        """
        start = now if self._next_at is None else max(now, self._next_at)
        self._next_at = start + events / self._rate
        return start - now

    def describe(self) -> str:
        """A short status, e.g. ``"pace 850/s, live p50 120 ms, backlog 35"``."""
        parts = [f"pace {self._rate:,.0f}/s"]
        if self.last.latency_ms is not None:
            parts.append(f"live p50 {self.last.latency_ms:,.0f} ms")
        if self.last.backlog is not None:
            parts.append(f"backlog {self.last.backlog:,}")
        return ", ".join(parts)
