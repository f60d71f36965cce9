"""The scheduler: every call goes through :meth:`Scheduler.execute`.

One logical call, start to finish::

    slot + budget admission ─► bucket slot ─► transport.send ─► learn from reply
          ▲                                                         │
          └────────── retry (safe, or ambiguous + idempotent) ◄─────┘

- **Concurrency + budget**: take one of ``concurrency`` slots (``slots.Slots``, a
  first-come, first-served semaphore), then ask the budget to admit the call on
  every operating-budget key (``call.budget_keys()``, per credential; ``budget.py``).
  Refused, the call gives its slot back while it waits, so a held key holds
  only the calls that use it; admitted, it keeps the slot, so calls admitted
  but not yet answered are bounded by ``concurrency``.
- **Bucket**: reserve one request in the portal's leaky bucket right before
  sending, never after (a batch is one request, api-facts §1).
- **Learn**: the reply's ``time`` updates the budget; 503 marks the bucket
  full and slows it; 429 holds the key until the reset.
- **Retry**: ``retry.py`` decides what may be sent again, ``retrying.py``
  when (caps, backoff, the 429 deadline, settle time); the same ``Call``
  object is resent, so a REST 3.0 write keeps its Idempotency-Key. An expired
  token is refreshed before the resend, and a failed refresh is classified like
  any other failure. Once an attempt of a write may have executed, giving up
  raises ``OutcomeUnknownError`` whatever the last failure was.

``Scheduler`` holds the retry loop; one attempt (admission, bucket, send,
learning, settling) and the counters are ``attempts.py``.
"""

from __future__ import annotations

import logging
import random

from .._transport.types import Call, Reply, Transport
from ..errors import ExpiredTokenError
from .attempts import Attempts, HeldTooLong, QueuedTime
from .backends import Backend, default_backend
from .bucket import DEFAULT_HEADROOM, BucketConfig
from .budget import BudgetKey, BudgetRules, merge_keys
from .clock import Clock, SystemClock
from .limits import Limits
from .retry import RetryPolicy, reason
from .retrying import RetryState
from .stats import SchedulerStatistics

# Rare paths only (a retry, giving up), and only method names and numbers:
# never a URL, a key or a credential.
_log = logging.getLogger("bitrix_results.scheduler")

__all__ = ["MAX_DEFAULT_CONCURRENCY", "MIN_DEFAULT_CONCURRENCY", "Scheduler"]

#: The most calls in flight by default, however large the burst (an enterprise
#: plan's 250): more would only queue in the bucket, each holding a connection.
MAX_DEFAULT_CONCURRENCY = 64
#: The fewest by default, however small the burst.
MIN_DEFAULT_CONCURRENCY = 16

#: Merged budget keys cached per (credential, budget); bounded so that callers of
#: ``client.call`` with ever-new method names cannot grow it without end.
_KEYS_CACHE_SIZE = 1024


class Scheduler:
    """Paces calls to the portal's limits and retries what is safe to retry.

    A client builds its own from its options; build one yourself to share it
    between clients or to keep the limits' state in Redis (design §2.5).

    Args:
        limits: The portal's bucket and budget.
        backend: Where the limits' state lives. Default: the process-wide
            `MemoryBackend`, so every scheduler of one portal in this process (on
            one event loop) shares one bucket. A `RedisBackend` shares it across
            processes and hosts.
        concurrency: Calls in flight at most. Default: as many as the bucket
            admits at once (the burst less the headroom: 48 on a standard plan),
            at least 16 and at most 64.
        headroom: Requests of the burst left unused, for other clients of the
            webhook (default 2).
        retry: Attempt and time caps, backoff (default ``RetryPolicy()``).
        clock: Wall time, loop time and sleep; tests inject a virtual one.

    Raises:
        TypeError: ``limits`` is not a `Limits`.
        ValueError: ``concurrency`` is not a positive int or ``headroom`` is negative.

    Example:
        ```python
        backend = RedisBackend.from_url("redis://localhost:6379/0")
        scheduler = Scheduler(Limits.standard(), backend=backend)
        client = ResultsClient.from_webhook(url, scheduler=scheduler)
        ```
    """

    def __init__(
        self,
        limits: Limits,
        *,
        backend: Backend | None = None,
        concurrency: int | None = None,
        headroom: int = DEFAULT_HEADROOM,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(limits, Limits):
            raise TypeError(f"limits: must be a Limits, got {type(limits).__name__}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency: must be a positive int, got {concurrency!r}")
        if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:
            raise ValueError(f"headroom: must be a non-negative int, got {headroom!r}")
        self._limits = limits
        self._backend: Backend = backend if backend is not None else default_backend()
        # Never below one slot, so a tiny test burst still works with the default headroom.
        self._bucket = BucketConfig(
            capacity=max(1, limits.burst - headroom), drain_per_second=limits.drain_per_second
        )
        if concurrency is None:
            # What the portal takes at once: fewer slots would leave the burst
            # unused (a bulk read of 40 batches in three waves instead of one).
            # At least 16: a small custom burst with a fast drain still needs
            # drain x round trip calls in flight to keep the drain busy.
            concurrency = min(
                MAX_DEFAULT_CONCURRENCY, max(MIN_DEFAULT_CONCURRENCY, int(self._bucket.capacity))
            )
        self._concurrency = concurrency
        rules = BudgetRules.from_limits(limits)
        self._retry = retry if retry is not None else RetryPolicy()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = random.Random()
        self._attempts = Attempts(
            self._backend,
            self._bucket,
            rules,
            # How long a 429-limited call waits without progress (Attempts.limit_deadline).
            give_up_after=float(limits.operating_window) + rules.basket,
            concurrency=concurrency,
            clock=self._clock,
        )
        # (credential, call.budget or call.method) -> merged budget keys: the
        # same few shapes recur on every call, so merge them once.
        self._merged: dict[tuple[str, object], tuple[tuple[BudgetKey, int], ...]] = {}
        # What statistics() reports (ordered sets: dicts with None values).
        self._portals: dict[str, None] = {}
        self._keys: dict[BudgetKey, None] = {}

    def __repr__(self) -> str:
        return (
            f"Scheduler(limits={self._limits!r}, concurrency={self._concurrency}, "
            f"capacity={self._bucket.capacity}, backend={self._backend!r})"
        )

    @property
    def limits(self) -> Limits:
        """The limits the scheduler paces to."""
        return self._limits

    @property
    def concurrency(self) -> int:
        """Calls in flight at most."""
        return self._concurrency

    @property
    def capacity(self) -> float:
        """The bucket level we never exceed: ``burst - headroom``."""
        return self._bucket.capacity

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every call."""
        return self._retry

    @property
    def backend(self) -> Backend:
        """Where the limits' state lives."""
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
        shape = (credential, call.budget or call.method)
        keys = self._merged.get(shape)
        if keys is None:
            keys = merge_keys(((credential, method), units) for method, units in call.budget_keys())
            if len(self._merged) >= _KEYS_CACHE_SIZE:
                self._merged.clear()
            self._merged[shape] = keys
            for key, _ in keys:
                self._keys.setdefault(key)
        self._portals.setdefault(portal)
        attempts = self._attempts
        started = self._clock.monotonic()
        queued = QueuedTime()
        tries = 0
        # Made at the first failure: a call that succeeds at once needs none.
        state: RetryState | None = None
        # The expired-token error to refresh before the next send, if any.
        expired: ExpiredTokenError | None = None
        while True:
            tries += 1
            refreshing = expired is not None
            try:
                if expired is not None:
                    # api-facts §7: on expired_token refresh, then repeat the same call.
                    await transport.refresh_auth(expired)
                    expired = None
                    refreshing = False
                return await attempts.attempt(
                    call,
                    transport,
                    portal,
                    keys,
                    queued,
                    retrying=tries > 1,
                    limited_since=None if state is None else state.limited_since,
                )
            except HeldTooLong:
                # Only a call that got a 429 has a hold deadline.
                assert state is not None
                assert state.last_limit is not None
                last_limit = state.last_limit
                raise attempts.held_too_long(call, last_limit) from last_limit
            except Exception as exc:
                failure = exc
            if state is None:
                state = RetryState(attempts, self._retry, self._rng, self._clock, started)
            delay = state.delay(failure, call, keys, queued, tries=tries, refreshing=refreshing)
            if delay is not None:
                if isinstance(failure, ExpiredTokenError):
                    expired = failure
                attempts.retries[reason(failure)] += 1
                _log.info(
                    "retrying %s after %s (attempt %d of at most %d, backoff %.2f s)",
                    call.method,
                    reason(failure),
                    tries + 1,
                    self._retry.max_attempts,
                    delay,
                )
                if delay > 0:
                    await self._clock.sleep(delay)
                continue
            _log.info("giving up on %s after %d attempts (%s)", call.method, tries, reason(failure))
            error = state.give_up(failure, call)
            if error is failure:
                raise failure
            raise error from failure

    # -- statistics ---------------------------------------------------------------

    def statistics(self) -> SchedulerStatistics:
        """Take a frozen snapshot: this scheduler's counters and the limits' state.

        Returns:
            Counters since the scheduler was made, and each portal's bucket and each
                method's budget as last seen.
        """
        return self._attempts.statistics(self._portals, self._keys)
