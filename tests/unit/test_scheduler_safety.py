"""Retry safety that needs the call, not just the error (retry.classify_call).

- A 429 on a write batch may follow executed commands (design §3: the portal may
  keep a failing batch's earlier commands): never re-sent blindly.
- Once an attempt of a write was ambiguous, every way of giving up is
  OutcomeUnknownError: a fatal error, exhausted retries, a failed token refresh.
- Errors of the token refresh are classified too: transport failures are
  retried within the caps, OAuthError is fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from scheduler_fakes import (
    ADD,
    FakeTransport,
    batch_call,
    expired,
    make_call,
    ok,
    operating_limit,
    rate_limit,
    script,
)

from bitrix_results._scheduler import Limits, MemoryBackend, RetryPolicy, Safety, Scheduler
from bitrix_results._scheduler.retry import classify_call, classify_refresh, is_batch
from bitrix_results._transport import AiohttpSender, RestTransport, WebhookAuth
from bitrix_results._transport.types import Call, Reply, RetryClass
from bitrix_results._transport.urls import parse_webhook
from bitrix_results.errors import (
    AccessDeniedError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    ExpiredTokenError,
    IdempotencyKeyError,
    InvalidRequestError,
    OAuthError,
    OperatingLimitError,
    OutcomeUnknownError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from bitrix_results.testing import FakePortal, PortalConfig, serve_portal_in_thread
from bitrix_results.testing.virtual_time import VirtualClock, run

STANDARD = Limits.standard()
WRITES = [RetryClass.KEYED_WRITE, RetryClass.UNKEYED_WRITE]


def scheduler(retry: RetryPolicy | None = None) -> Scheduler:
    return Scheduler(STANDARD, clock=VirtualClock(), backend=MemoryBackend(), retry=retry)


def batch(retry: RetryClass, size: int = 50) -> Call:
    """A REST 3.0 batch of ``size`` adds with the given retry class (bulk sends UNKEYED)."""
    return Call(
        method="batch",
        api="v3",
        params=[{"method": ADD, "query": {}}] * size,
        retry_class=retry,
        budget=(("batch", 1), (ADD, size)),
    )


async def outcome(s: Scheduler, call: Call, transport: FakeTransport) -> Reply | BaseException:
    try:
        return await s.execute(call, transport)
    except Exception as exc:
        return exc


# -- 1. a 429 on a batch ------------------------------------------------------------


def test_is_batch() -> None:
    assert is_batch(batch(RetryClass.UNKEYED_WRITE))
    assert is_batch(batch(RetryClass.READ, size=1))
    # Charged to several keys: several commands in one request, whatever its name.
    assert is_batch(make_call(budget=(("x", 1), (ADD, 3))))
    assert not is_batch(make_call())
    assert not is_batch(make_call(budget=((ADD, 1),)))


@pytest.mark.parametrize(
    ("call", "error", "safety"),
    [
        # A command in the middle hit the limit: the earlier ones may be kept.
        (batch(RetryClass.UNKEYED_WRITE), operating_limit(), Safety.AMBIGUOUS),
        (batch(RetryClass.KEYED_WRITE), operating_limit(), Safety.AMBIGUOUS),
        (make_call("x", RetryClass.UNKEYED_WRITE, budget=(("x", 1), (ADD, 2))),
         operating_limit(), Safety.AMBIGUOUS),
        # Re-reading is harmless.
        (batch(RetryClass.READ), operating_limit(), Safety.SAFE),
        # One call refused by 429 did not run.
        (make_call(retry=RetryClass.UNKEYED_WRITE), operating_limit(), Safety.SAFE),
        # The bucket and the token refuse the whole request before anything runs.
        (batch(RetryClass.UNKEYED_WRITE), rate_limit(), Safety.SAFE),
        (batch(RetryClass.UNKEYED_WRITE), expired(), Safety.SAFE),
        (batch(RetryClass.UNKEYED_WRITE), ConnectError("refused"), Safety.SAFE),
        (batch(RetryClass.UNKEYED_WRITE), RequestTimeoutError("t"), Safety.AMBIGUOUS),
        (batch(RetryClass.UNKEYED_WRITE), OAuthError("invalid_grant", "x"), Safety.FATAL),
    ],
)  # fmt: skip
def test_classify_call(call: Call, error: BaseException, safety: Safety) -> None:
    assert classify_call(error, call) is safety


def test_unkeyed_batch_429_is_outcome_unknown_and_still_holds_the_budget() -> None:
    async def main() -> tuple[BaseException | Reply, FakeTransport, Scheduler, float]:
        s = scheduler()
        error = operating_limit()
        transport = FakeTransport(script(error, ok(no_time=True)))
        result = await outcome(s, batch(RetryClass.UNKEYED_WRITE), transport)
        # The hold was recorded: the next call on the same method waits for it.
        await s.execute(make_call(ADD, RetryClass.UNKEYED_WRITE), transport)
        return result, transport, s, transport.times[-1]

    result, transport, s, second_sent_at = run(main())
    assert isinstance(result, OutcomeUnknownError)
    assert isinstance(result.cause, OperatingLimitError)
    assert result.__cause__ is result.cause
    assert result.method == "batch"
    assert len(transport.sent) == 2  # the batch once, then the single add
    stats = s.statistics()
    assert stats.operating_limit_hits == 1
    assert stats.retries == {}
    # No reset known (error bodies carry no time): held for one basket, 60 s.
    assert second_sent_at == pytest.approx(60.0)


def test_unkeyed_batch_429_after_other_safe_retries_is_outcome_unknown() -> None:
    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(rate_limit(), operating_limit(), ok(no_time=True)))
        return await outcome(scheduler(), batch(RetryClass.UNKEYED_WRITE), transport), transport

    result, transport = run(main())
    assert isinstance(result, OutcomeUnknownError)
    assert len(transport.sent) == 2


@pytest.mark.parametrize("error", [operating_limit, rate_limit])
def test_read_batch_429_and_503_are_retried(error: Callable[[], BaseException]) -> None:
    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(error(), ok(no_time=True)))
        return await outcome(scheduler(), batch(RetryClass.READ), transport), transport

    result, transport = run(main())
    assert isinstance(result, Reply)
    assert len(transport.sent) == 2


def test_unkeyed_batch_503_is_retried() -> None:
    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(rate_limit(), rate_limit(), ok(no_time=True)))
        return await outcome(scheduler(), batch(RetryClass.UNKEYED_WRITE), transport), transport

    result, transport = run(main())
    assert isinstance(result, Reply)
    assert len(transport.sent) == 3


def test_keyed_batch_429_is_retried_but_remembered_as_ambiguous() -> None:
    async def main() -> tuple[BaseException | Reply, BaseException | Reply]:
        ok_after = FakeTransport(script(operating_limit(), ok(no_time=True)))
        retried = await outcome(scheduler(), batch_call(), ok_after)
        assert len(ok_after.sent) == 2
        # Then every retry refused: the first attempt may have kept commands.
        policy = RetryPolicy(max_attempts=3, max_elapsed=10_000)
        refused = FakeTransport(script(operating_limit(), rate_limit()))
        return retried, await outcome(scheduler(policy), batch_call(), refused)

    retried, exhausted = run(main())
    assert isinstance(retried, Reply)
    assert isinstance(exhausted, OutcomeUnknownError)
    assert isinstance(exhausted.cause, RateLimitError)


# -- 2. giving up after an ambiguous attempt -----------------------------------------

AMBIGUOUS: dict[str, Callable[[], BaseException]] = {
    "timeout": lambda: RequestTimeoutError("no answer"),
    "connection_lost": lambda: ConnectionLostError("reset"),
    "server_500": lambda: ServerError("x", code="INTERNAL_SERVER_ERROR", status=500),
    "html_502": lambda: DecodeError("<html>", method=ADD, status=502),
}
FATAL: dict[str, Callable[[], BaseException]] = {
    "validation": lambda: InvalidRequestError("bad", code="INVALID_REQUEST", status=400),
    "access_denied": lambda: AccessDeniedError("no", code="ACCESS_DENIED", status=403),
    "idempotency_key": lambda: IdempotencyKeyError(
        "reused", code="BITRIX_REST_V3_EXCEPTION_IDEMPOTENCYKEYREUSEDEXCEPTION", status=422
    ),
    # (A 2xx body that cannot be decoded is fatal only for reads: after a write it
    # is ambiguous, see classify_call and tests/hostile/test_undecodable_after_write.py.)
    "programming_error": lambda: RuntimeError("bug"),
}


@pytest.mark.parametrize("fatal", list(FATAL))
@pytest.mark.parametrize("ambiguous", list(AMBIGUOUS))
@pytest.mark.parametrize("retry", list(RetryClass))
def test_fatal_error_after_an_ambiguous_attempt(
    retry: RetryClass, ambiguous: str, fatal: str
) -> None:
    first, last = AMBIGUOUS[ambiguous](), FATAL[fatal]()

    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(first, last))
        return await outcome(scheduler(), make_call(retry=retry, key="k"), transport), transport

    result, transport = run(main())
    assert isinstance(result, BaseException)
    if retry is RetryClass.READ:
        # A read changed nothing: the last error, as is.
        assert result is last
        assert len(transport.sent) == 2
    elif retry is RetryClass.UNKEYED_WRITE:
        # Never resent: unknown at the first ambiguity.
        assert isinstance(result, OutcomeUnknownError)
        assert result.cause is first
        assert len(transport.sent) == 1
    else:
        # The first attempt may have executed, whatever the second said.
        assert isinstance(result, OutcomeUnknownError)
        assert result.cause is last
        assert result.__cause__ is last
        assert result.method == ADD
        assert len(transport.sent) == 2


@pytest.mark.parametrize("retry", list(RetryClass))
def test_fatal_error_without_ambiguity_is_raised_as_is(retry: RetryClass) -> None:
    last = FATAL["validation"]()

    async def main() -> BaseException | Reply:
        transport = FakeTransport(script(ConnectError("refused"), rate_limit(), last))
        return await outcome(scheduler(), make_call(retry=retry), transport)

    assert run(main()) is last


@pytest.mark.parametrize("retry", list(RetryClass))
def test_connect_errors_exhausting_attempts_after_an_ambiguous_one(retry: RetryClass) -> None:
    refused = ConnectError("refused")

    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(RequestTimeoutError("t"), refused))
        policy = RetryPolicy(max_attempts=4, max_elapsed=10_000)
        return await outcome(scheduler(policy), make_call(retry=retry), transport), transport

    result, transport = run(main())
    if retry is RetryClass.READ:
        assert result is refused
        assert len(transport.sent) == 4
    elif retry is RetryClass.KEYED_WRITE:
        assert isinstance(result, OutcomeUnknownError)
        assert result.cause is refused
        assert len(transport.sent) == 4
    else:
        assert isinstance(result, OutcomeUnknownError)
        assert len(transport.sent) == 1


# -- 2b. the token refresh -------------------------------------------------------------


class RefreshFails(FakeTransport):
    """Sends answer ``replies`` in order; refresh n raises ``errors[n]`` (the last
    repeats; None: the refresh succeeds)."""

    def __init__(self, *errors: BaseException | None, replies: list[Reply | BaseException]) -> None:
        super().__init__(script(*replies))
        self.errors = errors
        self.refresh_attempts = 0

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        n = self.refresh_attempts
        self.refresh_attempts += 1
        failure = self.errors[min(n, len(self.errors) - 1)]
        if failure is not None:
            raise failure
        self.refreshed.append(error)


@pytest.mark.parametrize(
    ("error", "safety"),
    [
        (ConnectError("refused"), Safety.SAFE),
        (RequestTimeoutError("t"), Safety.SAFE),
        (ConnectionLostError("reset"), Safety.SAFE),
        (OAuthError("invalid_grant", "expired"), Safety.FATAL),
        (expired(), Safety.FATAL),  # a webhook cannot refresh: it re-raises
        (RuntimeError("bug"), Safety.FATAL),
    ],
)
def test_classify_refresh(error: BaseException, safety: Safety) -> None:
    assert classify_refresh(error) is safety


@pytest.mark.parametrize("retry", list(RetryClass))
@pytest.mark.parametrize(
    "failure", [ConnectError("refused"), RequestTimeoutError("t"), ConnectionLostError("reset")]
)
def test_refresh_transport_failure_is_retried(retry: RetryClass, failure: BaseException) -> None:
    async def main() -> tuple[BaseException | Reply, RefreshFails, Scheduler]:
        s = scheduler()
        transport = RefreshFails(failure, None, replies=[expired(), ok(no_time=True)])
        return await outcome(s, make_call(retry=retry), transport), transport, s

    result, transport, s = run(main())
    # The call was not sent while refreshing: even an unkeyed write is safe.
    assert isinstance(result, Reply)
    assert transport.refresh_attempts == 2
    assert len(transport.refreshed) == 1
    assert len(transport.sent) == 2
    retries = s.statistics().retries
    assert retries["expired_token"] == 1
    assert sum(retries.values()) == 2


@pytest.mark.parametrize("retry", list(RetryClass))
def test_refresh_failures_count_against_the_attempt_cap(retry: RetryClass) -> None:
    refused = ConnectError("refused")

    async def main() -> tuple[BaseException | Reply, RefreshFails]:
        transport = RefreshFails(refused, replies=[expired()])
        policy = RetryPolicy(max_attempts=5, max_elapsed=10_000, connect_retries=10)
        return await outcome(scheduler(policy), make_call(retry=retry), transport), transport

    result, transport = run(main())
    # Nothing ambiguous was sent: the last error as is, for every class.
    assert result is refused
    assert len(transport.sent) == 1
    assert transport.refresh_attempts == 4


@pytest.mark.parametrize("retry", list(RetryClass))
def test_refused_refresh_is_fatal(retry: RetryClass) -> None:
    refused = OAuthError("invalid_grant", "refresh token expired")

    async def main() -> tuple[BaseException | Reply, RefreshFails]:
        transport = RefreshFails(refused, replies=[expired()])
        return await outcome(scheduler(), make_call(retry=retry), transport), transport

    result, transport = run(main())
    assert result is refused
    assert transport.refresh_attempts == 1


@pytest.mark.parametrize(
    "failure",
    [OAuthError("invalid_client", "bad secret"), ConnectError("refused"), RuntimeError("bug")],
)
@pytest.mark.parametrize("retry", list(RetryClass))
def test_failed_refresh_after_an_ambiguous_attempt(
    retry: RetryClass, failure: BaseException
) -> None:
    async def main() -> tuple[BaseException | Reply, RefreshFails]:
        # Attempt 1 may have executed; then the token expired and cannot be refreshed.
        transport = RefreshFails(
            failure, replies=[ConnectionLostError("reset after sending"), expired()]
        )
        policy = RetryPolicy(max_attempts=4, max_elapsed=10_000)
        return await outcome(scheduler(policy), make_call(retry=retry), transport), transport

    result, transport = run(main())
    if retry is RetryClass.READ:
        assert result is failure
    elif retry is RetryClass.UNKEYED_WRITE:
        assert isinstance(result, OutcomeUnknownError)
        assert isinstance(result.cause, ConnectionLostError)
        assert transport.refresh_attempts == 0
    else:
        assert isinstance(result, OutcomeUnknownError)
        assert result.cause is failure
        assert result.__cause__ is failure


def test_webhook_refresh_reraises_the_expired_token() -> None:
    class Webhook(FakeTransport):
        async def refresh_auth(self, error: ExpiredTokenError) -> None:
            raise error

    error = expired()

    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = Webhook(script(error))
        call = make_call(retry=RetryClass.KEYED_WRITE)
        return await outcome(scheduler(), call, transport), transport

    result, transport = run(main())
    assert result is error
    assert len(transport.sent) == 1


# -- end to end: the fake portal keeps a failing batch's earlier commands ---------------


def test_batch_429_midway_creates_no_duplicates_on_the_fake_portal() -> None:
    """A 50-add batch hits the operating limit at command ~41 and the portal keeps 1..40.

    No operating counters are reported (self-hosted style), so the scheduler
    cannot see the limit coming. The old rule (429 = safe) re-sent the batch
    after the hold and created those 40 again.
    """
    portal = FakePortal(
        PortalConfig(
            scale=100,
            batch_rollback=False,
            report_operating=False,
            default_cost=2.0,
            cost_jitter=0.0,
        )
    )

    async def main(url: str) -> list[tuple[int, BaseException]]:
        transport = RestTransport(WebhookAuth(parse_webhook(url)), AiohttpSender())
        # Enough attempts to outlast the portal's window: the old rule got
        # through on a later attempt, and duplicated the kept commands.
        s = Scheduler(
            Limits.standard().scaled(100),
            backend=MemoryBackend(),
            retry=RetryPolicy(max_attempts=50),
        )
        unknown: list[tuple[int, BaseException]] = []
        try:
            for b in range(8):
                params = [
                    {"method": ADD, "query": {"fields": {"taskId": 1 + j, "text": f"b{b} c{j}"}}}
                    for j in range(50)
                ]
                call = Call(
                    method="batch",
                    api="v3",
                    params=params,
                    retry_class=RetryClass.UNKEYED_WRITE,
                    budget=(("batch", 1), (ADD, 50)),
                )
                try:
                    await s.execute(call, transport)
                except OutcomeUnknownError as exc:
                    unknown.append((b, exc.cause))
                    break
        finally:
            await transport.aclose()
        return unknown

    with serve_portal_in_thread(portal) as running:
        unknown = asyncio.run(main(running.webhook_url))

    assert unknown, "the operating limit was never reached inside a batch"
    [(refused, cause)] = unknown
    assert isinstance(cause, OperatingLimitError)
    assert portal.stats().operating_limited == 1
    # Some of the refused batch's commands ran and stayed, none twice.
    assert len(portal.ledger.created) > 50 * refused
    assert portal.ledger.duplicates() == 0
