"""RedisBackend on fakeredis and virtual time: the pacing logic across processes (design §2.5).

Pure logic on a virtual clock; what needs a real server (its clock, failures,
pub/sub, Cluster, worker processes) is in tests/integration/test_redis_*.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

# fakeredis runs Lua scripts only with `lupa` installed (the `fakeredis[lua]` extra).
pytest.importorskip("lupa", reason="fakeredis needs lupa to run the bucket's Lua script")
import fakeredis
from scheduler_fakes import (
    ADD,
    FakeTransport,
    PortalModel,
    make_call,
    now,
    ok,
    operating_limit,
    rate_limit,
    script,
)

from bitrix_results._bound import ideal_finish_time
from bitrix_results._scheduler import (
    BucketConfig,
    BudgetRules,
    Limits,
    RedisBackend,
    Scheduler,
)
from bitrix_results._scheduler.budget import Admission, Settlement
from bitrix_results.models import ResponseTime
from bitrix_results.testing.virtual_time import DEFAULT_EPOCH, VirtualClock, run

STANDARD = Limits.standard()
T = TypeVar("T")


@asynccontextmanager
async def backends(count: int = 1, **kwargs: object) -> AsyncIterator[list[RedisBackend]]:
    """``count`` backends, each on its own client ("process") of one fake server."""
    server = fakeredis.FakeServer()
    clients = [fakeredis.FakeAsyncRedis(server=server) for _ in range(count)]
    kwargs.setdefault("server_time", False)
    try:
        yield [RedisBackend(client, **kwargs) for client in clients]  # type: ignore[arg-type]
    finally:
        for client in clients:
            await client.aclose()


def with_backends(
    count: int, body: Callable[[list[RedisBackend]], Awaitable[T]], **kwargs: object
) -> T:
    async def main() -> T:
        async with backends(count, **kwargs) as found:
            return await body(found)

    return run(main())


def test_lua_reservation_queues_callers_at_the_drain_rate() -> None:
    async def body(found: list[RedisBackend]) -> list[float]:
        backend = found[0]
        clock = VirtualClock()
        config = BucketConfig(capacity=3, drain_per_second=2.0)
        times: list[float] = []

        async def one() -> None:
            await backend.reserve("portal.example", config, clock)
            times.append(now())

        await asyncio.gather(*(one() for _ in range(6)))
        return sorted(times)

    times = with_backends(1, body)
    assert times == [0.0, 0.0, 0.0, pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]


def test_lua_reservation_with_the_server_clock() -> None:
    async def body(found: list[RedisBackend]) -> list[float]:
        config = BucketConfig(capacity=2, drain_per_second=2.0)
        waits = []
        for _ in range(4):
            waits.append((await found[0].reserve("p", config, VirtualClock())).waited)
        return waits

    waits = with_backends(1, body, server_time=True)
    # Redis TIME moves by real microseconds between calls: close, not exact.
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(0.5, abs=0.05)
    assert waits[3] == pytest.approx(1.0, abs=0.05)


def test_two_schedulers_with_two_backends_share_one_bucket() -> None:
    async def body(found: list[RedisBackend]) -> list[float]:
        first = Scheduler(STANDARD, backend=found[0], clock=VirtualClock())
        second = Scheduler(STANDARD, backend=found[1], clock=VirtualClock())
        a = FakeTransport(credential="worker-a")
        b = FakeTransport(credential="worker-b")
        await asyncio.gather(
            *(first.execute(make_call(), a) for _ in range(40)),
            *(second.execute(make_call(), b) for _ in range(40)),
        )
        return sorted(a.times + b.times)

    times = with_backends(2, body)
    capacity = STANDARD.burst - 2
    assert times[:capacity] == [0.0] * capacity
    for k, at in enumerate(times[capacity:], start=1):
        assert at == pytest.approx(k / STANDARD.drain_per_second)


def test_rate_limit_slows_every_process() -> None:
    async def body(found: list[RedisBackend]) -> tuple[float | None, float]:
        first = Scheduler(STANDARD, backend=found[0], clock=VirtualClock())
        second = Scheduler(STANDARD, backend=found[1], clock=VirtualClock())
        await first.execute(make_call(), FakeTransport(script(rate_limit(), ok(no_time=True))))
        start = now()
        await second.execute(make_call(), FakeTransport())
        bucket = second.statistics().bucket
        return None if bucket is None else bucket.drain_per_second, now() - start

    drain, waited = with_backends(2, body)
    # Halved by the first process's 503, one step back per success since.
    assert drain == pytest.approx(2.0 * (0.5 + 0.05 * 2))
    # The bucket was marked full: the second process waited for a slot too.
    assert waited == pytest.approx(1.0 / (2.0 * 0.55))


def test_a_hold_set_by_one_process_holds_the_other() -> None:
    reset = DEFAULT_EPOCH + 120.5

    async def body(found: list[RedisBackend]) -> float:
        first = Scheduler(STANDARD, backend=found[0], clock=VirtualClock())
        # One credential (one webhook) used by two worker processes.
        await first.execute(make_call(), FakeTransport(script(ok(100.0, reset))))
        await first.execute(make_call(), FakeTransport(script(operating_limit(), ok(101.0, reset))))
        return now()

    async def both(found: list[RedisBackend]) -> tuple[float, list[float]]:
        first_done = asyncio.ensure_future(body(found))
        await asyncio.sleep(1)
        second = Scheduler(STANDARD, backend=found[1], clock=VirtualClock())
        transport = FakeTransport(script(ok(102.0, reset + 60)))
        await second.execute(make_call(), transport)
        return await first_done, transport.times

    first_end, second_times = with_backends(2, both)
    hold_end = 120.5 + STANDARD.operating_window / 1000
    assert first_end == pytest.approx(hold_end)
    assert second_times[0] >= hold_end - 1e-6


def test_budget_state_is_shared_across_backends() -> None:
    reset = DEFAULT_EPOCH + 600.5

    async def body(found: list[RedisBackend]) -> tuple[float | None, float | None, int]:
        clock = VirtualClock()
        first = Scheduler(STANDARD, backend=found[0], clock=clock)
        transport = FakeTransport(script(ok(10.0, reset), ok(12.0, reset)))
        await first.execute(make_call(), transport)
        await first.execute(make_call(), transport)
        rules = BudgetRules.from_limits(STANDARD)
        key = ("cred-1", ADD)
        admission = await found[1].admit("other-process", [(key, 3)], rules, clock)
        assert admission.admitted
        stats = found[1].budget_statistics(key)
        assert stats is not None
        return stats.operating, stats.cost, stats.in_flight_units

    assert with_backends(2, body) == (12.0, pytest.approx(2.0), 3)


def test_a_dead_process_flights_expire_with_their_lease() -> None:
    async def body(found: list[RedisBackend]) -> tuple[int, int]:
        clock = VirtualClock()
        rules = BudgetRules.from_limits(STANDARD)
        key = ("cred-1", ADD)
        # Learn the key, then admit a call that is never settled (the process died).
        for ticket in ("a", "b"):
            assert (await found[0].admit(ticket, [(key, 1)], rules, clock)).admitted
            replied = _replied(float(ord(ticket)), DEFAULT_EPOCH + 600.5)
            await found[0].settle(ticket, [(key, 1)], replied, rules, clock)
        assert (await found[0].admit("dead", [(key, 7)], rules, clock)).admitted
        # The process dies: its heartbeat stops renewing "dead".
        await found[0].aclose()
        assert (await found[1].admit("x", [(key, 1)], rules, clock)).admitted
        during = found[1].budget_statistics(key)
        await asyncio.sleep(31)
        assert (await found[1].admit("y", [(key, 1)], rules, clock)).admitted
        after = found[1].budget_statistics(key)
        assert during is not None
        assert after is not None
        return during.in_flight_units, after.in_flight_units

    # "x" stays: its process is alive and its heartbeat renewed it; "y" joins it.
    assert with_backends(2, body, lease=30.0) == (8, 2)


def test_contended_transactions_stay_consistent() -> None:
    async def body(found: list[RedisBackend]) -> int:
        clock = VirtualClock()
        rules = BudgetRules.from_limits(STANDARD)
        key = ("cred-1", ADD)
        assert (await found[0].admit("first", [(key, 1)], rules, clock)).admitted
        await found[0].settle("first", [(key, 1)], _replied(None, None), rules, clock)

        async def one(i: int) -> None:
            backend = found[i % len(found)]
            ticket = f"t{i}"
            assert (await backend.admit(ticket, [(key, 1)], rules, clock)).admitted
            await asyncio.sleep(0)
            await backend.settle(ticket, [(key, 1)], _replied(None, None), rules, clock)

        await asyncio.gather(*(one(i) for i in range(60)))
        await found[0].admit("last", [(key, 1)], rules, clock)
        stats = found[0].budget_statistics(key)
        assert stats is not None
        return stats.in_flight_units

    assert with_backends(3, body) == 1  # only "last"


def test_redis_wait_sleeps_to_a_hold_without_polling() -> None:
    async def body(found: list[RedisBackend]) -> float:
        clock = VirtualClock()
        start = now()
        await found[0].wait_budget(Admission(False, clock.time() + 30, on_change=False), clock)
        return now() - start

    assert with_backends(1, body) == pytest.approx(30.0)


def test_operating_bound_run_across_two_processes() -> None:
    # 12 s a call: 41 calls per window ideally, so 100 calls take 3 windows.
    portal = PortalModel(STANDARD, cost=12.0, jitter=0.2, latency=0.05)

    async def body(found: list[RedisBackend]) -> float:
        workers = [Scheduler(STANDARD, backend=b, clock=VirtualClock()) for b in found]
        transport = portal.transport()
        start = now()
        await asyncio.gather(*(workers[i % 2].execute(make_call(), transport) for i in range(100)))
        return now() - start

    elapsed = with_backends(2, body)
    assert portal.refused_503 == portal.refused_429 == 0
    assert portal.executed == 100
    assert elapsed <= ideal_finish_time(100, STANDARD, cost=12.0) * 1.05


def test_statistics_come_from_the_last_state_seen() -> None:
    async def body(found: list[RedisBackend]) -> Scheduler:
        s = Scheduler(STANDARD, backend=found[0], clock=VirtualClock())
        transport = FakeTransport(script(ok(3.0, DEFAULT_EPOCH + 600.5)))
        await s.execute(make_call(), transport)
        return s

    stats = with_backends(1, body).statistics()
    assert stats.bucket is not None
    assert stats.bucket.level == pytest.approx(1.0)
    assert stats.bucket.capacity == 48
    assert stats.budgets[("cred-1", ADD)].operating == 3.0


def test_works_with_decoded_responses_and_names_its_keys() -> None:
    async def main() -> list[str]:
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
        try:
            s = Scheduler(
                STANDARD,
                backend=RedisBackend(client, prefix="app", server_time=False),
                clock=VirtualClock(),
            )
            transport = FakeTransport(script(ok(1.0, DEFAULT_EPOCH + 600.5)))
            for _ in range(3):
                await s.execute(make_call(), transport)
            assert s.statistics().budgets[("cred-1", ADD)].operating == 1.0
            return sorted(await client.keys("app:*"))
        finally:
            await client.aclose()

    # Hash tags: a portal's bucket in one slot, a credential's budget keys in one
    # (the flights hash is gone: nothing is in flight).
    assert run(main()) == [f"app:{{c:cred-1}}:budget:{ADD}", "app:{p:portal.example}:bucket"]


def test_backend_validates_its_arguments() -> None:
    client = fakeredis.FakeAsyncRedis()
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(client, prefix="")
    with pytest.raises(ValueError, match="lease"):
        RedisBackend(client, lease=0)
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(client, prefix="a{b}")
    with pytest.raises(ValueError, match="egress"):
        RedisBackend(client, egress="")
    with pytest.raises(ValueError, match="unavailable_wait"):
        RedisBackend(client, unavailable_wait=-1)
    with pytest.raises(ValueError, match="command_timeout"):
        RedisBackend(client, command_timeout=0)
    with pytest.raises(ValueError, match="fallback_share"):
        RedisBackend(client, fallback_share=1.5)
    assert "bitrix_results" in repr(RedisBackend(client))


def test_redis_is_not_imported_with_the_scheduler() -> None:
    code = "import sys, bitrix_results._scheduler; print('redis' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
    )
    assert result.stdout.strip() == "False"


def _replied(operating: float | None, reset: float | None) -> Settlement:
    return Settlement("replied", ResponseTime(operating=operating, operating_reset_at=reset))


def test_callers_held_together_do_not_all_ask_again_at_the_holds_end() -> None:
    reset = DEFAULT_EPOCH + 30.5

    async def body(found: list[RedisBackend]) -> tuple[int, int]:
        clock = VirtualClock()
        rules = BudgetRules.from_limits(STANDARD)
        key = ("cred-1", ADD)
        # Another process learns the key, then meets a 429: held until the reset.
        assert (await found[0].admit("a", [(key, 1)], rules, clock)).admitted
        await found[0].settle("a", [(key, 1)], _replied(10.0, reset), rules, clock)
        assert (await found[0].admit("b", [(key, 1)], rules, clock)).admitted
        await found[0].settle("b", [(key, 1)], Settlement("operating_limit"), rules, clock)
        asked = 0
        admit = found[1].admit

        async def counted(*args: object, **kwargs: object) -> Admission:
            nonlocal asked
            asked += 1
            return await admit(*args, **kwargs)  # type: ignore[arg-type]

        found[1].admit = counted  # type: ignore[method-assign]
        scheduler = Scheduler(STANDARD, backend=found[1], clock=VirtualClock())
        transport = FakeTransport(script(*(ok(11.0 + n, reset + 600) for n in range(40))))
        await asyncio.gather(*(scheduler.execute(make_call(), transport) for _ in range(40)))
        return asked, len(transport.times)

    asked, sent = with_backends(2, body)
    assert sent == 40
    # Each call asks once and is held; after the hold, one probe goes, and the
    # rest follow it one by one (a few refused while it is in flight). Were all
    # 40 woken at the hold's end, each would ask once more for nothing.
    assert asked <= 40 + 40 + 10
