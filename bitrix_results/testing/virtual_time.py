"""Virtual time for tests: an event loop whose clock jumps instead of sleeping.

Public, so that tests of code built on the client can use it too::

    from bitrix_results import Limits, Scheduler
    from bitrix_results.testing.virtual_time import VirtualClock, run

    async def main() -> None:
        scheduler = Scheduler(Limits.standard(), clock=VirtualClock())
        ...  # ten minutes of pacing take milliseconds

    run(main())

``run(main())`` runs a coroutine on a :class:`VirtualTimeLoop`. Whenever every
task is waiting on a timer, the loop moves its clock straight to the next timer
instead of blocking, so ``await asyncio.sleep(600)`` (or an aiolimiter wait, or
a ten-minute operating-budget hold) returns at once while ``loop.time()`` reads
600 seconds later. Timing assertions are then exact and the test takes
milliseconds. :class:`VirtualClock` is the matching clock for
``Scheduler(clock=...)``: its wall time advances with the loop.

Real I/O still works (the loop polls it without blocking first); if nothing is
ready and no timer is pending, the loop waits a few real seconds for another
thread and then fails loudly instead of hanging: that is a deadlock.

Like the rest of :mod:`bitrix_results.testing`, it imports nothing of the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualClock", "VirtualTimeLoop", "run"]

_T = TypeVar("_T")

#: Iterations a timer may stay due at one unchanging instant before the clock
#: is nudged by the smallest step a float can take.
_STALLS_BEFORE_NUDGE = 100

#: A plausible "now" for wall time, so reset_at values look like real Unix times.
DEFAULT_EPOCH = 1_800_000_000.0


class _JumpingSelector(selectors.BaseSelector):
    """Wraps a real selector; a wait for ``timeout`` seconds advances the loop's clock."""

    def __init__(self, inner: selectors.BaseSelector, deadlock_after: float) -> None:
        self._inner = inner
        self._deadlock_after = deadlock_after
        self._stalls = 0
        self.loop: VirtualTimeLoop | None = None

    def register(
        self, fileobj: Any, events: int, data: Any = None
    ) -> selectors.SelectorKey:  # pragma: no cover - delegation
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:  # pragma: no cover
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: Any, events: int, data: Any = None
    ) -> selectors.SelectorKey:  # pragma: no cover
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:  # pragma: no cover
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        # Real I/O first, without blocking: sockets and the loop's self-pipe
        # (call_soon_threadsafe) must still be served.
        ready = self._inner.select(0)
        if ready:
            self._stalls = 0
            return ready
        if timeout == 0:
            if self.loop.has_ready_callbacks():
                self._stalls = 0
            else:
                # Nothing runnable, only a timer due *now*. A timer that keeps
                # re-arming itself at the same instant (aiolimiter rounds
                # `now + tiny` to `now`) would spin forever on a clock that
                # never moves by itself; a real clock moves on. Do the same.
                self._stalls += 1
                if self._stalls > _STALLS_BEFORE_NUDGE:
                    self._stalls = 0
                    self.loop.advance(math.nextafter(self.loop.time(), math.inf) - self.loop.time())
            return ready
        self._stalls = 0
        if timeout is None:
            # No timer pending and nothing runnable: only another thread can
            # wake us. Give it a few real seconds, then call it a deadlock.
            ready = self._inner.select(self._deadlock_after)
            if not ready:
                raise RuntimeError(
                    "virtual-time loop: every task is waiting and no timer is pending (deadlock)"
                )
            return ready
        # The loop asked to block until its next timer: jump there instead.
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop with a virtual clock that jumps to the next timer."""

    def __init__(self, start: float = 0.0, *, deadlock_after: float = 5.0) -> None:
        # Set before the base __init__, which may already read the clock.
        self._virtual_now = float(start)
        selector = _JumpingSelector(selectors.DefaultSelector(), deadlock_after)
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_now

    def has_ready_callbacks(self) -> bool:
        """Whether callbacks are queued to run (asyncio keeps them in ``_ready``)."""
        return bool(getattr(self, "_ready", ()))

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (timers due by then run next)."""
        if seconds < 0:
            raise ValueError(f"seconds: must not be negative, got {seconds!r}")
        self._virtual_now += seconds


class VirtualClock:
    """A scheduler clock (``Scheduler(clock=...)``) that follows the running loop.

    ``monotonic()`` is ``loop.time()`` and ``time()`` is ``epoch + loop.time()``,
    so wall time moves with virtual time (budget holds use it). On a real loop it
    still works, it just does not jump.
    """

    __slots__ = ("_epoch", "_last")

    def __init__(self, epoch: float = DEFAULT_EPOCH) -> None:
        self._epoch = float(epoch)
        self._last = 0.0

    def monotonic(self) -> float:
        # Outside a loop (a statistics call): the last time seen.
        with contextlib.suppress(RuntimeError):
            self._last = asyncio.get_running_loop().time()
        return self._last

    def time(self) -> float:
        return self._epoch + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return f"VirtualClock(epoch={self._epoch!r})"


def run(main: Coroutine[Any, Any, _T], *, start: float = 0.0) -> _T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop` (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        return runner.run(main)
