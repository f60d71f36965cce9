"""The backend protocol's "try now, else await", and one value per event loop."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from scheduler_fakes import FakeTransport, PortalModel, make_call, now

from bitrix_results._scheduler import (
    BucketConfig,
    BudgetKey,
    BudgetRules,
    Limits,
    MemoryBackend,
    RedisBackend,
    Scheduler,
)
from bitrix_results._scheduler.bucket import Reservation
from bitrix_results._scheduler.budget import Admission, Settlement
from bitrix_results._scheduler.clock import Clock
from bitrix_results._scheduler.per_loop import PerLoop
from bitrix_results.testing.virtual_time import VirtualClock, run

STANDARD = Limits.standard()
KEYS: Sequence[tuple[BudgetKey, int]] = ((("cred-1", "tasks.task.result.add"), 1),)


class DecliningBackend(MemoryBackend):
    """Memory state, but every ``_now`` declines, as Redis does: only the async forms act.

    (MemoryBackend's async forms call its ``_now`` forms, declined here, so the
    async forms below call the base class's ``_now`` forms directly.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.awaited: Counter[str] = Counter()

    def reserve_now(self, portal: str, config: BucketConfig) -> None:
        return None

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        self.awaited["reserve"] += 1
        return await super().reserve(portal, config, clock)

    def succeeded_now(self, portal: str, config: BucketConfig) -> bool:
        return False

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        self.awaited["succeeded"] += 1
        MemoryBackend.succeeded_now(self, portal, config)

    def admit_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> None:
        return None

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        self.awaited["admit"] += 1
        return MemoryBackend.admit_now(self, ticket, keys, rules, clock, woken_by=woken_by)

    def settle_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> bool:
        return False

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        self.awaited["settle"] += 1
        MemoryBackend.settle_now(self, ticket, keys, settlement, rules, clock)


class NeverAwaitedBackend(MemoryBackend):
    """Memory backend whose async forms fail: the scheduler must not need them."""

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        raise AssertionError("reserve awaited with a free slot in the bucket")

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        raise AssertionError("succeeded awaited")

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        raise AssertionError("admit awaited")

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        raise AssertionError("settle awaited")


def _send_times(backend: MemoryBackend, requests: int) -> tuple[list[float], Scheduler]:
    """Send ``requests`` calls at once through a portal model that enforces the limits."""

    async def main() -> tuple[list[float], Scheduler]:
        scheduler = Scheduler(STANDARD, clock=VirtualClock(), backend=backend, concurrency=16)
        transport = PortalModel(STANDARD, cost=5.0).transport()
        await asyncio.gather(*(scheduler.execute(make_call(), transport) for _ in range(requests)))
        return sorted(at for at, _ in transport.sent), scheduler

    return run(main())


def test_a_backend_that_declines_every_now_step_paces_alike() -> None:
    """No type switch: the scheduler asks every backend alike and awaits what it declines."""
    declining = DecliningBackend()
    times, scheduler = _send_times(declining, 150)
    expected, _ = _send_times(MemoryBackend(), 150)
    assert times == pytest.approx(expected)
    # Every step went through the async forms: one of each per call (admit at
    # least once; a refused call asks again).
    assert declining.awaited["reserve"] == 150
    assert declining.awaited["succeeded"] == 150
    assert declining.awaited["settle"] == 150
    assert declining.awaited["admit"] > 150
    # 150 calls of 5 s exceed the 480 s budget: the run waits out a window
    # (about 600 s here), and every admitted call was settled.
    assert times[-1] > 480
    budgets = scheduler.statistics().budgets
    assert budgets
    assert all(b.in_flight_units == 0 for b in budgets.values())


def test_the_memory_backend_does_every_step_at_once() -> None:
    async def main() -> int:
        scheduler = Scheduler(
            STANDARD, clock=VirtualClock(), backend=NeverAwaitedBackend(), concurrency=4
        )
        transport = FakeTransport()
        # Fewer calls than the bucket holds, more than the slots: callers queue
        # for a slot, then find room in the bucket and the budget at once.
        await asyncio.gather(*(scheduler.execute(make_call(), transport) for _ in range(40)))
        assert now() == 0.0
        return len(transport.sent)

    assert run(main()) == 40


def test_redis_backend_declines_every_now_step() -> None:
    fakeredis = pytest.importorskip("fakeredis")
    backend = RedisBackend(fakeredis.FakeAsyncRedis())
    config = BucketConfig(capacity=48, drain_per_second=2)
    rules = BudgetRules.from_limits(STANDARD)
    clock = VirtualClock()
    assert backend.reserve_now("portal.example", config) is None
    assert backend.succeeded_now("portal.example", config) is False
    assert backend.admit_now("t", KEYS, rules, clock) is None
    assert backend.settle_now("t", KEYS, Settlement("failed"), rules, clock) is False


# -- PerLoop ----------------------------------------------------------------------


def test_per_loop_makes_one_value_per_event_loop() -> None:
    made: list[object] = []

    def factory() -> object:
        made.append(object())
        return made[-1]

    per_loop: PerLoop[object] = PerLoop(factory)
    assert per_loop.current() is None  # never used, no loop running

    async def twice() -> tuple[object, object]:
        return per_loop.get(), per_loop.get()

    first = asyncio.run(twice())
    assert first[0] is first[1] is made[0]
    # Outside a loop: the value last used, made by nobody new.
    assert per_loop.current() is made[0]
    second = asyncio.run(twice())
    assert second[0] is second[1] is made[1]
    assert len(made) == 2
    with pytest.raises(RuntimeError):
        per_loop.get()


def test_per_loop_switches_between_live_loops() -> None:
    per_loop: PerLoop[list[int]] = PerLoop(list)
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]

    async def value() -> list[int]:
        return per_loop.get()

    try:
        a, b, a_again = (loops[i].run_until_complete(value()) for i in (0, 1, 0))
    finally:
        for loop in loops:
            loop.close()
    assert a is a_again
    assert a is not b
