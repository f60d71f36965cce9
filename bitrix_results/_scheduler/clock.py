"""The scheduler's view of time: wall time, loop time and sleeping, injectable.

Two clocks matter. The portal speaks *wall* time (``time.operating_reset_at``
is a Unix timestamp, api-facts §2.1), so budget holds are computed with
:meth:`Clock.time`. Pacing speaks *loop* time: aiolimiter reads
``loop.time()`` (the leaky bucket), and so do asyncio timeouts, so
:meth:`Clock.monotonic` must be the running event loop's clock. Tests swap in
:class:`~bitrix_results.testing.virtual_time.VirtualClock` on a virtual-time
loop and never sleep for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Where the scheduler reads the time and how it waits."""

    def time(self) -> float:
        """Wall-clock Unix time in seconds (comparable with ``operating_reset_at``)."""
        ...

    def monotonic(self) -> float:
        """A monotonic clock in seconds: the running event loop's ``time()``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns at once for zero or less)."""
        ...


class SystemClock:
    """The real clock: ``time.time()``, the event loop's clock, ``asyncio.sleep``."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        try:
            # The loop's clock, not time.monotonic(): aiolimiter and asyncio
            # timeouts read loop.time(), and a custom loop may run its own clock.
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"
