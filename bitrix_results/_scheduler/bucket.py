"""The request-rate leaky bucket, in memory, on aiolimiter.

The portal counts every HTTP request (a batch is one) per portal and source
address; above ``X`` outstanding it refuses with 503 ``QUERY_LIMIT_EXCEEDED``,
and ``Y`` drain each second (api-facts §1: X=50, Y=2; Enterprise 250 and 5). We
keep our own copy of that counter and *reserve* a slot before every send, so
no number of concurrent callers can burst past it: aiolimiter's
``acquire()`` admits when ``level + 1 <= capacity`` and queues everyone else
in order, draining continuously, exactly the portal's rule.

When the portal refuses anyway (another application on our address is eating
the bucket), the scheduler marks the bucket full and slows the drain: AIMD, a
multiplicative decrease per congestion event and an additive increase per
success, the way TCP shares a link it cannot see.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import msgspec
from aiolimiter import AsyncLimiter

__all__ = [
    "DEFAULT_HEADROOM",
    "BucketConfig",
    "MemoryBucket",
    "Reservation",
]

#: Requests of the portal's burst we never use. Two, because our count and the
#: portal's drift apart: requests paced 1/Y apart at send time can arrive closer
#: together (network jitter moves a request's arrival by up to a drain interval),
#: and the portal may drain in steps rather than continuously (api-facts §1 only says
#: "falls by Y every second"). It costs 2/Y seconds once per run (1 s at 2/s).
DEFAULT_HEADROOM = 2

#: On 503 the effective drain is halved (multiplicative decrease) ...
RATE_DECREASE = 0.5
#: ... but never below a tenth of the nominal rate, so we keep making progress ...
RATE_FLOOR = 0.1
#: ... and every success gives back 5% of the nominal rate (additive increase):
#: from half speed to full in 10 successes, from the floor in 18.
RATE_STEP = 0.05


@dataclass(frozen=True, slots=True)
class BucketConfig:
    """Our model of one portal's bucket: capacity ``X - headroom``, nominal drain ``Y``."""

    capacity: float
    drain_per_second: float

    def __post_init__(self) -> None:
        if not self.capacity >= 1:
            raise ValueError(f"capacity: must be at least 1, got {self.capacity!r}")
        if not (self.drain_per_second > 0 and math.isfinite(self.drain_per_second)):
            raise ValueError(f"drain_per_second: must be positive, got {self.drain_per_second!r}")


class Reservation(msgspec.Struct, frozen=True, gc=False):
    """A slot taken in the bucket, just before sending."""

    # A frozen msgspec Struct, not a frozen dataclass: one is made per call,
    # and a Struct is built in C. gc=False: it holds only floats.

    #: Seconds the caller was held back (0.0 when a slot was free).
    waited: float
    #: When the slot was taken, in the bucket's own time base. A 503 on a request
    #: reserved before the last slow-down is part of the same congestion event
    #: and does not slow down again.
    reserved_at: float
    #: The effective drain rate when reserved.
    drain_per_second: float


class MemoryBucket(AsyncLimiter):
    """aiolimiter's bucket, plus the two things a shared bucket needs: fill and re-rate.

    ``AsyncLimiter(capacity, capacity / drain)`` leaks ``drain`` per second and
    admits while ``level + 1 <= capacity``. Marking it full and changing its rate
    touch aiolimiter's private state (``_leak``, ``_level``, ``_rate_per_sec``,
    ``_wake_next``, present since aiolimiter 1.2); the unit tests pin the
    behaviour. An instance is bound to one event loop, like any aiolimiter.
    """

    __slots__ = ("_decreased_at", "_factor", "nominal_drain")

    def __init__(self, config: BucketConfig) -> None:
        super().__init__(config.capacity, config.capacity / config.drain_per_second)
        self.nominal_drain = config.drain_per_second
        self._factor = 1.0
        self._decreased_at = -math.inf

    @property
    def level(self) -> float:
        """Requests outstanding now (drained up to now)."""
        self._leak()
        return self._level

    @property
    def drain_per_second(self) -> float:
        """The effective drain rate (the nominal one, slowed after a 503)."""
        return self.nominal_drain * self._factor

    def try_reserve(self) -> Reservation | None:
        """Take a free slot at once, or None when one must wait (then :meth:`reserve`).

        aiolimiter's ``acquire()`` with nobody waiting and room for one, without
        its coroutine, its second leak and its wake-up scan. Nobody
        waiting means no wake-up timer is set either, so there is none to reset.
        """
        if self._waiters or not self.has_capacity():
            return None
        self._level += 1
        # has_capacity() just leaked up to now: _last_check is the loop time.
        return Reservation(
            waited=0.0,
            reserved_at=self._last_check,
            drain_per_second=self.nominal_drain * self._factor,
        )

    async def reserve(self) -> Reservation:
        """Take one slot, waiting in line for it; a batch is one request (api-facts §1)."""
        fast = self.try_reserve()
        if fast is not None:
            return fast
        loop = asyncio.get_running_loop()
        start = loop.time()
        # Only a caller that found no free slot waited (the clock may move a
        # few microseconds even when acquire() does not block).
        blocked = not self.has_capacity()
        await self.acquire()
        now = loop.time()
        return Reservation(
            waited=now - start if blocked else 0.0,
            reserved_at=now,
            drain_per_second=self.drain_per_second,
        )

    def rate_limited(self, reservation: Reservation) -> None:
        """The portal refused a request with 503: it is fuller than we thought."""
        self._leak()
        # Mark full: the portal refused, so its level is at least the threshold.
        self._level = max(self._level, self.max_rate)
        if reservation.reserved_at >= self._decreased_at:
            # One slow-down per congestion event: requests reserved before the
            # last one were paced at the old rate and prove nothing new.
            self._set_factor(max(RATE_FLOOR, self._factor * RATE_DECREASE))
            self._decreased_at = self._loop.time()
        self._wake_next()

    def succeeded(self) -> None:
        """A request went through: give back a little of the nominal rate."""
        if self._factor < 1.0:
            self._set_factor(min(1.0, self._factor + RATE_STEP))

    def _set_factor(self, factor: float) -> None:
        # Drain at the old rate up to now before switching, then let waiters
        # re-plan their wake-up at the new rate.
        self._leak()
        self._factor = factor
        self._rate_per_sec = self.drain_per_second
        self.time_period = self.max_rate / self._rate_per_sec
        self._wake_next()
