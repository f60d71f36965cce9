"""The Redis backend's budget scripts decide exactly as ``budget.py`` does.

The Lua scripts are a port of the pure functions (``_scheduler/redis/lua.py``). Here
both run the same random sequences of admissions, replies, 429s, failures,
replays and clock jumps (past holds, resets and leases) on a real
``redis-server``; every admission and every statistic must agree.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis_servers import RedisServer

from bitrix_results import Limits
from bitrix_results._scheduler import BudgetRules, RedisBackend
from bitrix_results._scheduler.budget import (
    BudgetKey,
    KeyState,
    Settlement,
    settle,
    statistics_of,
    try_admit,
)
from bitrix_results._scheduler.stats import BudgetStatistics
from bitrix_results.models import ResponseTime

EPOCH = 1_800_000_000.0
LEASE = 30.0
BATCH: BudgetKey = ("cred", "batch")
ADD: BudgetKey = ("cred", "tasks.task.result.add")


class StepClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = EPOCH

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class Portal:
    """Random but plausible time blocks: totals that grow, baskets that expire."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.total = 0.0
        self.reset = EPOCH + 600 + rng.choice([0.0, 0.5])
        self.history: list[tuple[float, float]] = []

    def reply(self, now: float, units: int) -> ResponseTime:
        rng = self.rng
        if now > self.reset:
            # The oldest basket expired: the total drops, the reset moves on.
            self.total = max(0.0, self.total - rng.uniform(50, 200))
            self.reset = now + rng.uniform(30, 600)
            if rng.random() < 0.5:
                self.reset = math.floor(self.reset)
        self.total += units * rng.uniform(5, 40)
        self.history.append((self.total, self.reset))
        if rng.random() < 0.15 and len(self.history) > 2:
            # A reply overtaken by a later one: an older (total, reset).
            total, reset = rng.choice(self.history[:-1])
        else:
            total, reset = self.total, self.reset
        start = now - rng.uniform(0.01, 2)
        return ResponseTime(
            start=None if rng.random() < 0.1 else start,
            finish=now,
            operating=total,
            operating_reset_at=None if rng.random() < 0.05 else reset,
        )


def scenario(seed: int) -> Iterator[tuple[str, object]]:
    rng = random.Random(seed)
    portal = Portal(rng)
    in_flight: list[tuple[str, tuple[tuple[BudgetKey, int], ...]]] = []
    tracked = rng.random() < 0.9
    for step in range(160):
        roll = rng.random()
        if roll < 0.45 or not in_flight:
            units = rng.randint(1, 3)
            if rng.random() < 0.3:
                keys: tuple[tuple[BudgetKey, int], ...] = ((BATCH, 1), (ADD, units))
            else:
                keys = ((ADD, units),)
            ticket = f"t{step}"
            yield "admit", (ticket, keys)
            in_flight.append((ticket, keys))
        elif roll < 0.85:
            ticket, keys = in_flight.pop(rng.randrange(len(in_flight)))
            kind = rng.random()
            if kind < 0.7:
                now = yield "now", None
                assert isinstance(now, float)
                time = portal.reply(now, sum(units for _, units in keys)) if tracked else None
                settlement = Settlement("replied", time, replayed=rng.random() < 0.05)
            elif kind < 0.85:
                settlement = Settlement("operating_limit")
            else:
                settlement = Settlement("failed")
            yield "settle", (ticket, keys, settlement)
        else:
            yield "advance", rng.choice([0.5, 3.0, 20.0, 61.0, 200.0])


@pytest.fixture
def client(redis_server: RedisServer) -> Redis:
    return Redis.from_url(redis_server.url)


@pytest.mark.parametrize("seed", range(30))
async def test_lua_budget_matches_budget_py(client: Redis, seed: int) -> None:
    rules = BudgetRules(limit=480.0, window=600.0)
    clock = StepClock()
    backend = RedisBackend(client, server_time=False, lease=LEASE)
    states: dict[BudgetKey, KeyState] = {BATCH: KeyState(), ADD: KeyState()}
    steps = scenario(seed)
    admitted = 0
    try:
        event, arg = next(steps)
        while True:
            if event == "now":
                event, arg = steps.send(clock.now)
                continue
            if event == "admit":
                ticket, keys = arg  # type: ignore[misc]
                expected = try_admit(states, ticket, keys, rules, clock.now, lease=LEASE)
                got = await backend.admit(ticket, keys, rules, clock)
                assert (got.admitted, got.on_change, got.blocked_by) == (
                    expected.admitted,
                    expected.on_change,
                    expected.blocked_by,
                )
                assert got.retry_at == pytest.approx(expected.retry_at)
                admitted += got.admitted
                for key, _ in keys:
                    assert backend.budget_statistics(key) == _approx(
                        statistics_of(key, states[key])
                    )
            elif event == "settle":
                ticket, keys, settlement = arg  # type: ignore[misc]
                settle(states, ticket, keys, settlement, rules, clock.now)
                await backend.settle(ticket, keys, settlement, rules, clock)
                for key, _ in keys:
                    assert backend.budget_statistics(key) == _approx(
                        statistics_of(key, states[key])
                    )
            else:
                clock.now += arg  # type: ignore[operator]
            event, arg = next(steps)
    except StopIteration:
        pass
    finally:
        await backend.aclose()
        await client.aclose()
    # The sequences do exercise both outcomes.
    assert admitted > 0


def _fields(stats: object) -> dict[str, object]:
    return {name: getattr(stats, name) for name in stats.__slots__}  # type: ignore[attr-defined]


def _approx(stats: object) -> object:
    return stats.__class__(  # type: ignore[call-arg]
        **{
            name: pytest.approx(value) if isinstance(value, float) else value
            for name, value in _fields(stats).items()
        }
    )


HOSTILE = [
    ResponseTime(start=EPOCH, operating=1e6, operating_reset_at=EPOCH + 10 * 365 * 86400.0),
    ResponseTime(start=EPOCH, operating=1e6, operating_reset_at=1e12),
    ResponseTime(operating=1e6, operating_reset_at=1e12),
    ResponseTime(start=-1e12, operating=1e6, operating_reset_at=EPOCH + 300.5),
    ResponseTime(start=math.nan, operating=1e6, operating_reset_at=math.inf),
    ResponseTime(start=EPOCH, operating=math.nan, operating_reset_at=EPOCH + 60),
    ResponseTime(start=EPOCH, operating=-5.0, operating_reset_at=EPOCH + 60),
    ResponseTime(start=EPOCH, operating=math.inf, operating_reset_at=math.nan),
]


async def _step_both(
    states: dict[BudgetKey, KeyState],
    backend: RedisBackend,
    ticket: str,
    settlement: Settlement,
    rules: BudgetRules,
    clock: StepClock,
) -> BudgetStatistics | None:
    """Admit ``ticket`` (one unit of ADD) in both ports, which must agree; when
    admitted, settle it in both and return the Lua side's statistics, checked
    equal to budget.py's. None: refused by both."""
    keys = ((ADD, 1),)
    expected = try_admit(states, ticket, keys, rules, clock.now, lease=LEASE)
    got = await backend.admit(ticket, keys, rules, clock)
    assert got.admitted == expected.admitted
    if not expected.admitted:
        return None
    settle(states, ticket, keys, settlement, rules, clock.now)
    await backend.settle(ticket, keys, settlement, rules, clock)
    stats = backend.budget_statistics(ADD)
    assert stats == _approx(statistics_of(ADD, states[ADD]))
    assert stats is not None
    return stats


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_lua_clamps_hostile_time_blocks_like_budget_py(
    client: Redis, hostile: ResponseTime
) -> None:
    # A sane reply, then the hostile one, then a 429: the hold stays within one
    # window in both ports, and both learn the same.
    rules = BudgetRules(limit=480.0, window=600.0)
    clock = StepClock()
    backend = RedisBackend(client, server_time=False, lease=LEASE)
    states: dict[BudgetKey, KeyState] = {ADD: KeyState()}
    sane = ResponseTime(start=EPOCH, operating=10.0, operating_reset_at=EPOCH + 120.5)
    try:
        for n, settlement in enumerate(
            [
                Settlement("replied", sane),
                Settlement("replied", hostile),
                Settlement("operating_limit"),
            ]
        ):
            stats = await _step_both(states, backend, f"h{n}", settlement, rules, clock)
            if stats is None:
                break
            assert stats.held_until is None or stats.held_until <= clock.now + rules.window
            clock.now += 1.0
    finally:
        await backend.aclose()
        await client.aclose()


async def test_lua_reads_an_integral_reset_a_second_past_the_window_like_budget_py(
    client: Redis,
) -> None:
    # The portal rounds operating_reset_at up to an int: in the first second of a
    # basket it is up to one second more than a window after a call's start.
    # Both ports keep it as one generation and learn the cost from it.
    rules = BudgetRules(limit=480.0, window=600.0)
    clock = StepClock()
    backend = RedisBackend(client, server_time=False, lease=LEASE)
    states: dict[BudgetKey, KeyState] = {ADD: KeyState()}
    opened = EPOCH + 0.3
    reset = float(math.ceil(opened + rules.window))
    try:
        for n in range(4):
            clock.now = opened + 0.1 * n
            time = ResponseTime(start=clock.now, operating=1.0 + n, operating_reset_at=reset)
            replied = Settlement("replied", time)
            stats = await _step_both(states, backend, f"r{n}", replied, rules, clock)
            assert stats is not None  # admitted by both
        assert stats.cost == pytest.approx(1.0)
    finally:
        await backend.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    ("factor", "total"), [(100, 1.2000000000000002), (12.5, 9.600000000000001)]
)
async def test_lua_admits_before_the_cost_is_known_exactly_like_budget_py(
    client: Redis, factor: float, total: float
) -> None:
    # A basket per call until the cost is learned: on a scaled window the two
    # ports must round the same way at the exact boundary (found by review:
    # ``(n + 1) * window / 10`` in Lua against ``(n + 1) * (window / 10)``).
    rules = BudgetRules.from_limits(Limits.standard().scaled(factor))
    clock = StepClock()
    backend = RedisBackend(client, server_time=False, lease=LEASE)
    states: dict[BudgetKey, KeyState] = {ADD: KeyState()}
    keys = ((ADD, 1),)
    reply = Settlement(
        "replied", ResponseTime(start=EPOCH, operating=total, operating_reset_at=EPOCH + 1.5)
    )
    try:
        assert try_admit(states, "probe", keys, rules, clock.now, lease=LEASE).admitted
        assert (await backend.admit("probe", keys, rules, clock)).admitted
        settle(states, "probe", keys, reply, rules, clock.now)
        await backend.settle("probe", keys, reply, rules, clock)
        expected = [
            try_admit(states, f"c{i}", keys, rules, clock.now, lease=LEASE).admitted
            for i in range(9)
        ]
        got = [(await backend.admit(f"c{i}", keys, rules, clock)).admitted for i in range(9)]
        assert got == expected
        assert True in expected
        assert False in expected
    finally:
        await backend.aclose()
        await client.aclose()
