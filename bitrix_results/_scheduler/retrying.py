"""Whether and when a failed attempt is sent again: one call's retry state.

``Scheduler.execute`` makes a :class:`RetryState` at a call's first failure
(a call that succeeds at once never pays for one) and asks it, after every
failure, for the delay before the next attempt. The decision table is
``retry.py``; this module adds what depends on the call's history: the attempt,
time and connect caps, the backoff, the expired-token refresh cap, the 429
deadline and the settle time of a keyed write.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .._transport.types import Call, RetryClass
from ..errors import ConnectError, ExpiredTokenError, OperatingLimitError, OutcomeUnknownError
from .attempts import Attempts, QueuedTime
from .budget import BudgetKey
from .clock import Clock
from .retry import (
    RetryPolicy,
    Safety,
    classify_call,
    classify_refresh,
    may_retry,
    needs_backoff,
    needs_settling,
    outcome_unknown_after,
)

__all__ = ["RetryState"]


class RetryState:
    """The retry history of one logical call, from its first failure on.

    Args:
        attempts: The scheduler's attempt machinery (replies seen, 429 deadline).
        policy: Attempt and time caps, backoff.
        rng: Jitter for the backoff.
        clock: Loop time.
        started: When the call started (monotonic).
    """

    __slots__ = (
        "_attempts",
        "_clock",
        "_policy",
        "_rng",
        "_started",
        "ambiguous",
        "backoffs",
        "connects",
        "last_limit",
        "limited",
        "limited_since",
        "refreshes",
        "replies_at_refresh",
    )

    def __init__(
        self,
        attempts: Attempts,
        policy: RetryPolicy,
        rng: random.Random,
        clock: Clock,
        started: float,
    ) -> None:
        self._attempts = attempts
        self._policy = policy
        self._rng = rng
        self._clock = clock
        self._started = started
        # 429s: not counted against max_attempts, the operating window caps them.
        self.limited = 0
        self.backoffs = 0
        self.connects = 0
        self.refreshes = 0
        # Attempts.replies when this call last refreshed: a reply since then means
        # the refreshes work (tokens simply keep expiring), not a broken portal.
        self.replies_at_refresh = -1
        #: When this call first got a 429; its holds end one window later.
        self.limited_since: float | None = None
        self.last_limit: OperatingLimitError | None = None
        #: Whether an earlier attempt may have executed the call.
        self.ambiguous = False

    def delay(
        self,
        failure: Exception,
        call: Call,
        keys: Sequence[tuple[BudgetKey, int]],
        queued: QueuedTime,
        *,
        tries: int,
        refreshing: bool,
    ) -> float | None:
        """Seconds to wait before sending ``call`` again, or None to give up.

        ``tries``: attempts made so far, this one included. ``refreshing``: the
        failure is that of the token refresh before the attempt, not of a send.

        Raises:
            OperatingLimitError: The call is still refused with 429 after its
                deadline (``OutcomeUnknownError`` for a write batch).
        """
        policy = self._policy
        clock = self._clock
        # One decision table (retry.py): what this failure says about the call.
        safety = classify_refresh(failure) if refreshing else classify_call(failure, call)
        if safety is Safety.AMBIGUOUS:
            self.ambiguous = True
        if not may_retry(safety, call.retry_class):
            return None
        delay = 0.0
        capped = False
        if isinstance(failure, ConnectError):
            # Unreachable, not ambiguous: a couple of quick tries, then
            # the cause (refused, DNS, TLS) goes to the caller.
            self.connects += 1
            capped = self.connects > policy.connect_retries
            delay = self._rng.random() * policy.connect_delay
        elif isinstance(failure, ExpiredTokenError):
            # Refreshed at once the first time (a token simply expired);
            # a portal that refuses fresh tokens too gets a few more
            # tries, backed off, then the typed error.
            replies = self._attempts.replies
            if replies != self.replies_at_refresh:
                self.refreshes = 0
            self.replies_at_refresh = replies
            self.refreshes += 1
            capped = self.refreshes > policy.max_refreshes
            if self.refreshes > 1:
                delay = policy.backoff(self.refreshes - 1, self._rng)
        elif isinstance(failure, OperatingLimitError) and safety is Safety.SAFE:
            self.last_limit = failure
            self.limited += 1
            now = clock.monotonic()
            if self.limited_since is None:
                self.limited_since = now
            elif now >= self._attempts.limit_deadline(keys, self.limited_since):
                raise self._attempts.held_too_long(call, failure) from failure
        elif needs_backoff(failure):
            self.backoffs += 1
            delay = policy.backoff(self.backoffs, self._rng)
        if (
            not refreshing
            and call.retry_class is RetryClass.KEYED_WRITE
            and queued.sent_at is not None
            and needs_settling(failure)
        ):
            # The first request may still be executing: a same-key request
            # sent now could run beside it (api-facts §4.1). Wait until the
            # portal has cut it off at the latest.
            settle = policy.settle_time - (clock.monotonic() - queued.sent_at)
            delay = max(delay, settle)
        # Time spent failing: queueing for the limits does not count.
        failing = clock.monotonic() - self._started - queued.seconds
        if (
            not capped
            and tries - self.limited < policy.max_attempts
            and failing + delay <= policy.max_elapsed
        ):
            return delay
        return None

    def give_up(self, failure: Exception, call: Call) -> Exception:
        """The error to raise for ``call`` when ``failure`` is its last.

        A write that may have executed on an earlier attempt (or on this one,
        with no key to make a resend safe) has an unknown outcome, whatever this
        failure says: the caller must check the portal before sending it again
        (design §2.4).
        """
        if outcome_unknown_after(call, self.ambiguous):
            return OutcomeUnknownError(call.method, failure)
        return failure
