"""Retry safety, in one place: which failures may be sent again, and how long to wait.

Every failure is one of three kinds (design §2.4):

- **safe**: the portal refused before executing (503 ``QUERY_LIMIT_EXCEEDED``,
  429 ``OPERATION_TIME_LIMIT``, 401 ``expired_token``) or the request never
  reached it (connect error). Always retried.
- **ambiguous**: the request was sent and may have executed (timeout, the
  connection dropped after sending, a 5xx, a non-JSON body with a 5xx status).
  Retried only for reads and for REST 3.0 writes with an ``Idempotency-Key``
  (the same call object, so the same key, and the portal replays, api-facts §4.1).
  A write no key protects raises :class:`~bitrix_results.errors.OutcomeUnknownError`.
- **fatal**: everything else (validation, permission, not found, idempotency
  key errors, other auth errors, service blocked). Raised as is, never retried.

Two refinements need the call, not just the error (:func:`classify_call`):

- A 429 on a *write batch* is ambiguous, not safe: the portal may refuse the
  Nth command after running the first N-1 and keep them (design §3: a failing
  command may leave earlier commands executed). A 503 stays safe: the bucket
  refuses the whole request before any command runs (api-facts §1).
- Once any attempt of a write was ambiguous, every later way of giving up
  (a fatal error, exhausted retries, a failed token refresh) raises
  :class:`~bitrix_results.errors.OutcomeUnknownError` (:func:`outcome_unknown_after`):
  the earlier attempt may have executed, whatever the last one said.

Errors of the token refresh between attempts are classified by
:func:`classify_refresh`: the call was not sent, so a transport failure of the
refresh is safe to retry; anything else (``OAuthError``) is fatal.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .._transport.types import Call, RetryClass
from ..errors import (
    ConnectError,
    ConnectionLostError,
    DecodeError,
    ExpiredTokenError,
    OperatingLimitError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerError,
)

__all__ = [
    "RetryPolicy",
    "Safety",
    "classify",
    "classify_call",
    "classify_refresh",
    "is_batch",
    "may_retry",
    "needs_backoff",
    "needs_settling",
    "outcome_unknown_after",
    "reason",
]


class Safety(enum.Enum):
    """What a failure says about whether the call executed."""

    #: Not executed: send it again.
    SAFE = "safe"
    #: May have executed: only idempotent calls may be sent again.
    AMBIGUOUS = "ambiguous"
    #: Sending it again cannot help.
    FATAL = "fatal"


def classify(exc: BaseException) -> Safety:
    """The one table of retry safety (order matters: subclasses first)."""
    if isinstance(exc, RateLimitError | OperatingLimitError | ExpiredTokenError | ConnectError):
        return Safety.SAFE
    if isinstance(
        exc, RequestTimeoutError | ConnectionLostError | ResponseTooLargeError | ServerError
    ):
        return Safety.AMBIGUOUS
    if isinstance(exc, DecodeError) and exc.status >= 500:
        # An HTML error page from a proxy or the portal's front end: the call
        # may have run behind it (api-facts §6, non-JSON bodies).
        return Safety.AMBIGUOUS
    return Safety.FATAL


def is_batch(call: Call) -> bool:
    """Whether ``call`` is a batch: several commands in one request.

    Any call charged to more than one budget key is one (``budget.py``).
    """
    return call.method == "batch" or len(call.budget_keys()) > 1


def classify_call(exc: BaseException, call: Call) -> Safety:
    """What a failure of ``call`` says about whether it executed.

    :func:`classify`, except that a 429 on a batch that writes is ambiguous:
    the operating limit can refuse a command in the middle of the batch after
    the earlier ones ran, and the portal may keep them (design §3). Re-sending
    the batch would create them again. A read batch may be re-read, and a 503
    or an expired token refuses the whole request before anything runs.
    """
    safety = classify(exc)
    if (
        isinstance(exc, DecodeError)
        and exc.status < 300
        and call.retry_class is not RetryClass.READ
    ):
        # A 2xx whose body we cannot read, after a write: the portal said it
        # did something, we cannot tell what. Like a lost answer (design §2.4).
        return Safety.AMBIGUOUS
    if (
        safety is Safety.SAFE
        and isinstance(exc, OperatingLimitError)
        and call.retry_class is not RetryClass.READ
        and is_batch(call)
    ):
        return Safety.AMBIGUOUS
    return safety


def classify_refresh(exc: BaseException) -> Safety:
    """What a failure of the token refresh before a resend says about the call.

    The call itself was not sent, so a transport failure of the token request
    (no connection, no answer, connection dropped) is safe to retry. The OAuth
    server refusing the refresh (``OAuthError``), or anything else, is fatal.
    """
    if isinstance(exc, ConnectError | RequestTimeoutError | ConnectionLostError):
        return Safety.SAFE
    return Safety.FATAL


def may_retry(safety: Safety, retry: RetryClass) -> bool:
    """Whether a failure of this safety may be retried for a call of this class."""
    if safety is Safety.SAFE:
        return True
    if safety is Safety.AMBIGUOUS:
        return retry is not RetryClass.UNKEYED_WRITE
    return False


def reason(exc: BaseException) -> str:
    """The statistics key of a retry."""
    if isinstance(exc, RateLimitError):
        return "rate_limit"
    if isinstance(exc, OperatingLimitError):
        return "operating_limit"
    if isinstance(exc, ExpiredTokenError):
        return "expired_token"
    if isinstance(exc, ConnectError):
        return "connect"
    if isinstance(exc, RequestTimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionLostError):
        return "connection_lost"
    if isinstance(exc, ServerError):
        return "server_error"
    if isinstance(exc, DecodeError):
        return "decode_error"
    return type(exc).__name__


def needs_backoff(exc: BaseException) -> bool:
    """Whether a retry should first sleep the exponential backoff.

    503 and 429 need none: the bucket (marked full) and the budget (held until
    the reset) already pace the retry. An expired token is refreshed and
    repeated at once (the first time). Connect errors sleep their own short
    delay (``RetryPolicy.connect_delay``). Ambiguous failures back off: the
    portal or the network is unwell and hammering it will not help.
    """
    return classify(exc) is Safety.AMBIGUOUS


def needs_settling(exc: BaseException) -> bool:
    """Whether the request that failed with ``exc`` may still be running on the portal.

    True when no answer of the portal's own came back: a timeout, a dropped
    connection, or a proxy's 502 or 504 page (the proxy gave up on the portal,
    which may still execute). A JSON error from the portal itself, or another
    error page, means the request is over.
    """
    if isinstance(exc, RequestTimeoutError | ConnectionLostError):
        return True
    return isinstance(exc, DecodeError) and exc.status in _GATEWAY_STATUSES


#: A proxy's "bad gateway" and "gateway timeout": the upstream may still run.
_GATEWAY_STATUSES = frozenset({502, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long one call is retried. Everything is capped.

    What is retried at all is fixed by the call, not the policy: failures that
    executed nothing always, ambiguous ones only for reads and keyed writes. When
    a cap is reached the last error is raised (``OutcomeUnknownError`` for a write
    that may have executed). The defaults bound every way a call can fail; the
    worst cases are in a table in ``docs/rate-limits.md``.

    Args:
        max_attempts: Sends of one call, the first included. 10: enough to ride
            out a second tenant's burst (each 503 is an attempt) and a flaky
            network. A 429 is not an attempt: the portal is pacing the method,
            and a call held by 429s gives up once no call of its method has got
            through for an operating window and one basket (11 minutes on a real
            portal), with an ``OperatingLimitError`` that says so.
        max_elapsed: Seconds one call may spend *failing*, from its first send,
            not counting time queued for the bucket, the budget or a concurrency
            slot (queueing is pacing, not failure). No retry starts once this is
            spent, so a call fails within ``max_elapsed`` plus one transport
            timeout. 120 s: a silent portal fails a call after two timeouts
            (about 131 s with the 65 s default timeout). ``math.inf``: no cap.
        base_delay: The first backoff cap, in seconds. Ambiguous failures (and
            token refreshes after the first) back off exponentially with full
            jitter: attempt *n* sleeps a uniform random time in
            ``[0, min(max_delay, base_delay * 2**(n-1))]``, so many callers that
            failed together do not retry together.
        max_delay: The largest backoff cap, in seconds (0.5 s doubles to 30 s).
        connect_retries: Retries after a connect failure (refused, name not
            resolved, TLS failed, connect timeout), per call (2). Such a failure
            is not ambiguous, the portal is simply unreachable: after these the
            ``ConnectError`` is raised. A refusing portal fails a call in about 2 s.
        connect_delay: The longest random sleep before a connect retry (1 s).
        max_refreshes: Token refreshes per call in a row while no call of the
            scheduler gets a reply (3). A portal that keeps answering
            ``expired_token`` to fresh tokens is broken; after the cap the
            ``ExpiredTokenError`` is raised. Tokens that merely expire often
            (other calls get through between) do not count.
        settle_time: After an ambiguous failure of a keyed write (a timeout, a
            dropped connection, a proxy's 502 or 504 page), the same
            Idempotency-Key is not sent again until this many seconds after the
            failed attempt was sent. Two requests with one key sent while the
            first still runs may both run (api-facts §4.1); a cloud portal cuts
            a request off after 60 s (api-facts §1), so 65 s after sending, the
            first has ended and the portal replays its stored answer. With the
            default 65 s transport timeout a timed-out write is resent at once;
            one whose connection dropped after a second waits the rest. Lower it
            only for a portal known to cut requests off sooner (a test portal).

    Raises:
        TypeError: ``max_attempts``, ``connect_retries`` or ``max_refreshes`` is
            not an int.
        ValueError: ``max_attempts`` is below 1, a count is negative, or a time
            is negative or NaN.

    Example:
        ```python
        client = ResultsClient.from_webhook(url, retry=RetryPolicy(max_attempts=3))
        ```
    """

    max_attempts: int = 10
    max_elapsed: float = 120.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    connect_retries: int = 2
    connect_delay: float = 1.0
    max_refreshes: int = 3
    settle_time: float = 65.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts: must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be at least 1, got {self.max_attempts!r}")
        for name in ("connect_retries", "max_refreshes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"{name}: must not be negative, got {value!r}")
        for name in ("max_elapsed", "base_delay", "max_delay", "connect_delay", "settle_time"):
            value = getattr(self, name)
            # `not value >= 0` also refuses NaN; infinity means "no cap".
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name}: must be a non-negative number, got {value!r}")

    @classmethod
    def no_backoff(cls, *, max_attempts: int = 10) -> RetryPolicy:
        """Retries without sleeping in between: for tests, where backoff only slows them.

        No backoff, no connect delay and no settle time: only for fakes and mocks,
        where no request can still be running when its resend goes (against a
        real portal, a keyed write resent at once may run twice, api-facts §4.1).
        Everything else is the default; 503 and 429 retries stay paced by the
        bucket and the budget, which never back off anyway.

        Args:
            max_attempts: Sends of one call, the first included.

        Returns:
            A policy with every delay (backoff, connect delay, settle time) 0.
        """
        return cls(
            max_attempts=max_attempts,
            base_delay=0.0,
            max_delay=0.0,
            connect_delay=0.0,
            settle_time=0.0,
        )

    def backoff_cap(self, failures: int) -> float:
        """The longest sleep after the ``failures``-th backed-off failure (1-based)."""
        if failures < 1:
            return 0.0
        # min() before the power would overflow: 2**1100 is a float error.
        exponent = min(failures - 1, 64)
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """A full-jitter sleep after the ``failures``-th backed-off failure."""
        draw = (rng or _RNG).random()
        return draw * self.backoff_cap(failures)


_RNG = random.Random()


def outcome_unknown_after(call: Call, ambiguous_seen: bool) -> bool:
    """Whether giving up must raise OutcomeUnknownError rather than the last error.

    A write that failed ambiguously at least once may have executed, whatever
    the last attempt said (a fatal refusal, a connect error, a failed token
    refresh); a read changes nothing.
    """
    return ambiguous_seen and call.retry_class is not RetryClass.READ
