"""Every way a call can fail ends in bounded time (issue 9), on virtual time.

Each test drives ``Scheduler.execute`` with a scripted transport whose failures
take as long as the real ones would (a silent server answers nothing for the
transport timeout), and checks the worst case stated in docs/rate-limits.md.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from scheduler_fakes import (
    ADD,
    FakeTransport,
    Handler,
    expired,
    make_call,
    now,
    ok,
    operating_limit,
    rate_limit,
    script,
)

from bitrix_results._scheduler import Limits, MemoryBackend, RetryPolicy, Scheduler
from bitrix_results._transport.types import Call, Reply, RetryClass
from bitrix_results.errors import (
    ConnectError,
    ConnectionLostError,
    DecodeError,
    ExpiredTokenError,
    OperatingLimitError,
    OutcomeUnknownError,
    RateLimitError,
    RequestTimeoutError,
)
from bitrix_results.testing.virtual_time import DEFAULT_EPOCH, VirtualClock, run

STANDARD = Limits.standard()
WINDOW = STANDARD.operating_window
BASKET = WINDOW / 10
#: The transport's default timeout (bitrix_results._options.DEFAULT_TIMEOUT).
TIMEOUT = 65.0
TEN_YEARS = 10 * 365 * 86400.0


def scheduler(retry: RetryPolicy | None = None) -> Scheduler:
    return Scheduler(STANDARD, clock=VirtualClock(), backend=MemoryBackend(), retry=retry)


def after(seconds: float, error: BaseException) -> Handler:
    """Every send fails with ``error`` after ``seconds`` (a timeout takes its time)."""

    async def handler(call: Call, n: int) -> Reply:
        await asyncio.sleep(seconds)
        raise error

    return handler


async def outcome(s: Scheduler, call: Call, transport: FakeTransport) -> BaseException | Reply:
    try:
        return await s.execute(call, transport)
    except Exception as exc:
        return exc


# -- hostile time blocks: no hold beyond one window --------------------------------


@pytest.mark.parametrize(
    ("reset", "start"),
    [
        (DEFAULT_EPOCH + TEN_YEARS, DEFAULT_EPOCH),
        (1e12, DEFAULT_EPOCH),
        (1e12, None),
        (DEFAULT_EPOCH + 300.5, -1e12),
        (DEFAULT_EPOCH + TEN_YEARS, math.nan),
    ],
)
def test_a_hostile_reset_holds_the_next_call_at_most_one_window(
    reset: float, start: float | None
) -> None:
    async def main() -> tuple[list[float], Scheduler]:
        s = scheduler()
        # Far over the limit, with a reset years away (or from an absurd clock).
        transport = FakeTransport(script(ok(1e6, reset, start=start), ok(no_time=True)))
        await s.execute(make_call(), transport)
        await s.execute(make_call(), transport)
        return transport.times, s

    times, s = run(main())
    stats = s.statistics()
    assert len(times) == 2
    assert times[1] <= WINDOW
    assert stats.budget_wait_seconds <= WINDOW
    assert stats.budget_waits == 1  # it was held, just not for ever


@pytest.mark.parametrize("operating", [math.nan, math.inf, -1.0, -1e12])
def test_a_total_that_is_no_number_does_not_hold_anything(operating: float) -> None:
    async def main() -> tuple[list[float], Scheduler]:
        s = scheduler()
        transport = FakeTransport(script(ok(operating, math.nan, start=math.nan)))
        for _ in range(3):
            await s.execute(make_call(), transport)
        return transport.times, s

    times, s = run(main())
    assert times == [0.0, 0.0, 0.0]
    assert s.statistics().budget_wait_seconds == 0


# -- the defaults' worst cases (docs/rate-limits.md) --------------------------------


@pytest.mark.parametrize("retry", [RetryClass.READ, RetryClass.KEYED_WRITE])
def test_a_silent_server_fails_a_call_after_two_timeouts(retry: RetryClass) -> None:
    policy = RetryPolicy()

    async def main() -> tuple[BaseException | Reply, float, int]:
        transport = FakeTransport(after(TIMEOUT, RequestTimeoutError("no answer in time")))
        key = "k" if retry is RetryClass.KEYED_WRITE else None
        result = await outcome(scheduler(policy), make_call(retry=retry, key=key), transport)
        return result, now(), len(transport.sent)

    result, elapsed, sends = run(main())
    expected = RequestTimeoutError if retry is RetryClass.READ else OutcomeUnknownError
    assert isinstance(result, expected)
    assert sends == 2
    # Two timeouts and one backoff of at most base_delay.
    assert 2 * TIMEOUT <= elapsed <= 2 * TIMEOUT + policy.base_delay
    assert elapsed <= policy.max_elapsed + TIMEOUT


def test_a_silent_server_fails_an_unkeyed_write_after_one_timeout() -> None:
    async def main() -> tuple[BaseException | Reply, float, int]:
        transport = FakeTransport(after(TIMEOUT, RequestTimeoutError("no answer in time")))
        call = make_call(retry=RetryClass.UNKEYED_WRITE)
        return await outcome(scheduler(), call, transport), now(), len(transport.sent)

    result, elapsed, sends = run(main())
    assert isinstance(result, OutcomeUnknownError)
    assert (elapsed, sends) == (TIMEOUT, 1)


@pytest.mark.parametrize("failure_after", [0.0, 5.0, 30.0])
def test_any_failure_ends_within_max_elapsed_plus_one_timeout(failure_after: float) -> None:
    policy = RetryPolicy(max_attempts=1000)

    async def main() -> tuple[BaseException | Reply, float]:
        transport = FakeTransport(after(failure_after, ConnectionLostError("reset")))
        call = make_call(retry=RetryClass.KEYED_WRITE, key="k")
        return await outcome(scheduler(policy), call, transport), now()

    result, elapsed = run(main())
    assert isinstance(result, OutcomeUnknownError)
    assert elapsed <= policy.max_elapsed + TIMEOUT


@pytest.mark.parametrize("retry", list(RetryClass))
def test_a_refused_connection_fails_after_two_quick_retries(retry: RetryClass) -> None:
    refused = ConnectError("connection refused")
    policy = RetryPolicy()

    async def main() -> tuple[BaseException | Reply, float, Scheduler, int]:
        s = scheduler(policy)
        transport = FakeTransport(script(refused))
        return await outcome(s, make_call(retry=retry), transport), now(), s, len(transport.sent)

    result, elapsed, s, sends = run(main())
    # Nothing was sent: not ambiguous, the cause itself is raised for every class.
    assert result is refused
    assert sends == 1 + policy.connect_retries == 3
    assert elapsed <= policy.connect_retries * policy.connect_delay
    assert s.statistics().retries == {"connect": 2}


def test_a_connect_timeout_fails_within_three_connect_timeouts() -> None:
    connect_timeout = 10.0

    async def main() -> tuple[BaseException | Reply, float, int]:
        transport = FakeTransport(after(connect_timeout, ConnectError("timed out connecting")))
        return await outcome(scheduler(), make_call(), transport), now(), len(transport.sent)

    result, elapsed, sends = run(main())
    assert isinstance(result, ConnectError)
    assert sends == 3
    assert elapsed <= 3 * connect_timeout + 2 * RetryPolicy().connect_delay


def test_connect_retries_zero_raises_the_first_connect_error() -> None:
    refused = ConnectError("connection refused")

    async def main() -> tuple[BaseException | Reply, int]:
        transport = FakeTransport(script(refused))
        s = scheduler(RetryPolicy(connect_retries=0))
        return await outcome(s, make_call(), transport), len(transport.sent)

    assert run(main()) == (refused, 1)


def test_429_forever_gives_up_after_a_window_and_a_basket_with_a_clear_error() -> None:
    policy = RetryPolicy(max_attempts=1)

    async def main() -> tuple[BaseException | Reply, float, Scheduler]:
        s = scheduler(policy)
        transport = FakeTransport(script(operating_limit()))
        return await outcome(s, make_call(), transport), now(), s

    result, elapsed, s = run(main())
    assert isinstance(result, OperatingLimitError)
    assert "still over the operating limit" in str(result)
    assert result.method == ADD
    assert isinstance(result.__cause__, OperatingLimitError)
    assert elapsed <= WINDOW + BASKET
    assert s.statistics().operating_limit_hits >= 10


def test_429_forever_with_the_default_policy_ends_with_the_clear_error() -> None:
    async def main() -> tuple[BaseException | Reply, float]:
        transport = FakeTransport(script(operating_limit()))
        return await outcome(scheduler(), make_call(), transport), now()

    result, elapsed = run(main())
    # 429s are not attempts: the window, not max_attempts, ends the wait.
    assert isinstance(result, OperatingLimitError)
    assert "still over the operating limit" in str(result)
    assert WINDOW <= elapsed <= WINDOW + BASKET


def test_429_forever_after_a_reset_years_ahead_gives_up_without_waiting_it() -> None:
    policy = RetryPolicy(max_attempts=1000)

    async def main() -> tuple[BaseException | Reply, float]:
        s = scheduler(policy)
        reset = DEFAULT_EPOCH + TEN_YEARS
        transport = FakeTransport(script(ok(100.0, reset, start=DEFAULT_EPOCH), operating_limit()))
        await s.execute(make_call(), transport)
        return await outcome(s, make_call(), transport), now()

    result, elapsed = run(main())
    assert isinstance(result, OperatingLimitError)
    assert elapsed <= WINDOW + BASKET


# A 429-held call whose method still gets through for other calls keeps waiting:
# test_budget_scheduler.test_portal_without_counters_that_still_enforces_is_handled_by_429
# (a method blocked for a whole window by its own first minute, every call completes).


def test_503_forever_is_capped_by_the_attempts() -> None:
    async def main() -> tuple[BaseException | Reply, float, int]:
        transport = FakeTransport(script(rate_limit()))
        return await outcome(scheduler(), make_call(), transport), now(), len(transport.sent)

    result, elapsed, sends = run(main())
    assert isinstance(result, RateLimitError)
    assert sends == RetryPolicy().max_attempts
    # Each 503 marks the bucket full; the retry waits for it to drain a little.
    assert elapsed <= sends * STANDARD.burst / STANDARD.drain_per_second


# -- expired_token for ever: at most three refreshes, backed off --------------------


@pytest.mark.parametrize("retry", list(RetryClass))
def test_expired_token_forever_refreshes_three_times_then_raises(retry: RetryClass) -> None:
    policy = RetryPolicy()

    async def main() -> tuple[BaseException | Reply, FakeTransport, float, Scheduler]:
        s = scheduler(policy)
        transport = FakeTransport(script(expired()))
        return await outcome(s, make_call(retry=retry), transport), transport, now(), s

    result, transport, elapsed, s = run(main())
    assert isinstance(result, ExpiredTokenError)
    assert len(transport.refreshed) == policy.max_refreshes == 3
    assert len(transport.sent) == 4
    # The first refresh is immediate, the next two back off (full jitter).
    assert elapsed <= policy.backoff_cap(1) + policy.backoff_cap(2)
    assert s.statistics().retries == {"expired_token": 3}


def test_refreshes_after_the_first_are_backed_off() -> None:
    async def main() -> list[float]:
        s = scheduler(RetryPolicy(base_delay=8.0))
        transport = FakeTransport(script(expired()))
        await outcome(s, make_call(), transport)
        return transport.times

    times = run(main())
    assert times[0] == times[1] == 0.0  # a token simply expired: refreshed at once
    assert times[2] > times[1] or times[3] > times[2]  # then backed off


def test_one_expired_token_is_still_refreshed_once_and_repeated() -> None:
    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        transport = FakeTransport(script(expired(), ok(no_time=True)))
        return await outcome(scheduler(), make_call(), transport), transport

    result, transport = run(main())
    assert isinstance(result, Reply)
    assert len(transport.refreshed) == 1


# -- exactly once: a keyed write is not resent while the first may still run --------


def lost_then_ok(lost_after: float) -> Handler:
    async def handler(call: Call, n: int) -> Reply:
        if n == 0:
            await asyncio.sleep(lost_after)
            raise ConnectionLostError("connection lost")
        return ok(no_time=True)

    return handler


@pytest.mark.parametrize("lost_after", [0.0, 1.0, 30.0])
def test_keyed_write_waits_out_the_settle_time_before_the_same_key(lost_after: float) -> None:
    policy = RetryPolicy()

    async def main() -> list[tuple[float, Call]]:
        transport = FakeTransport(lost_then_ok(lost_after))
        call = make_call(retry=RetryClass.KEYED_WRITE, key="idem-1")
        await scheduler(policy).execute(call, transport)
        return transport.sent

    sent = run(main())
    assert len(sent) == 2
    assert sent[0][1] is sent[1][1]
    # Measured from the first send: the portal cut it off by then at the latest.
    assert sent[1][0] - sent[0][0] >= policy.settle_time


def test_keyed_write_after_a_full_timeout_needs_no_extra_settling() -> None:
    async def main() -> list[float]:
        async def handler(call: Call, n: int) -> Reply:
            if n == 0:
                await asyncio.sleep(TIMEOUT)
                raise RequestTimeoutError("no answer in time")
            return ok(no_time=True)

        transport = FakeTransport(handler)
        await scheduler().execute(make_call(retry=RetryClass.KEYED_WRITE, key="k"), transport)
        return transport.times

    times = run(main())
    # Resent after at most one backoff: the 65 s timeout already covers the 60 s cut-off.
    assert TIMEOUT <= times[1] <= TIMEOUT + RetryPolicy().base_delay


@pytest.mark.parametrize(
    ("retry", "failure"),
    [
        (RetryClass.READ, ConnectionLostError("reset")),  # a read changes nothing
        (RetryClass.KEYED_WRITE, ConnectError("connection refused")),  # never sent
        (RetryClass.KEYED_WRITE, rate_limit()),  # refused before running
    ],
)
def test_reads_and_failures_before_running_are_not_settled(
    retry: RetryClass, failure: BaseException
) -> None:
    async def main() -> list[float]:
        transport = FakeTransport(script(failure, ok(no_time=True)))
        key = "k" if retry is RetryClass.KEYED_WRITE else None
        await scheduler().execute(make_call(retry=retry, key=key), transport)
        return transport.times

    times = run(main())
    assert times[1] < 5.0


def test_settle_time_counts_as_failing_time() -> None:
    # A write whose connection keeps dropping at once: every resend waits the
    # settle time, and max_elapsed still ends it.
    policy = RetryPolicy(max_attempts=1000, max_elapsed=200)

    async def main() -> tuple[BaseException | Reply, float, int]:
        transport = FakeTransport(script(ConnectionLostError("reset")))
        call = make_call(retry=RetryClass.KEYED_WRITE, key="k")
        result = await outcome(scheduler(policy), call, transport)
        return result, now(), len(transport.sent)

    result, elapsed, sends = run(main())
    assert isinstance(result, OutcomeUnknownError)
    assert sends == 4  # at 0, 65, 130, 195
    assert elapsed <= policy.max_elapsed


@pytest.mark.parametrize(
    ("status", "settles"), [(502, True), (504, True), (500, False), (503, False)]
)
def test_only_gateway_pages_may_leave_a_request_running(status: int, settles: bool) -> None:
    page = DecodeError("not JSON", method=ADD, status=status)

    async def main() -> list[float]:
        transport = FakeTransport(script(page, ok(no_time=True)))
        await scheduler().execute(make_call(retry=RetryClass.KEYED_WRITE, key="k"), transport)
        return transport.times

    times = run(main())
    assert (times[1] >= RetryPolicy().settle_time) is settles


def test_tokens_that_keep_expiring_while_other_calls_get_through_are_not_capped() -> None:
    # Not a broken portal: tokens expire often, and other calls get replies
    # between this call's refreshes. Only refreshes in a row count.
    async def main() -> tuple[BaseException | Reply, FakeTransport]:
        s = scheduler()

        async def handler(call: Call, n: int) -> Reply:
            await asyncio.sleep(0.01)
            if call.idempotency_key == "unlucky" and len(transport.refreshed) < 6:
                raise expired()
            return ok(no_time=True)

        transport = FakeTransport(handler)
        done = asyncio.Event()

        async def others() -> None:
            while not done.is_set():
                await s.execute(make_call(), transport)

        background = asyncio.create_task(others())
        unlucky = make_call(retry=RetryClass.KEYED_WRITE, key="unlucky")
        result = await outcome(s, unlucky, transport)
        done.set()
        await background
        return result, transport

    result, transport = run(main())
    assert isinstance(result, Reply)
    assert len(transport.refreshed) == 6
