"""RedisBackend on a real redis-server that fails: killed, restarted, hung, lost.

The client is the real aiohttp transport against the fake portal; Redis is a
real ``redis-server`` this test owns (``redis_factory``). What must hold:

- a reply that arrived is returned, whatever Redis does afterwards (no call the
  portal executed is reported failed: no *phantom* failures);
- a call that cannot reach Redis raises ``LimiterUnavailableError`` before it
  is sent (fail-closed), or with ``fallback_share`` goes on locally;
- after a restart the calls go through again, and the lost bucket is recreated
  full, so no burst of 503s follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis_servers import RedisServer

from bitrix_results import LimiterUnavailableError, RedisBackend, Scheduler
from bitrix_results.testing import RunningPortal

from .conftest import FAST_RETRY, client_for, headroom_for, limits_of

pytestmark = pytest.mark.slow

Factory = Callable[[], RedisServer]


def scheduler_for(running: RunningPortal, backend: RedisBackend) -> Scheduler:
    config = running.portal.config
    return Scheduler(
        limits_of(config), backend=backend, headroom=headroom_for(config), retry=FAST_RETRY
    )


async def add_all(client: object, count: int, prefix: str) -> list[object]:
    return await asyncio.gather(
        *(client.add(1 + i % 50, f"{prefix}{i}") for i in range(count)),  # type: ignore[attr-defined]
        return_exceptions=True,
    )


def assert_no_phantoms(running: RunningPortal, outcomes: list[object], prefix: str) -> None:
    """Every result the portal created was reported created; failures are typed."""
    reported = {r.text for r in outcomes if not isinstance(r, BaseException)}  # type: ignore[attr-defined]
    on_portal = {r.text for r in running.portal.ledger.created if r.text.startswith(prefix)}
    assert on_portal == reported
    errors = [r for r in outcomes if isinstance(r, BaseException)]
    assert all(isinstance(e, LimiterUnavailableError) for e in errors), errors[:3]


async def test_redis_killed_mid_run_loses_no_reply(make_fake_portal, redis_factory: Factory):
    server = redis_factory()
    running = make_fake_portal(scale=20, latency=0.2)
    backend = RedisBackend.from_url(server.url, unavailable_wait=0.3)
    async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as client:
        job = asyncio.ensure_future(add_all(client, 120, "k"))
        # Kill Redis while calls are at the portal (replies still to come).
        while len(running.portal.ledger.created) < 20:
            await asyncio.sleep(0.01)
        server.kill()
        outcomes = await job
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed, "Redis died mid-run, so some calls could not be paced"
    assert len(failed) < len(outcomes)
    assert_no_phantoms(running, outcomes, "k")


async def test_redis_restarted_the_job_completes(make_fake_portal, redis_factory: Factory):
    server = redis_factory()
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(server.url, unavailable_wait=5.0)
    async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as client:
        job = asyncio.ensure_future(add_all(client, 150, "r"))
        while len(running.portal.ledger.created) < 40:
            await asyncio.sleep(0.01)
        server.kill()
        await asyncio.sleep(0.5)
        server.start()  # same port, empty: no persistence
        outcomes = await job
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    assert_no_phantoms(running, outcomes, "r")
    stats = running.portal.stats()
    assert stats.results_created == 150
    # The bucket was lost with the restart and recreated full, not empty, and
    # the reservations queued before the restart were put back in line: none
    # in 10 runs; a few allowed for scheduling jitter on a loaded machine.
    assert stats.rate_limited <= 4


async def test_unreachable_redis_fails_closed_before_sending(
    make_fake_portal, redis_factory: Factory
):
    server = redis_factory()
    server.kill()
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(server.url, unavailable_wait=0.3)
    async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(LimiterUnavailableError) as caught:
            await client.add(1, "never")
        waited = loop.time() - start
    assert caught.value.waited >= 0.2
    assert waited < 5
    assert running.portal.ledger.calls == ()
    assert "never" not in str(caught.value)


async def test_hung_redis_times_out_into_the_typed_error(make_fake_portal, redis_factory: Factory):
    server = redis_factory()
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(server.url, unavailable_wait=0.3, command_timeout=0.2)
    try:
        async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as c:
            await c.add(1, "before")
            server.pause()
            with pytest.raises(LimiterUnavailableError):
                await c.add(1, "during")
            server.resume()
            assert (await c.add(1, "after")).text == "after"
    finally:
        server.resume()
    assert [r.text for r in running.portal.ledger.created] == ["before", "after"]


async def test_local_fallback_goes_on_and_hands_back(make_fake_portal, redis_factory: Factory):
    server = redis_factory()
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(server.url, unavailable_wait=0.2, fallback_share=0.5)
    async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as client:
        await add_all(client, 10, "a")
        server.kill()
        during = await add_all(client, 30, "b")
        server.start()
        await asyncio.sleep(1.5)  # the backend probes Redis once a second
        after = await add_all(client, 10, "c")
        keys = [k.decode() for k in server_keys(server)]
    assert not [o for o in during + after if isinstance(o, BaseException)]
    assert running.portal.stats().results_created == 50
    assert running.portal.stats().rate_limited == 0
    # Back on Redis: the bucket lives there again.
    assert any(k.endswith(":bucket") for k in keys)


def server_keys(server: RedisServer) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        return list(client.keys("*"))
    finally:
        client.close()


async def test_a_lost_bucket_is_recreated_full(redis_factory: Factory):
    from bitrix_results._scheduler import BucketConfig, SystemClock

    server = redis_factory()
    config = BucketConfig(capacity=10, drain_per_second=100.0)
    async with RedisBackend.from_url(server.url) as backend:
        first = await backend.reserve("portal.example", config, SystemClock())
        server.flush()  # FLUSHALL, an eviction or a restart without persistence
        second = await backend.reserve("portal.example", config, SystemClock())
    assert first.waited == 0.0
    # Recreated at capacity: this reservation queued one drain interval.
    assert second.waited == pytest.approx(1 / 100.0, abs=0.005)


async def test_queued_reservations_go_back_in_line_in_a_recreated_bucket(
    redis_factory: Factory,
):
    """Each process puts its reservations still waiting back in a recreated bucket, once.

    They go out at the times the lost bucket gave them; calls reserved after
    the loss must wait behind them, or they would go alongside (503s).
    """
    from bitrix_results._scheduler import BucketConfig, SystemClock

    server = redis_factory()
    config = BucketConfig(capacity=10, drain_per_second=5.0)
    clock = SystemClock()
    async with (
        RedisBackend.from_url(server.url) as first,
        RedisBackend.from_url(server.url) as second,
    ):
        # 12 + 3 reservations: the last 2 of the first process and all 3 of
        # the second wait for their turn (0.2-1.0 s) when the state is lost.
        for _ in range(10):
            await first.reserve("portal.example", config, clock)
        queued = [asyncio.ensure_future(first.reserve("portal.example", config, clock))]
        queued.append(asyncio.ensure_future(first.reserve("portal.example", config, clock)))
        await asyncio.sleep(0.02)
        queued += [
            asyncio.ensure_future(second.reserve("portal.example", config, clock)) for _ in range(3)
        ]
        await asyncio.sleep(0.02)
        server.flush()
        after_first = asyncio.ensure_future(first.reserve("portal.example", config, clock))
        await asyncio.sleep(0.02)
        after_second = asyncio.ensure_future(second.reserve("portal.example", config, clock))
        await asyncio.gather(*queued)
        first_waited = (await after_first).waited
        second_waited = (await after_second).waited
    # Recreated full (10), + the first's 2 queued, + its own: (13 - 10) / 5 s.
    assert first_waited == pytest.approx(3 / 5.0, abs=0.05)
    # + the second's 3 queued (added once, not per call), + its own.
    assert second_waited == pytest.approx(7 / 5.0 - 0.02, abs=0.05)
