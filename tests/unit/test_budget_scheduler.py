"""The operating budget through Scheduler.execute: pacing, holds, 429, the 5% bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from scheduler_fakes import (
    ADD,
    LIST,
    FakeTransport,
    PortalModel,
    batch_call,
    make_call,
    now,
    ok,
    operating_limit,
    script,
)

from bitrix_results._bound import ideal_finish_time
from bitrix_results._scheduler import (
    BudgetKey,
    BudgetRules,
    Limits,
    MemoryBackend,
    Scheduler,
)
from bitrix_results._scheduler.budget import Settlement
from bitrix_results._transport.types import Call, Reply, RetryClass
from bitrix_results.models import ResponseTime
from bitrix_results.testing.virtual_time import DEFAULT_EPOCH, VirtualClock, run

STANDARD = Limits.standard()


def scheduler(limits: Limits = STANDARD, concurrency: int = 16) -> Scheduler:
    return Scheduler(limits, clock=VirtualClock(), backend=MemoryBackend(), concurrency=concurrency)


def bulk(
    portal: PortalModel,
    requests: int,
    call: Callable[[], Call] = make_call,
    concurrency: int = 16,
) -> tuple[float, Scheduler]:
    async def main() -> tuple[float, Scheduler]:
        s = scheduler(portal.limits, concurrency)
        transport = portal.transport()
        start = now()
        await asyncio.gather(*(s.execute(call(), transport) for _ in range(requests)))
        return now() - start, s

    return run(main())


@pytest.mark.parametrize(
    ("requests", "cost", "jitter", "latency"),
    [
        (1000, 2.0, 0.0, 0.0),  # budget binds: 241 calls per window ideally
        (1000, 2.0, 0.2, 0.05),  # the fake portal's ±20% cost jitter, 50 ms round trips
        (1500, 0.5, 0.2, 0.05),  # bucket and budget both bind, calls span baskets
    ],
)
def test_operating_bound_run_is_within_5_percent_of_ideal_and_never_refused(
    requests: int, cost: float, jitter: float, latency: float
) -> None:
    portal = PortalModel(STANDARD, cost=cost, jitter=jitter, latency=latency)
    elapsed, s = bulk(portal, requests)
    ideal = ideal_finish_time(requests, STANDARD, cost=cost)
    assert ideal > 0
    assert portal.refused_429 == portal.refused_503 == 0
    assert portal.executed == requests
    assert elapsed <= ideal * 1.05
    assert s.statistics().budget_wait_seconds > 0


@pytest.mark.parametrize("billed", ["nested", "batch"])
def test_batch_run_is_within_5_percent_whoever_is_billed(billed: str) -> None:
    # api-facts §2.2: the portal may bill a batch to its nested method or to `batch`.
    portal = PortalModel(STANDARD, cost=0.1, jitter=0.2, latency=0.05, billed=billed)
    elapsed, _ = bulk(portal, 250, call=batch_call)
    ideal = ideal_finish_time(250, STANDARD, cost=0.1, units_per_request=50)
    assert portal.refused_429 == portal.refused_503 == 0
    assert elapsed <= ideal * 1.05


def test_portal_without_counters_is_paced_by_the_bucket_only() -> None:
    portal = PortalModel(STANDARD, report=False)
    elapsed, s = bulk(portal, 200)
    assert elapsed == pytest.approx((200 - 48) / 2.0)
    stats = s.statistics().budgets[("cred-1", ADD)]
    assert stats.tracked is False
    assert stats.operating is None
    assert s.statistics().budget_wait_seconds == 0


def test_portal_without_counters_that_still_enforces_is_handled_by_429() -> None:
    # Counters absent but the limit enforced: we can only react to 429 (api-facts
    # §2.1), holding one basket each time; every call still completes once.
    portal = PortalModel(STANDARD, cost=5.0, report=False)
    elapsed, s = bulk(portal, 200)
    stats = s.statistics()
    assert portal.executed == 200
    assert stats.operating_limit_hits == portal.refused_429 > 0
    assert stats.retries["operating_limit"] == portal.refused_429
    # 97 calls per window (480 / 5 + 1): the third window finishes the job.
    assert 2 * STANDARD.operating_window <= elapsed < 3 * STANDARD.operating_window


def test_429_holds_the_key_until_the_known_reset_and_retries() -> None:
    reset = DEFAULT_EPOCH + 300.25

    async def main() -> tuple[list[float], Scheduler]:
        s = scheduler()
        transport = FakeTransport(
            script(ok(10.0, reset), ok(11.0, reset), operating_limit(), ok(1.0, reset + 60))
        )
        for _ in range(3):
            await s.execute(make_call(), transport)
        return transport.times, s

    times, s = run(main())
    # Refused at t=0, retried after the reset (+ a thousandth of the window).
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3] == pytest.approx(300.25 + 0.6)
    stats = s.statistics()
    assert stats.operating_limit_hits == 1
    assert stats.retries == {"operating_limit": 1}
    assert stats.budgets[("cred-1", ADD)].held_until is None


def test_429_with_no_reset_known_holds_one_basket() -> None:
    async def main() -> list[float]:
        s = scheduler()
        transport = FakeTransport(script(ok(no_time=True), operating_limit(), ok(no_time=True)))
        await s.execute(make_call(), transport)
        await s.execute(make_call(), transport)
        return transport.times

    assert run(main()) == [0.0, 0.0, pytest.approx(STANDARD.operating_window / 10)]


def test_a_held_method_does_not_hold_other_methods() -> None:
    async def main() -> tuple[float, float]:
        s = scheduler()
        transport = FakeTransport(
            script(ok(no_time=True), operating_limit(), ok(no_time=True), ok(no_time=True))
        )
        await s.execute(make_call(ADD), transport)
        held = asyncio.ensure_future(s.execute(make_call(ADD), transport))
        await asyncio.sleep(1)
        start = now()
        await s.execute(make_call(LIST), transport)
        other = now() - start
        await held
        return other, now()

    other, end = run(main())
    assert other == 0.0
    assert end == pytest.approx(STANDARD.operating_window / 10)


def test_a_held_key_does_not_occupy_concurrency_slots() -> None:
    async def main() -> float:
        s = scheduler(concurrency=1)
        transport = FakeTransport(script(ok(no_time=True), operating_limit(), ok(no_time=True)))
        await s.execute(make_call(ADD), transport)
        held = asyncio.ensure_future(s.execute(make_call(ADD), transport))
        await asyncio.sleep(1)
        start = now()
        await s.execute(make_call(LIST), FakeTransport())
        waited = now() - start
        await held
        return waited

    assert run(main()) == 0.0


def test_budget_is_per_credential() -> None:
    async def main() -> float:
        s = scheduler()
        a = FakeTransport(script(ok(no_time=True), operating_limit(), ok(no_time=True)))
        await s.execute(make_call(), a)
        held = asyncio.ensure_future(s.execute(make_call(), a))
        await asyncio.sleep(1)
        start = now()
        await s.execute(make_call(), FakeTransport(credential="another-webhook"))
        waited = now() - start
        await held
        return waited

    assert run(main()) == 0.0


def test_statistics_show_the_budget_per_key() -> None:
    reset = DEFAULT_EPOCH + 500.5

    async def main() -> Scheduler:
        s = scheduler()
        transport = FakeTransport(script(ok(100.0, reset), ok(102.0, reset), ok(104.0, reset)))
        for _ in range(3):
            await s.execute(make_call(), transport)
        return s

    stats = run(main()).statistics().budgets[("cred-1", ADD)]
    assert stats.credential == "cred-1"
    assert stats.method == ADD
    assert stats.operating == 104.0
    assert stats.reset_at == pytest.approx(reset)
    assert stats.cost == pytest.approx(2.0)
    assert stats.cost_bound == pytest.approx(3.0)
    assert stats.held_until is None
    assert stats.in_flight_units == 0
    assert stats.tracked is True


def test_in_flight_units_show_while_calls_run() -> None:
    async def main() -> tuple[int, int, int]:
        s = scheduler()
        release = asyncio.Event()
        totals = iter(range(1, 100))

        async def handler(call: Call, n: int) -> Reply:
            if n >= 2:
                await release.wait()
            return ok(float(next(totals)), DEFAULT_EPOCH + 600.5)

        transport = FakeTransport(handler)
        # Two serial batches teach both keys their totals and costs.
        for _ in range(2):
            await s.execute(batch_call(10), transport)
        tasks = [asyncio.ensure_future(s.execute(batch_call(10), transport)) for _ in range(3)]
        await asyncio.sleep(0.1)
        stats = s.statistics()
        during = stats.budgets[("cred-1", ADD)].in_flight_units
        batch_units = stats.budgets[("cred-1", "batch")].in_flight_units
        release.set()
        await asyncio.gather(*tasks)
        return during, batch_units, s.statistics().budgets[("cred-1", ADD)].in_flight_units

    during, batch_units, after = run(main())
    assert during == 30  # three batches of ten commands
    assert batch_units == 3
    assert after == 0


def test_cancelled_call_releases_its_units() -> None:
    async def main() -> tuple[int, int]:
        s = scheduler()

        async def hang(call: Call, n: int) -> Reply:
            if n > 0:
                await asyncio.sleep(3600)
            return ok(no_time=True)

        transport = FakeTransport(hang)
        await s.execute(make_call(retry=RetryClass.UNKEYED_WRITE), transport)
        task = asyncio.ensure_future(s.execute(make_call(), transport))
        await asyncio.sleep(1)
        assert s.statistics().budgets[("cred-1", ADD)].in_flight_units == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = s.statistics()
        return stats.budgets[("cred-1", ADD)].in_flight_units, stats.in_flight

    assert run(main()) == (0, 0)


def test_a_wake_up_the_woken_call_cannot_use_is_handed_on() -> None:
    """A batch woken by the add key but still blocked by `batch` wakes the next in line."""
    rules = BudgetRules.from_limits(STANDARD)
    add: BudgetKey = ("cred-1", ADD)
    batch: BudgetKey = ("cred-1", "batch")
    reset = DEFAULT_EPOCH + 600.5

    async def waiter(
        backend: MemoryBackend, ticket: str, keys: list[tuple[BudgetKey, int]]
    ) -> float:
        clock = VirtualClock()
        woken_by = None
        while True:
            admission = await backend.admit(ticket, keys, rules, clock, woken_by=woken_by)
            if admission.admitted:
                return now()
            woken_by = await backend.wait_budget(admission, clock)

    async def main() -> tuple[float, bool]:
        backend = MemoryBackend()
        clock = VirtualClock()
        # The add key: total 300, cost 1 (projected 1.5 a unit), and 120 units in
        # flight: 300 + 121 * 1.5 > 480, no room for anyone until they settle.
        for ticket, total in (("a", 299.0), ("b", 300.0)):
            assert (await backend.admit(ticket, [(add, 1)], rules, clock)).admitted
            time = ResponseTime(operating=total, operating_reset_at=reset)
            await backend.settle(ticket, [(add, 1)], Settlement("replied", time), rules, clock)
        assert (await backend.admit("flight", [(add, 120)], rules, clock)).admitted
        # The batch key: held for a long time (a 429 with no reset known).
        assert (await backend.admit("p", [(batch, 1)], rules, clock)).admitted
        await backend.settle("p", [(batch, 1)], Settlement("operating_limit"), rules, clock)
        first = asyncio.ensure_future(waiter(backend, "batch-call", [(batch, 1), (add, 50)]))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(waiter(backend, "single-call", [(add, 1)]))
        await asyncio.sleep(1)
        # The call in flight settles: its wake-up goes to the batch first, which
        # cannot use it (batch is held) and hands it on to the single call.
        time = ResponseTime(operating=310.0, operating_reset_at=reset)
        await backend.settle("flight", [(add, 120)], Settlement("replied", time), rules, clock)
        admitted_at = await second
        still_waiting = not first.done()
        first.cancel()
        return admitted_at, still_waiting

    admitted_at, still_waiting = run(main())
    assert admitted_at == pytest.approx(1.0)
    assert still_waiting
