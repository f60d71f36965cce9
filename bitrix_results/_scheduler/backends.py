"""Where the limits' state lives: one process (memory) or many (Redis, ``redis/``).

The leaky bucket is per portal and source address, shared by every application
on the host (api-facts §1); the operating budget is per method and credential
(api-facts §2.2). So the state must outlive one client: two clients of one portal
in one process share the process-wide :func:`default_backend`, and worker
processes share a :class:`~bitrix_results._scheduler.redis.RedisBackend`.

A backend stores state and makes the atomic decisions; the scheduler drives
it. Budget decisions are the pure functions of ``budget.py``, so both backends
decide alike.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .bucket import BucketConfig, MemoryBucket, Reservation
from .budget import (
    Admission,
    BudgetKey,
    BudgetRules,
    KeyState,
    Settlement,
    settle,
    statistics_of,
    try_admit,
)
from .clock import Clock
from .per_loop import PerLoop
from .stats import BucketStatistics, BudgetStatistics

__all__ = ["Backend", "MemoryBackend", "Waiters", "default_backend"]


class Backend(Protocol):
    """The state of the bucket per portal and of the budget per (credential, method).

    Try now, else await: each step the scheduler takes on every call comes in
    two forms. ``x_now`` does the step at once, without awaiting, or declines
    (returns None or False) having done nothing; only then does the scheduler
    await ``x``. The memory backend does every step at once, so a call costs
    no coroutine per step; Redis declines them all (each is a round trip). A
    backend that overrides an async form must keep its ``_now`` form in step
    with it, or make it decline.
    """

    def reserve_now(self, portal: str, config: BucketConfig) -> Reservation | None:
        """A free slot in ``portal``'s bucket at once, or None: then :meth:`reserve`."""
        ...

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        """Take one slot in ``portal``'s bucket, waiting in line for it."""
        ...

    async def rate_limited(
        self, portal: str, config: BucketConfig, reservation: Reservation, clock: Clock
    ) -> None:
        """The portal answered 503: mark the bucket full and slow the drain."""
        ...

    def succeeded_now(self, portal: str, config: BucketConfig) -> bool:
        """:meth:`succeeded` at once (True), or False: then await :meth:`succeeded`."""
        ...

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        """A request went through: recover some of the drain rate."""
        ...

    def admit_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission | None:
        """:meth:`admit` at once, or None: then await :meth:`admit`."""
        ...

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        """Admit ``ticket`` on all ``keys`` atomically, or say when to ask again.

        ``woken_by``: the key whose change woke this caller (see :class:`Waiters`).
        """
        ...

    async def wait_budget(
        self, admission: Admission, clock: Clock, *, attempt: int = 1
    ) -> BudgetKey | None:
        """Wait until ``admission.retry_at`` or, if it may help, a change of a refusing key.

        Returns the key whose change woke us (None: the time came). ``attempt``
        counts this call's refusals so far (a backend that polls backs off).
        """
        ...

    def settle_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> bool:
        """:meth:`settle` at once (True), or False: then await :meth:`settle`."""
        ...

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        """Take ``ticket`` out of flight and learn from its outcome."""
        ...

    def bucket_statistics(self, portal: str) -> BucketStatistics | None:
        """The bucket as last seen by this process (no I/O)."""
        ...

    def budget_statistics(self, key: BudgetKey) -> BudgetStatistics | None:
        """The budget of ``key`` as last seen by this process (no I/O)."""
        ...


#: The longest a caller waiting for another process's budget change goes
#: without re-reading it (Redis polls back off up to this).
RECHECK_AFTER = 1.0


class Waiters:
    """Callers waiting for budget keys to change, on one event loop.

    They are woken one at a time, in order: a settled call wakes the first
    waiter of each of its keys, and every admitted call passes the baton to
    the next. Waking all of them on every reply would cost a thousand
    re-checks per reply in a thousand-way gather. A caller waits only on the
    keys that refused it; woken by one key but refused by another, it hands
    that key's wake-up on (:meth:`handed_on`) instead of swallowing it. Each
    hand-on takes the caller off that key's queue, so the chain ends.
    """

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[BudgetKey, deque[asyncio.Future[BudgetKey]]] = {}

    def wake(self, key: BudgetKey) -> None:
        """Wake the first caller still waiting for ``key``, if any."""
        queue = self._queues.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():  # a timed-out or cancelled waiter is skipped
                waiter.set_result(key)
                return

    def wake_first(self, keys: Sequence[tuple[BudgetKey, int]]) -> None:
        """:meth:`wake` for each key of ``(key, units)`` pairs."""
        queues = self._queues
        if queues:  # nobody ever waited: nothing to look up
            for key, _ in keys:
                if queues.get(key):  # runs per call: no method call for an empty queue
                    self.wake(key)

    def handed_on(self, admission: Admission, woken_by: BudgetKey | None) -> None:
        """After a refusal: pass on a wake-up this caller cannot use."""
        if woken_by is not None and woken_by not in admission.blocked_by:
            self.wake(woken_by)

    async def wait(
        self, keys: Sequence[BudgetKey], seconds: float, clock: Clock
    ) -> BudgetKey | None:
        """Until woken for one of ``keys`` (returned) or ``seconds`` pass (None)."""
        if seconds <= 0:
            return None
        woken: asyncio.Future[BudgetKey] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._queues.setdefault(key, deque()).append(woken)
        # The deadline runs on the injected clock, so a test clock moves it too.
        timer = None if math.isinf(seconds) else asyncio.ensure_future(clock.sleep(seconds))
        try:
            if timer is None:
                await woken
            else:
                await asyncio.wait((woken, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if woken.done() and not woken.cancelled():
                # We were handed the baton but will not use it: pass it on.
                self.wake(woken.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if woken.done():
            return woken.result()
        # Timed out: cancel ours so that a later wake-up skips it.
        woken.cancel()
        return None


@dataclass
class _LoopState:
    """Everything one event loop's schedulers share."""

    buckets: dict[str, MemoryBucket] = field(default_factory=dict)
    budgets: dict[BudgetKey, KeyState] = field(default_factory=dict)
    waiters: Waiters = field(default_factory=Waiters)


class MemoryBackend:
    """State in this process, per event loop: the default backend.

    Takes no arguments; `Scheduler` uses one process-wide instance unless given
    another backend.

    aiolimiter buckets and asyncio futures belong to one event loop, so the
    state is kept per loop (weakly: a closed loop's state goes with it). Every
    scheduler on one loop that uses this backend shares one bucket per portal
    and one budget per key. Clients on *different* loops of one process (say, a
    sync facade's thread and an async app) do not share: give them a
    :class:`~bitrix_results._scheduler.redis.RedisBackend`.

    Every step is done at once (the ``_now`` forms); the async forms only wrap
    them. Nothing awaits between reading and writing a bucket or a
    :class:`KeyState`, so on one event loop every decision is atomic without a
    lock.

    The first scheduler to use a portal's bucket sets its capacity and rate.
    """

    def __init__(self) -> None:
        self._states: PerLoop[_LoopState] = PerLoop(_LoopState)

    def _bucket(self, portal: str, config: BucketConfig) -> MemoryBucket:
        buckets = self._states.get().buckets
        bucket = buckets.get(portal)
        if bucket is None:
            bucket = buckets[portal] = MemoryBucket(config)
        return bucket

    # -- bucket -------------------------------------------------------------------

    def reserve_now(self, portal: str, config: BucketConfig) -> Reservation | None:
        return self._bucket(portal, config).try_reserve()

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        return await self._bucket(portal, config).reserve()

    async def rate_limited(
        self, portal: str, config: BucketConfig, reservation: Reservation, clock: Clock
    ) -> None:
        self._bucket(portal, config).rate_limited(reservation)

    def succeeded_now(self, portal: str, config: BucketConfig) -> bool:
        self._bucket(portal, config).succeeded()
        return True

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        self.succeeded_now(portal, config)

    def bucket_statistics(self, portal: str) -> BucketStatistics | None:
        state = self._states.current()
        bucket = None if state is None else state.buckets.get(portal)
        if bucket is None:
            return None
        try:
            level = bucket.level
        except RuntimeError:  # outside the loop: the level as last computed
            level = bucket._level
        return BucketStatistics(
            portal=portal,
            level=level,
            capacity=bucket.max_rate,
            drain_per_second=bucket.drain_per_second,
            nominal_drain_per_second=bucket.nominal_drain,
        )

    # -- budget -------------------------------------------------------------------

    @staticmethod
    def _budgets(
        state: _LoopState, keys: Sequence[tuple[BudgetKey, int]]
    ) -> dict[BudgetKey, KeyState]:
        # The loop's own dict, every key present: budget.py only indexes it by
        # ``keys``, so no dict of just those keys is built per call.
        budgets = state.budgets
        for key, _ in keys:
            if key not in budgets:
                budgets[key] = KeyState()
        return budgets

    def admit_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        state = self._states.get()
        admission = try_admit(self._budgets(state, keys), ticket, keys, rules, clock.time())
        if admission.admitted:
            # There may be room for the next one too: let it look.
            state.waiters.wake_first(keys)
        else:
            state.waiters.handed_on(admission, woken_by)
        return admission

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        return self.admit_now(ticket, keys, rules, clock, woken_by=woken_by)

    async def wait_budget(
        self, admission: Admission, clock: Clock, *, attempt: int = 1
    ) -> BudgetKey | None:
        return await self._states.get().waiters.wait(
            admission.blocked_by, admission.retry_at - clock.time(), clock
        )

    def settle_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> bool:
        state = self._states.get()
        settle(self._budgets(state, keys), ticket, keys, settlement, rules, clock.time())
        state.waiters.wake_first(keys)
        return True

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        self.settle_now(ticket, keys, settlement, rules, clock)

    def budget_statistics(self, key: BudgetKey) -> BudgetStatistics | None:
        state = self._states.current()
        budget = None if state is None else state.budgets.get(key)
        return None if budget is None else statistics_of(key, budget)


_DEFAULT = MemoryBackend()


def default_backend() -> MemoryBackend:
    """The process-wide memory backend every scheduler uses unless told otherwise."""
    return _DEFAULT
