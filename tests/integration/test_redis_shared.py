"""RedisBackend on a real redis-server and a real 3-node Redis Cluster.

One portal's keys share a hash slot, so every script is legal on a cluster;
one backend serves several event loops (a client per loop); ``from_url`` owns
and closes its clients; waiting callers are woken by another process's settle.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from redis_servers import RedisCluster, RedisServer

from bitrix_results import RedisBackend, Scheduler
from bitrix_results._scheduler import BudgetRules, Limits, SystemClock
from bitrix_results.testing import RunningPortal

from .conftest import FAST_RETRY, client_for, headroom_for, limits_of

pytestmark = pytest.mark.slow


def scheduler_for(running: RunningPortal, backend: RedisBackend) -> Scheduler:
    config = running.portal.config
    return Scheduler(
        limits_of(config), backend=backend, headroom=headroom_for(config), retry=FAST_RETRY
    )


async def test_adds_and_batches_on_a_three_node_cluster(
    make_fake_portal, redis_cluster: RedisCluster
):
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(redis_cluster.url, cluster=True)
    async with backend, client_for(running, scheduler=scheduler_for(running, backend)) as client:
        await asyncio.gather(*(client.add(1 + i % 50, f"c{i}") for i in range(60)))
        stats = client.statistics()
    portal = running.portal.stats()
    assert portal.results_created == 60
    assert portal.rate_limited == portal.operating_limited == 0
    # The state is really in the cluster (learned from the scripts' replies).
    assert stats.budgets
    assert all(b.operating is not None for b in stats.budgets.values())


async def test_one_backend_serves_two_event_loops(make_fake_portal, redis_server: RedisServer):
    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(redis_server.url)
    errors: list[BaseException] = []

    async def job(prefix: str) -> None:
        async with client_for(running, scheduler=scheduler_for(running, backend)) as client:
            await asyncio.gather(*(client.add(1, f"{prefix}{i}") for i in range(20)))

    def thread_main() -> None:
        try:
            asyncio.run(job("t"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=thread_main)
    thread.start()
    await job("m")
    await asyncio.to_thread(thread.join)
    await backend.aclose()
    assert errors == []
    assert running.portal.stats().results_created == 40
    assert running.portal.stats().rate_limited == 0


async def test_a_waiter_is_woken_by_another_processes_settle(redis_server: RedisServer):
    rules = BudgetRules.from_limits(Limits.standard())
    key = ("cred", "tasks.task.result.add")
    clock = SystemClock()
    async with (
        RedisBackend.from_url(redis_server.url) as first,
        RedisBackend.from_url(redis_server.url) as second,
    ):
        # Nothing is known of the key: one call at a time (the probe).
        assert (await first.admit("probe", [(key, 1)], rules, clock)).admitted
        refused = await second.admit("next", [(key, 1)], rules, clock)
        assert not refused.admitted
        assert refused.on_change
        # The first wait subscribes and returns at once to look again.
        assert await second.wait_budget(refused, clock) is None
        refused = await second.admit("next", [(key, 1)], rules, clock)
        waiting = asyncio.ensure_future(second.wait_budget(refused, clock))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        from bitrix_results._scheduler.budget import Settlement

        await first.settle("probe", [(key, 1)], Settlement("failed"), rules, clock)
        # Woken by the notification, well before the lease-long re-check.
        assert await asyncio.wait_for(waiting, 2.0) == key


async def test_one_settle_wakes_one_waiter_across_processes(redis_server: RedisServer):
    """A settle wakes the first queued waiter, not one in every process.

    Waking one per process sent a round trip from each, all but one refused
    again (the operating-bound benchmark's extra CPU).
    """
    from bitrix_results._scheduler.budget import Settlement

    rules = BudgetRules.from_limits(Limits.standard())
    key = ("cred", "tasks.task.result.add")
    clock = SystemClock()
    async with (
        RedisBackend.from_url(redis_server.url) as first,
        RedisBackend.from_url(redis_server.url) as second,
        RedisBackend.from_url(redis_server.url) as third,
    ):
        assert (await first.admit("probe", [(key, 1)], rules, clock)).admitted

        async def queue(backend: RedisBackend, ticket: str) -> asyncio.Future[object]:
            refused = await backend.admit(ticket, [(key, 1)], rules, clock)
            assert await backend.wait_budget(refused, clock) is None  # subscribed
            refused = await backend.admit(ticket, [(key, 1)], rules, clock)
            assert not refused.admitted
            return asyncio.ensure_future(backend.wait_budget(refused, clock))

        second_waits = await queue(second, "s")
        third_waits = await queue(third, "t")
        await first.settle("probe", [(key, 1)], Settlement("failed"), rules, clock)
        assert await asyncio.wait_for(second_waits, 2.0) == key
        # The other waiter sleeps on (until a settle, or its lease-long look).
        await asyncio.sleep(0.3)
        assert not third_waits.done()
        # The woken caller goes (the probe) and its settle wakes the next.
        assert (await second.admit("s", [(key, 1)], rules, clock)).admitted
        await second.settle("s", [(key, 1)], Settlement("failed"), rules, clock)
        assert await asyncio.wait_for(third_waits, 2.0) == key


async def test_egress_addresses_get_separate_buckets(redis_server: RedisServer):
    from bitrix_results._scheduler import BucketConfig

    config = BucketConfig(capacity=2, drain_per_second=1.0)
    clock = SystemClock()
    async with (
        RedisBackend.from_url(redis_server.url, egress="10.0.0.1") as one,
        RedisBackend.from_url(redis_server.url, egress="10.0.0.2") as two,
    ):
        for backend in (one, two):
            for _ in range(2):
                assert (await backend.reserve("portal.example", config, clock)).waited == 0.0
        stats = one.bucket_statistics("portal.example")
    assert stats is not None
    assert stats.level == pytest.approx(2.0, abs=0.1)


async def test_a_dead_workers_probe_blocks_others_for_one_lease(redis_server: RedisServer):
    from bitrix_results._scheduler.budget import Settlement

    rules = BudgetRules.from_limits(Limits.standard())
    key = ("cred", "tasks.task.result.add")
    clock = SystemClock()
    lease = 0.5
    dead = RedisBackend.from_url(redis_server.url, lease=lease)
    async with RedisBackend.from_url(redis_server.url, lease=lease) as alive:
        # The dead worker holds the key's one probe, then dies without settling
        # (its heartbeat stops with it).
        assert (await dead.admit("probe", [(key, 1)], rules, clock)).admitted
        await asyncio.sleep(lease * 2)  # renewed by the heartbeat meanwhile
        refused = await alive.admit("next", [(key, 1)], rules, clock)
        assert not refused.admitted
        await dead.aclose()
        loop = asyncio.get_running_loop()
        died = loop.time()
        admission = refused
        while not admission.admitted:
            await asyncio.wait_for(alive.wait_budget(admission, clock), lease * 10)
            admission = await alive.admit("next", [(key, 1)], rules, clock)
        # Admitted once the dead worker's lease ran out, not after a long fixed lease.
        assert loop.time() - died < lease * 10
        await alive.settle("next", [(key, 1)], Settlement("failed"), rules, clock)


class SkewedClock(SystemClock):
    """This host's wall clock, ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return super().time() + self.skew


async def test_the_budget_runs_on_the_servers_clock(redis_server: RedisServer):
    from bitrix_results._scheduler.budget import Settlement

    rules = BudgetRules(limit=480.0, window=60.0)
    key = ("cred", "tasks.task.result.add")
    behind, ahead = SkewedClock(-3.0), SkewedClock(+3.0)
    async with (
        RedisBackend.from_url(redis_server.url) as first,
        RedisBackend.from_url(redis_server.url) as second,
    ):
        # A 429 on the first host holds the key for one basket (W / 10 = 6 s).
        assert (await first.admit("a", [(key, 1)], rules, behind)).admitted
        await first.settle("a", [(key, 1)], Settlement("operating_limit"), rules, behind)
        held = await second.admit("b", [(key, 1)], rules, ahead)
    assert not held.admitted
    assert not held.on_change
    # Six seconds from now on *each* host's clock: the hold was set and read on
    # the server's clock, then shifted onto the reader's own.
    assert held.retry_at - ahead.time() == pytest.approx(6.0, abs=0.5)
    stats = first.budget_statistics(key)
    assert stats is not None
    assert stats.held_until is not None
    assert stats.held_until - behind.time() == pytest.approx(6.0, abs=0.5)


async def test_a_blocking_client_and_an_async_one_share_a_backend(
    make_fake_portal, redis_server: RedisServer
):
    from bitrix_results import sync

    running = make_fake_portal(scale=20)
    backend = RedisBackend.from_url(redis_server.url)
    scheduler = scheduler_for(running, backend)

    def blocking() -> list[int]:
        # The sync facade's own event loop, in its own thread.
        with sync.ResultsClient.from_webhook(running.webhook_url, scheduler=scheduler) as c:
            return [c.add(1, f"s{i}").id for i in range(10)]

    async with client_for(running, scheduler=scheduler) as client:
        from_thread, from_here = await asyncio.gather(
            asyncio.to_thread(blocking),
            asyncio.gather(*(client.add(2, f"a{i}") for i in range(10))),
        )
    await backend.aclose()  # closes the facade loop's client too (that loop still runs)
    assert len(set(from_thread) | {r.id for r in from_here}) == 20
    assert running.portal.stats().rate_limited == 0
