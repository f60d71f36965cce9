"""The leaky bucket: reservation under concurrency, 503 reaction and recovery, sharing."""

from __future__ import annotations

import asyncio

import pytest
from scheduler_fakes import (
    ADD,
    FakeTransport,
    PortalModel,
    batch_call,
    make_call,
    now,
    ok,
    rate_limit,
    script,
)

from bitrix_results._scheduler import DEFAULT_HEADROOM, Limits, MemoryBackend, Scheduler
from bitrix_results._scheduler.bucket import (
    RATE_FLOOR,
    RATE_STEP,
    BucketConfig,
    MemoryBucket,
    Reservation,
)
from bitrix_results._transport.types import Call, Reply
from bitrix_results.testing.virtual_time import VirtualClock, run

STANDARD = Limits.standard()


def scheduler(limits: Limits = STANDARD, **kwargs: object) -> Scheduler:
    return Scheduler(limits, clock=VirtualClock(), backend=MemoryBackend(), **kwargs)  # type: ignore[arg-type]


def test_thousand_concurrent_calls_burst_then_drain_exactly() -> None:
    async def main() -> list[float]:
        s = scheduler()
        transport = FakeTransport()
        await asyncio.gather(*(s.execute(make_call(), transport) for _ in range(1000)))
        return transport.times

    times = run(main())
    capacity = STANDARD.burst - DEFAULT_HEADROOM
    assert len(times) == 1000
    # The first `capacity` go at once ...
    assert times[:capacity] == [0.0] * capacity
    # ... then exactly one every 1/Y seconds (api-facts §1: Y = 2/s).
    for k, at in enumerate(times[capacity:], start=1):
        assert at == pytest.approx(k / STANDARD.drain_per_second, abs=1e-6)


def test_concurrent_callers_never_overfill_the_portal() -> None:
    async def main() -> PortalModel:
        portal = PortalModel(STANDARD, latency=0.2)
        s = scheduler(concurrency=64)
        await asyncio.gather(*(s.execute(make_call(), portal.transport()) for _ in range(400)))
        return portal

    portal = run(main())
    assert portal.executed == 400
    assert portal.refused_503 == 0


def test_burst_never_exceeded_in_any_interval() -> None:
    async def main() -> list[float]:
        s = scheduler(concurrency=100)
        transport = FakeTransport()
        await asyncio.gather(*(s.execute(make_call(), transport) for _ in range(300)))
        return transport.times

    times = run(main())
    capacity = STANDARD.burst - DEFAULT_HEADROOM
    for i, start in enumerate(times):
        # Requests sent within `d` seconds after `start`: at most capacity + Y*d.
        for j in range(i, len(times)):
            d = times[j] - start
            assert j - i + 1 <= capacity + STANDARD.drain_per_second * d + 1e-6


def test_headroom_zero_uses_the_whole_burst() -> None:
    async def main() -> list[float]:
        s = scheduler(headroom=0)
        transport = FakeTransport()
        await asyncio.gather(*(s.execute(make_call(), transport) for _ in range(60)))
        return transport.times

    times = run(main())
    assert times[:50] == [0.0] * 50
    assert times[50] == pytest.approx(0.5)


def test_capacity_never_below_one() -> None:
    s = Scheduler(Limits(burst=1, drain_per_second=1.0), headroom=5)
    assert s.capacity == 1


def test_batch_counts_as_one_request() -> None:
    async def main() -> float | None:
        s = scheduler()
        await s.execute(batch_call(50), FakeTransport())
        bucket = s.statistics().bucket
        return None if bucket is None else bucket.level

    assert run(main()) == pytest.approx(1.0)


def test_rate_limit_marks_full_halves_drain_and_retries() -> None:
    async def main() -> tuple[list[float], float, float]:
        s = scheduler()
        transport = FakeTransport(script(rate_limit(), ok(no_time=True)))
        await s.execute(make_call(), transport)
        bucket = s.statistics().bucket
        assert bucket is not None
        return transport.times, bucket.drain_per_second, bucket.level

    times, drain, level = run(main())
    # Marked full at t=0 and the drain halved to 1/s: the retry waits until
    # one request has drained, 1 s, then takes the slot it freed.
    assert times == [0.0, pytest.approx(1.0)]
    # The success after it gave back RATE_STEP of the nominal rate.
    assert drain == pytest.approx(STANDARD.drain_per_second * (0.5 + RATE_STEP))
    assert level == pytest.approx(STANDARD.burst - DEFAULT_HEADROOM)


def test_drain_recovers_additively_on_successes() -> None:
    async def main() -> list[float]:
        s = scheduler()
        transport = FakeTransport(script(rate_limit(), ok(no_time=True)))
        drains = []
        for _ in range(12):
            await s.execute(make_call(), transport)
            bucket = s.statistics().bucket
            assert bucket is not None
            drains.append(bucket.drain_per_second)
        return drains

    drains = run(main())
    expected = [min(2.0, 2.0 * (0.5 + RATE_STEP * (i + 1))) for i in range(12)]
    assert drains == pytest.approx(expected)
    assert drains[-1] == STANDARD.drain_per_second


def test_one_congestion_event_slows_down_once() -> None:
    async def main() -> tuple[float, int]:
        s = scheduler()

        async def handler(call: Call, n: int) -> Reply:
            await asyncio.sleep(0.1)
            if n < 16:
                raise rate_limit()
            return ok(no_time=True)

        transport = FakeTransport(handler)
        # Learn the key first so the 16 go out together.
        await s.execute(make_call(), FakeTransport())
        await asyncio.gather(*(s.execute(make_call(), transport) for _ in range(16)))
        stats = s.statistics()
        assert stats.bucket is not None
        return stats.bucket.drain_per_second, stats.rate_limit_hits

    drain, hits = run(main())
    assert hits == 16
    # 16 refusals of requests reserved before the first slow-down: one halving
    # (then 16 successes give back 16 steps, capped at the nominal rate).
    assert drain == pytest.approx(min(2.0, 2.0 * (0.5 + 16 * RATE_STEP)))


def test_repeated_congestion_stops_at_the_floor() -> None:
    async def main() -> float:
        bucket = MemoryBucket(BucketConfig(capacity=48, drain_per_second=2.0))
        for _ in range(10):
            reservation = await bucket.reserve()
            bucket.rate_limited(reservation)
        return bucket.drain_per_second

    assert run(main()) == pytest.approx(2.0 * RATE_FLOOR)


def test_refused_reservation_before_the_slowdown_does_not_slow_again() -> None:
    async def main() -> float:
        bucket = MemoryBucket(BucketConfig(capacity=48, drain_per_second=2.0))
        early = await bucket.reserve()
        await asyncio.sleep(1)
        late = await bucket.reserve()
        bucket.rate_limited(late)
        bucket.rate_limited(early)
        return bucket.drain_per_second

    assert run(main()) == pytest.approx(1.0)


def test_slowdown_repaces_waiting_callers() -> None:
    async def main() -> list[float]:
        bucket = MemoryBucket(BucketConfig(capacity=2, drain_per_second=2.0))
        times: list[float] = []

        async def one() -> None:
            await bucket.reserve()
            times.append(now())

        tasks = [asyncio.ensure_future(one()) for _ in range(4)]
        await asyncio.sleep(0)
        # The two waiting callers were due at 0.5 and 1.0; the portal refuses a
        # request now: full, and half the rate, so they go at 1.0 and 2.0.
        bucket.rate_limited(Reservation(waited=0.0, reserved_at=0.0, drain_per_second=2.0))
        await asyncio.gather(*tasks)
        return times

    assert run(main()) == [0.0, 0.0, pytest.approx(1.0), pytest.approx(2.0)]


def test_second_tenant_eating_the_bucket_is_survived() -> None:
    async def main() -> tuple[PortalModel, int]:
        # Another app behind our address sends 1 request/s of the portal's 2/s.
        portal = PortalModel(STANDARD, neighbour=1.0)
        s = scheduler()
        await asyncio.gather(*(s.execute(make_call(), portal.transport()) for _ in range(150)))
        return portal, s.statistics().retries.get("rate_limit", 0)

    portal, retries = run(main())
    assert portal.executed == 150
    assert portal.refused_503 == retries > 0


def test_two_schedulers_of_one_portal_share_one_bucket() -> None:
    async def main() -> list[float]:
        backend = MemoryBackend()
        first = Scheduler(STANDARD, clock=VirtualClock(), backend=backend)
        second = Scheduler(STANDARD, clock=VirtualClock(), backend=backend)
        times: list[float] = []

        async def record(call: Call, n: int) -> Reply:
            times.append(now())
            return ok(no_time=True)

        a = FakeTransport(record, credential="app-a")
        b = FakeTransport(record, credential="app-b")
        await asyncio.gather(
            *(first.execute(make_call(), a) for _ in range(40)),
            *(second.execute(make_call(), b) for _ in range(40)),
        )
        return sorted(times)

    times = run(main())
    capacity = STANDARD.burst - DEFAULT_HEADROOM
    assert times[:capacity] == [0.0] * capacity
    assert times[-1] == pytest.approx((80 - capacity) / STANDARD.drain_per_second)


def test_default_backend_is_shared_process_wide() -> None:
    async def main() -> list[float]:
        first = Scheduler(STANDARD, clock=VirtualClock())
        second = Scheduler(STANDARD, clock=VirtualClock())
        transport = FakeTransport()
        await asyncio.gather(
            *(first.execute(make_call(), transport) for _ in range(30)),
            *(second.execute(make_call(), transport) for _ in range(30)),
        )
        return transport.times

    times = sorted(run(main()))
    assert times[-1] == pytest.approx((60 - 48) / STANDARD.drain_per_second)


def test_other_portals_have_their_own_buckets() -> None:
    async def main() -> list[float]:
        s = scheduler()
        a = FakeTransport(portal="a.example")
        b = FakeTransport(portal="b.example")
        await asyncio.gather(
            *(s.execute(make_call(), a) for _ in range(48)),
            *(s.execute(make_call(), b) for _ in range(48)),
        )
        assert set(s.statistics().buckets) == {"a.example", "b.example"}
        return a.times + b.times

    assert run(main()) == [0.0] * 96


def test_budget_keys_do_not_affect_the_bucket_key() -> None:
    async def main() -> float | None:
        s = scheduler()
        await s.execute(make_call(ADD), FakeTransport(credential="x"))
        await s.execute(make_call(ADD), FakeTransport(credential="y"))
        bucket = s.statistics().bucket
        return None if bucket is None else bucket.level

    assert run(main()) == pytest.approx(2.0)
