"""Scheduler.statistics(): a frozen snapshot with every counter a user needs."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from scheduler_fakes import (
    ADD,
    FakeTransport,
    expired,
    make_call,
    ok,
    operating_limit,
    rate_limit,
    script,
)

from bitrix_results._scheduler import (
    DEFAULT_HEADROOM,
    Limits,
    MemoryBackend,
    RetryPolicy,
    Scheduler,
    SchedulerStatistics,
)
from bitrix_results._transport.types import RetryClass
from bitrix_results.errors import RequestTimeoutError
from bitrix_results.testing.virtual_time import DEFAULT_EPOCH, VirtualClock, run

STANDARD = Limits.standard()


def test_fresh_scheduler_has_empty_statistics() -> None:
    stats = Scheduler(STANDARD, backend=MemoryBackend()).statistics()
    assert stats == SchedulerStatistics()
    assert stats.bucket is None
    assert stats.retries_total == 0


def test_statistics_after_a_mixed_run() -> None:
    reset = DEFAULT_EPOCH + 900.5

    async def main() -> SchedulerStatistics:
        s = Scheduler(STANDARD, clock=VirtualClock(), backend=MemoryBackend())
        transport = FakeTransport(
            script(
                ok(1.0, reset),
                ok(2.0, reset),
                rate_limit(),
                ok(3.0, reset),
                expired(),
                ok(4.0, reset),
                RequestTimeoutError("t"),
                ok(5.0, reset),
                operating_limit(),
                ok(6.0, reset + 60),
            )
        )
        for _ in range(6):
            await s.execute(make_call(retry=RetryClass.KEYED_WRITE), transport)
        # Then a burst of 60 to another portal: 48 free slots, 12 wait.
        await asyncio.gather(
            *(s.execute(make_call(), FakeTransport(portal="other.example")) for _ in range(60))
        )
        return s.statistics()

    stats = run(main())
    assert stats.requests_sent == 10 + 60
    assert stats.retries == {
        "rate_limit": 1,
        "expired_token": 1,
        "timeout": 1,
        "operating_limit": 1,
    }
    assert stats.retries_total == 4
    assert stats.rate_limit_hits == 1
    assert stats.operating_limit_hits == 1
    assert stats.in_flight == 0
    # The 429 held the key until the reset; everyone after it waited.
    assert stats.budget_waits >= 1
    assert stats.budget_wait_seconds > 0
    # The other portal's burst of 60 queued 12 calls in its bucket.
    assert stats.bucket_waits >= 12
    assert stats.bucket_wait_seconds > 0

    assert set(stats.buckets) == {"portal.example", "other.example"}
    bucket = stats.buckets["portal.example"]
    assert bucket.capacity == STANDARD.burst - DEFAULT_HEADROOM
    assert bucket.nominal_drain_per_second == STANDARD.drain_per_second
    assert 0 <= bucket.level <= bucket.capacity
    assert stats.bucket is bucket  # the first portal used

    budget = stats.budgets[("cred-1", ADD)]
    assert budget.operating == 6.0
    assert budget.reset_at == pytest.approx(reset + 60)
    assert budget.cost == pytest.approx(1.0)
    assert budget.held_until is None
    assert budget.in_flight_units == 0


def test_statistics_are_frozen() -> None:
    stats = SchedulerStatistics(retries={"timeout": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.requests_sent = 5  # type: ignore[misc]

    async def main() -> SchedulerStatistics:
        s = Scheduler(STANDARD, clock=VirtualClock(), backend=MemoryBackend())
        await s.execute(make_call(), FakeTransport(script(rate_limit(), ok(no_time=True))))
        return s.statistics()

    snapshot = run(main())
    with pytest.raises(TypeError):
        snapshot.retries["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        snapshot.buckets["x"] = snapshot.buckets["portal.example"]  # type: ignore[index]


def test_snapshot_does_not_change_afterwards() -> None:
    async def main() -> tuple[SchedulerStatistics, SchedulerStatistics]:
        s = Scheduler(STANDARD, clock=VirtualClock(), backend=MemoryBackend())
        transport = FakeTransport(script(rate_limit(), ok(no_time=True)))
        before = s.statistics()
        await s.execute(make_call(), transport)
        return before, s.statistics()

    before, after = run(main())
    assert before.requests_sent == 0
    assert before.retries == {}
    assert after.requests_sent == 2


def test_scheduler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Scheduler(STANDARD, concurrency=0)
    with pytest.raises(ValueError, match="headroom"):
        Scheduler(STANDARD, headroom=-1)
    with pytest.raises(TypeError, match="limits"):
        Scheduler((50, 2.0))  # type: ignore[arg-type]


def test_scheduler_exposes_its_configuration() -> None:
    policy = RetryPolicy(max_attempts=3)
    s = Scheduler(STANDARD.scaled(60), concurrency=4, headroom=5, retry=policy)
    assert s.limits == STANDARD.scaled(60)
    assert s.concurrency == 4
    assert s.capacity == 45
    assert s.retry_policy is policy
    assert "concurrency=4" in repr(s)
