"""The scheduler: every call goes through :meth:`Scheduler.execute`.

One logical call, start to finish::

    slot + budget admission ─► bucket slot ─► transport.send ─► learn from reply
          ▲                                                         │
          └────────── retry (safe, or ambiguous + idempotent) ◄─────┘

- **Concurrency + budget**: take one of ``concurrency`` slots (an anyio
  ``CapacityLimiter``), then ask the budget to admit the call on every
  operating-budget key (``call.budget_keys()``, per credential; ``budget.py``).
  Refused, the call gives its slot back while it waits, so a held key holds
  only the calls that use it; admitted, it keeps the slot, so calls admitted
  but not yet answered are bounded by ``concurrency``.
- **Bucket**: reserve one request in the portal's leaky bucket right before
  sending, never after (a batch is one request, facts §1).
- **Learn**: the reply's ``time`` updates the budget; 503 marks the bucket
  full and slows it; 429 holds the key until the reset.
- **Retry**: ``retry.py`` decides what may be sent again; the same ``Call``
  object is resent, so a REST 3.0 write keeps its Idempotency-Key. An expired
  token is refreshed before the resend, and a failed refresh is classified like
  any other failure. Once an attempt of a write may have executed, giving up
  raises ``OutcomeUnknownError`` whatever the last failure was.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import anyio

from .._transport.types import Call, Reply, Transport
from ..errors import ExpiredTokenError, OperatingLimitError, OutcomeUnknownError, RateLimitError
from .backends import Backend, default_backend
from .bucket import DEFAULT_HEADROOM, BucketConfig
from .budget import BudgetKey, BudgetRules, Settlement, merge_keys
from .clock import Clock, SystemClock
from .limits import Limits
from .retry import (
    RetryPolicy,
    Safety,
    classify_call,
    classify_refresh,
    may_retry,
    needs_backoff,
    outcome_unknown_after,
    reason,
)
from .stats import BucketStatistics, BudgetStatistics, SchedulerStatistics

__all__ = ["Scheduler"]

_FAILED = Settlement("failed")
_OPERATING_LIMIT = Settlement("operating_limit")


@dataclass
class _Progress:
    """Per logical call: seconds spent queueing (pacing), which is not failing."""

    queued: float = 0.0


class Scheduler:
    """Paces calls to the portal's limits and retries what is safe to retry.

    ``limits``: the portal's bucket and budget (:class:`Limits`).
    ``backend``: where the limits' state lives; default: the process-wide
    memory backend, so every scheduler of one portal in this process (on one
    event loop) shares one bucket. Pass a ``RedisBackend`` to share across
    processes (SPEC §2.5).
    ``concurrency``: calls in flight at most.
    ``headroom``: requests of the burst left unused (``bucket.DEFAULT_HEADROOM``).
    ``retry``: attempt and time caps, backoff (:class:`RetryPolicy`).
    ``clock``: wall time, loop time and sleep (:class:`Clock`); tests inject one.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        backend: Backend | None = None,
        concurrency: int = 16,
        headroom: int = DEFAULT_HEADROOM,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(limits, Limits):
            raise TypeError(f"limits: must be a Limits, got {type(limits).__name__}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency: must be a positive int, got {concurrency!r}")
        if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:
            raise ValueError(f"headroom: must be a non-negative int, got {headroom!r}")
        self._limits = limits
        self._backend: Backend = backend if backend is not None else default_backend()
        self._concurrency = concurrency
        # Never below one slot, so a tiny test burst still works with the default headroom.
        self._bucket = BucketConfig(
            capacity=max(1, limits.burst - headroom), drain_per_second=limits.drain_per_second
        )
        self._rules = BudgetRules.from_limits(limits)
        self._retry = retry if retry is not None else RetryPolicy()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = random.Random()
        # anyio limiters bind to the event loop they are first used on.
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anyio.CapacityLimiter
        ] = weakref.WeakKeyDictionary()
        # Tickets name a call in flight in shared (Redis) state: unique per process.
        self._prefix = uuid.uuid4().hex[:12]
        self._tickets = itertools.count(1)
        # What statistics() reports (ordered sets: dicts with None values).
        self._portals: dict[str, None] = {}
        self._keys: dict[BudgetKey, None] = {}
        self._sent = 0
        self._bucket_waits = 0
        self._bucket_wait_seconds = 0.0
        self._budget_waits = 0
        self._budget_wait_seconds = 0.0
        self._retries: Counter[str] = Counter()
        self._rate_limit_hits = 0
        self._operating_limit_hits = 0
        self._in_flight = 0

    def __repr__(self) -> str:
        return (
            f"Scheduler(limits={self._limits!r}, concurrency={self._concurrency}, "
            f"capacity={self._bucket.capacity}, backend={self._backend!r})"
        )

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def capacity(self) -> float:
        """The bucket level we never exceed: ``burst - headroom``."""
        return self._bucket.capacity

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def backend(self) -> Backend:
        return self._backend

    # -- the one entry point ------------------------------------------------------

    async def execute(self, call: Call, transport: Transport) -> Reply:
        """Send ``call`` when the limits allow, retry what is safe, return its reply.

        Raises the call's typed error when it is fatal or retries are exhausted,
        and :class:`~bitrix_results.errors.OutcomeUnknownError` when a write may
        have executed and cannot be repeated safely.
        """
        portal = transport.portal
        credential = transport.credential
        keys = merge_keys(((credential, method), units) for method, units in call.budget_keys())
        self._portals.setdefault(portal)
        for key, _ in keys:
            self._keys.setdefault(key)
        clock = self._clock
        policy = self._retry
        started = clock.monotonic()
        progress = _Progress()
        attempts = 0
        backoffs = 0
        # Whether an earlier attempt may have executed the call.
        ambiguous = False
        # The expired-token error to refresh before the next send, if any.
        expired: ExpiredTokenError | None = None
        while True:
            attempts += 1
            refreshing = expired is not None
            try:
                if expired is not None:
                    # facts §7: on expired_token refresh, then repeat the same call.
                    await transport.refresh_auth(expired)
                    expired = None
                    refreshing = False
                return await self._attempt(call, transport, portal, keys, progress)
            except Exception as exc:
                failure = exc
            # One decision table (retry.py): what this failure says about the call.
            safety = classify_refresh(failure) if refreshing else classify_call(failure, call)
            if safety is Safety.AMBIGUOUS:
                ambiguous = True
            if may_retry(safety, call.retry):
                delay = 0.0
                if needs_backoff(failure):
                    backoffs += 1
                    delay = policy.backoff(backoffs, self._rng)
                # Time spent failing: queueing for the limits does not count.
                failing = clock.monotonic() - started - progress.queued
                if attempts < policy.max_attempts and failing + delay <= policy.max_elapsed:
                    if isinstance(failure, ExpiredTokenError):
                        expired = failure
                    self._retries[reason(failure)] += 1
                    if delay > 0:
                        await clock.sleep(delay)
                    continue
            # Giving up. A write that may have executed on an earlier attempt (or
            # on this one, with no key to make a resend safe) has an unknown
            # outcome, whatever this failure says: the caller must check the
            # portal before sending it again (SPEC §2.4).
            if outcome_unknown_after(call, ambiguous):
                raise OutcomeUnknownError(call.method, failure) from failure
            raise failure

    async def _attempt(
        self,
        call: Call,
        transport: Transport,
        portal: str,
        keys: Sequence[tuple[BudgetKey, int]],
        progress: _Progress,
    ) -> Reply:
        backend = self._backend
        clock = self._clock
        ticket = f"{self._prefix}-{next(self._tickets)}"
        limiter = self._limiter()
        # A fresh borrower per attempt: anyio allows one token per borrower, and
        # a task may run several executes (or nest one in a transport).
        borrower = object()
        await self._admit(ticket, keys, limiter, borrower, progress)
        self._in_flight += 1
        settlement = _FAILED
        cancelled = False
        try:
            reservation = await backend.reserve(portal, self._bucket, clock)
            if reservation.waited > 0:
                self._bucket_waits += 1
                self._bucket_wait_seconds += reservation.waited
                progress.queued += reservation.waited
            self._sent += 1
            try:
                reply = await transport.send(call)
            except RateLimitError:
                # 503: another tenant on our address fills the portal's bucket
                # (facts §1). Nothing executed; the retry is paced by the bucket.
                self._rate_limit_hits += 1
                await backend.rate_limited(portal, self._bucket, reservation, clock)
                raise
            except OperatingLimitError:
                # 429: the key is held until its reset (facts §2.2). The refused
                # call did not run, but a batch's earlier commands may have
                # (SPEC §3): retry.classify_call decides whether to resend.
                self._operating_limit_hits += 1
                settlement = _OPERATING_LIMIT
                raise
            settlement = Settlement("replied", reply.time, reply.replayed)
            await backend.succeeded(portal, self._bucket, clock)
            return reply
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._in_flight -= 1
            limiter.release_on_behalf_of(borrower)
            settling = backend.settle(ticket, keys, settlement, self._rules, clock)
            if cancelled:
                # Settle even when cancelled, or the units stay in flight (with
                # Redis, until the lease runs out); shielded from a second cancel.
                await asyncio.shield(settling)
            else:
                await settling

    async def _admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        limiter: anyio.CapacityLimiter,
        borrower: object,
        progress: _Progress,
    ) -> None:
        """Return holding a concurrency slot, with ``ticket`` admitted on every key."""
        clock = self._clock
        budget_waited = 0.0
        refusals = 0
        woken_by: BudgetKey | None = None
        while True:
            before = clock.monotonic()
            await limiter.acquire_on_behalf_of(borrower)
            progress.queued += clock.monotonic() - before
            try:
                admission = await self._backend.try_admit(
                    ticket, keys, self._rules, clock, woken_by=woken_by
                )
            except BaseException:
                limiter.release_on_behalf_of(borrower)
                raise
            if admission.admitted:
                break
            # Wait without the slot: a held key must not starve the others.
            limiter.release_on_behalf_of(borrower)
            refusals += 1
            before = clock.monotonic()
            woken_by = await self._backend.wait_budget(admission, clock, attempt=refusals)
            budget_waited += clock.monotonic() - before
        if refusals:
            self._budget_waits += 1
            self._budget_wait_seconds += budget_waited
            progress.queued += budget_waited

    def _limiter(self) -> anyio.CapacityLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(self._concurrency)
        return limiter

    # -- statistics ---------------------------------------------------------------

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot: this scheduler's counters and the limits' state."""
        buckets: dict[str, BucketStatistics] = {}
        for portal in self._portals:
            bucket = self._backend.bucket_statistics(portal)
            if bucket is not None:
                buckets[portal] = bucket
        budgets: dict[BudgetKey, BudgetStatistics] = {}
        for key in self._keys:
            budget = self._backend.budget_statistics(key)
            if budget is not None:
                budgets[key] = budget
        return SchedulerStatistics(
            requests_sent=self._sent,
            bucket_waits=self._bucket_waits,
            bucket_wait_seconds=self._bucket_wait_seconds,
            budget_waits=self._budget_waits,
            budget_wait_seconds=self._budget_wait_seconds,
            retries=MappingProxyType(dict(self._retries)),
            rate_limit_hits=self._rate_limit_hits,
            operating_limit_hits=self._operating_limit_hits,
            in_flight=self._in_flight,
            buckets=MappingProxyType(buckets),
            budgets=MappingProxyType(budgets),
        )
