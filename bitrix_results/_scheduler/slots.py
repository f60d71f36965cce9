"""Concurrency slots: how many calls a scheduler has admitted but not yet settled."""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """``n`` concurrency slots for one event loop, handed out first come, first served.

    Like ``asyncio.Semaphore``, plus :meth:`try_take`, so the scheduler can
    take a free slot without creating a coroutine. Unlike anyio's
    ``CapacityLimiter``, taking a free slot does not cost an event-loop turn
    (anyio runs a cancel-shielded checkpoint on every acquire). A released slot
    goes straight to the first waiter, so a newcomer cannot overtake those
    already waiting.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        self._free = n
        # Invariant: while anyone waits, no slot is free (give() hands over).
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot, but cancelled before we could use it: pass it on.
                self.give()
            raise

    def give(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                return
        self._free += 1
