"""Retry safety: what is retried, what raises OutcomeUnknownError, caps and backoff."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from scheduler_fakes import (
    ADD,
    FakeTransport,
    expired,
    make_call,
    now,
    ok,
    operating_limit,
    rate_limit,
    script,
)

from bitrix_results._scheduler import (
    Limits,
    MemoryBackend,
    RetryPolicy,
    Safety,
    Scheduler,
    classify,
)
from bitrix_results._scheduler.retry import classify_call, may_retry
from bitrix_results._transport.types import Call, Reply, RetryClass
from bitrix_results.errors import (
    AccessDeniedError,
    BatchError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    ExpiredTokenError,
    IdempotencyKeyError,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
    OAuthError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerError,
    ServiceBlockedError,
)
from bitrix_results.testing.virtual_time import VirtualClock, run

STANDARD = Limits.standard()

ERRORS: dict[str, tuple[Callable[[], BaseException], Safety]] = {
    "rate_limit_503": (rate_limit, Safety.SAFE),
    "operating_limit_429": (operating_limit, Safety.SAFE),
    "expired_token_401": (expired, Safety.SAFE),
    "connect": (lambda: ConnectError("connection refused"), Safety.SAFE),
    "timeout": (lambda: RequestTimeoutError("no answer in 60 s"), Safety.AMBIGUOUS),
    "connection_lost": (lambda: ConnectionLostError("reset by peer"), Safety.AMBIGUOUS),
    "server_500": (
        lambda: ServerError("Internal", code="INTERNAL_SERVER_ERROR", status=500),
        Safety.AMBIGUOUS,
    ),
    "html_502": (lambda: DecodeError("<html>", method=ADD, status=502), Safety.AMBIGUOUS),
    # FATAL for a read; after a write, classify_call makes it AMBIGUOUS (below).
    "html_200": (lambda: DecodeError("<html>", method=ADD, status=200), Safety.FATAL),
    "too_large": (lambda: ResponseTooLargeError("over the cap"), Safety.AMBIGUOUS),
    "validation": (
        lambda: InvalidRequestError(
            "bad", code="BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION", status=400
        ),
        Safety.FATAL,
    ),
    "access_denied": (
        lambda: AccessDeniedError("no", code="ACCESS_DENIED", status=403),
        Safety.FATAL,
    ),
    "not_found": (
        lambda: NotFoundError("no", code="ERROR_METHOD_NOT_FOUND", status=404),
        Safety.FATAL,
    ),
    "idempotency_key": (
        lambda: IdempotencyKeyError(
            "reused", code="BITRIX_REST_V3_EXCEPTION_IDEMPOTENCYKEYREUSEDEXCEPTION", status=422
        ),
        Safety.FATAL,
    ),
    "invalid_credentials": (
        lambda: InvalidCredentialsError("bad", code="NO_AUTH_FOUND", status=401),
        Safety.FATAL,
    ),
    "service_blocked": (
        lambda: ServiceBlockedError("blocked", code="OVERLOAD_LIMIT", status=503),
        Safety.FATAL,
    ),
    "batch": (
        lambda: BatchError("too long", code="ERROR_BATCH_LENGTH_EXCEEDED", status=400),
        Safety.FATAL,
    ),
    "oauth": (lambda: OAuthError("invalid_grant", "expired"), Safety.FATAL),
    "programming_error": (lambda: ValueError("bug"), Safety.FATAL),
}


def scheduler(retry: RetryPolicy | None = None, limits: Limits = STANDARD) -> Scheduler:
    return Scheduler(limits, clock=VirtualClock(), backend=MemoryBackend(), retry=retry)


@pytest.mark.parametrize("name", list(ERRORS))
def test_classify(name: str) -> None:
    factory, safety = ERRORS[name]
    assert classify(factory()) is safety


@pytest.mark.parametrize("retry", list(RetryClass))
@pytest.mark.parametrize("name", list(ERRORS))
def test_one_failure_then_success(name: str, retry: RetryClass) -> None:
    """Each error class x each retry class: retried, raised as is, or outcome unknown."""
    factory, _ = ERRORS[name]
    error = factory()
    # What the scheduler decides with: a 2xx it cannot decode after a write may
    # have executed (design §2.4), so it is ambiguous there.
    safety = classify_call(error, make_call(retry=retry))

    async def main() -> tuple[object, FakeTransport]:
        s = scheduler()
        transport = FakeTransport(script(error, ok(no_time=True)))
        try:
            return await s.execute(make_call(retry=retry), transport), transport
        except BaseException as exc:
            return exc, transport

    outcome, transport = run(main())
    if may_retry(safety, retry):
        assert isinstance(outcome, Reply)
        assert len(transport.sent) == 2
    elif safety is Safety.AMBIGUOUS:
        # A write no Idempotency-Key protects may have executed: never resent.
        assert retry is RetryClass.UNKEYED_WRITE
        assert isinstance(outcome, OutcomeUnknownError)
        assert outcome.cause is error
        assert outcome.__cause__ is error
        assert outcome.method == ADD
        assert len(transport.sent) == 1
    else:
        assert safety is Safety.FATAL
        assert outcome is error
        assert len(transport.sent) == 1


def test_retries_resend_the_same_call_object() -> None:
    async def main() -> list[Call]:
        # No settle time: the fake's failures are instant (settling is tested apart).
        s = scheduler(RetryPolicy(settle_time=0))
        transport = FakeTransport(
            script(RequestTimeoutError("t"), ConnectionLostError("r"), ok(no_time=True))
        )
        await s.execute(make_call(retry=RetryClass.KEYED_WRITE, key="idem-1"), transport)
        return [call for _, call in transport.sent]

    calls = run(main())
    assert len(calls) == 3
    assert calls[0] is calls[1] is calls[2]
    assert calls[0].idempotency_key == "idem-1"


def test_expired_token_is_refreshed_then_repeated() -> None:
    async def main() -> tuple[FakeTransport, Scheduler, ExpiredTokenError]:
        s = scheduler()
        error = expired()
        transport = FakeTransport(script(error, ok(no_time=True)))
        await s.execute(make_call(retry=RetryClass.UNKEYED_WRITE), transport)
        return transport, s, error

    transport, s, error = run(main())
    assert transport.refreshed == [error]
    assert len(transport.sent) == 2
    assert s.statistics().retries == {"expired_token": 1}


def test_failed_refresh_propagates() -> None:
    class Refuses(FakeTransport):
        async def refresh_auth(self, error: ExpiredTokenError) -> None:
            raise OAuthError("invalid_grant", "refresh token expired")

    async def main() -> None:
        await scheduler().execute(make_call(), Refuses(script(expired())))

    with pytest.raises(OAuthError):
        run(main())


# -- caps -------------------------------------------------------------------------


def test_attempts_are_capped_for_reads() -> None:
    async def main() -> FakeTransport:
        transport = FakeTransport(script(RequestTimeoutError("t")))
        policy = RetryPolicy(max_attempts=4, max_elapsed=10_000)
        with pytest.raises(RequestTimeoutError):
            await scheduler(policy).execute(make_call(retry=RetryClass.READ), transport)
        return transport

    assert len(run(main()).sent) == 4


def test_exhausted_keyed_write_after_ambiguity_is_outcome_unknown() -> None:
    async def main() -> tuple[OutcomeUnknownError, FakeTransport]:
        transport = FakeTransport(script(RequestTimeoutError("t"), rate_limit()))
        policy = RetryPolicy(max_attempts=3, max_elapsed=10_000)
        with pytest.raises(OutcomeUnknownError) as info:
            await scheduler(policy).execute(make_call(retry=RetryClass.KEYED_WRITE), transport)
        return info.value, transport

    error, transport = run(main())
    assert len(transport.sent) == 3
    # The last error was a 503, but the first attempt may have executed.
    assert classify(error.cause) is Safety.SAFE


def test_exhausted_safe_retries_raise_the_last_error() -> None:
    async def main() -> None:
        transport = FakeTransport(script(rate_limit()))
        policy = RetryPolicy(max_attempts=3)
        await scheduler(policy).execute(make_call(retry=RetryClass.UNKEYED_WRITE), transport)

    with pytest.raises(type(rate_limit())):
        run(main())


def test_elapsed_time_is_capped() -> None:
    async def main() -> tuple[float, int]:
        transport = FakeTransport(script(RequestTimeoutError("silent")))
        policy = RetryPolicy(max_attempts=1000, max_elapsed=60, base_delay=4, max_delay=8)
        with pytest.raises(RequestTimeoutError):
            await scheduler(policy).execute(make_call(), transport)
        return now(), len(transport.sent)

    elapsed, sends = run(main())
    assert elapsed <= 60
    # Full jitter over [0, 8] s: about 4 s a retry on average.
    assert 5 <= sends <= 100


def test_queueing_for_a_429_hold_does_not_count_as_failing() -> None:
    async def main() -> float:
        # A 429 with no reset known holds a basket (60 s) - longer than max_elapsed.
        transport = FakeTransport(script(ok(no_time=True), operating_limit(), ok(no_time=True)))
        s = scheduler(RetryPolicy(max_elapsed=5))
        await s.execute(make_call(), transport)
        await s.execute(make_call(), transport)
        return now()

    assert run(main()) == pytest.approx(60.0)


def test_queueing_for_the_bucket_does_not_count_as_failing() -> None:
    async def main() -> int:
        # A long line for the bucket (tens of seconds) and one 503 in it.
        outcomes: list[Reply | BaseException] = [ok(no_time=True)] * 100
        outcomes[80] = rate_limit()
        transport = FakeTransport(script(*outcomes, ok(no_time=True)))
        s = scheduler(RetryPolicy(max_elapsed=1))
        await asyncio.gather(*(s.execute(make_call(), transport) for _ in range(100)))
        return len(transport.sent)

    assert run(main()) == 101


def test_backoff_sleeps_are_within_the_full_jitter_caps() -> None:
    async def main() -> list[float]:
        errors = [ServerError("x", code="INTERNAL_SERVER_ERROR", status=500)] * 7
        transport = FakeTransport(script(*errors, ok(no_time=True)))
        policy = RetryPolicy(max_attempts=10, max_elapsed=10_000, base_delay=1, max_delay=10)
        await scheduler(policy).execute(make_call(), transport)
        times = transport.times
        return [b - a for a, b in itertools.pairwise(times)]

    gaps = run(main())
    caps = [1, 2, 4, 8, 10, 10, 10]
    assert len(gaps) == len(caps)
    for gap, cap in zip(gaps, caps, strict=True):
        assert 0 <= gap <= cap


def test_rate_limit_and_operating_limit_retries_do_not_back_off() -> None:
    async def main() -> list[float]:
        transport = FakeTransport(script(ok(no_time=True), rate_limit(), ok(no_time=True)))
        s = scheduler(RetryPolicy(base_delay=100, max_delay=100))
        await s.execute(make_call(), transport)
        await s.execute(make_call(), transport)
        return transport.times

    # Paced by the bucket alone: marked full and halved, one request in 1 s.
    assert run(main()) == [0.0, 0.0, pytest.approx(1.0)]


def test_backoff_cap_doubles_up_to_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    assert [policy.backoff_cap(n) for n in range(0, 9)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.backoff_cap(10_000) == 30
    for n in range(1, 20):
        assert 0 <= policy.backoff(n) <= policy.backoff_cap(n)


def test_default_policy() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 10
    assert policy.max_elapsed == 120
    assert (policy.base_delay, policy.max_delay) == (0.5, 30)
    assert (policy.connect_retries, policy.connect_delay) == (2, 1.0)
    assert policy.max_refreshes == 3
    assert policy.settle_time == 65


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_elapsed": -1},
        {"base_delay": -0.1},
        {"max_delay": float("nan")},
        {"connect_retries": -1},
        {"connect_delay": -1.0},
        {"max_refreshes": -1},
        {"settle_time": float("nan")},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_no_backoff_preset_retries_at_once() -> None:
    async def main() -> list[float]:
        errors = [ServerError("x", code="INTERNAL_SERVER_ERROR", status=500)] * 4
        transport = FakeTransport(script(*errors, ok(no_time=True)))
        policy = RetryPolicy.no_backoff(max_attempts=5)
        await scheduler(policy).execute(make_call(), transport)
        return transport.times

    # Five sends, all at the start: a default policy would sleep up to 0.5 + 1 + 2 + 4 s.
    assert run(main()) == [0.0] * 5
    policy = RetryPolicy.no_backoff(max_attempts=3)
    assert policy.max_attempts == 3
    assert (policy.base_delay, policy.max_delay) == (0.0, 0.0)
    assert policy.max_elapsed == RetryPolicy().max_elapsed
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy.no_backoff(max_attempts=0)


def test_policy_rejects_non_int_attempts() -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        RetryPolicy(max_attempts=2.5)  # type: ignore[arg-type]


def test_validation_errors_are_never_retried_even_under_load() -> None:
    async def main() -> int:
        bad = InvalidRequestError("bad", code="INVALID_REQUEST", status=400)
        transport = FakeTransport(script(bad))
        s = scheduler()
        results = await asyncio.gather(
            *(s.execute(make_call(), transport) for _ in range(20)), return_exceptions=True
        )
        assert all(result is bad for result in results)
        return len(transport.sent)

    assert run(main()) == 20
