"""Failures on a fake port: bad rows split a batch, the job's own failures stop it."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from bulk_fakes import FakePort

from bitrix_results import Limits
from bitrix_results._bulk.health import UNREACHABLE_AFTER
from bitrix_results._bulk.read import FIRST_WAVE, results_of_many
from bitrix_results._scheduler import BucketStatistics, BudgetStatistics, SchedulerStatistics
from bitrix_results.bulk import BulkReport, bulk_add
from bitrix_results.errors import (
    BulkAbortedError,
    ConnectError,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
    ServiceBlockedError,
)
from bitrix_results.models import NewResult

N = 500


def items_with_bad(bad: dict[int, NewResult]) -> list[NewResult]:
    items = [NewResult(1 + i % 7, f"row {i}") for i in range(N)]
    for index, item in bad.items():
        items[index] = item
    return items


def assert_good_once_bad_failed(port: FakePort, items: list[NewResult], report, bad) -> None:
    assert [o.index for o in report.outcomes] == list(range(len(items)))
    for outcome in report.outcomes:
        assert outcome.status == ("failed" if outcome.index in bad else "created"), outcome
    on_portal = Counter((r.task_id, r.text) for r in port.all_results())
    wanted = Counter((i.task_id, i.text) for n, i in enumerate(items) if n not in bad)
    assert on_portal == wanted


# Requests of a clean run: the first item alone, then ceil(499 / 50) batches.
CLEAN = 1 + math.ceil((N - 1) / 50)
# Per bad row in a batch of 50: one look at the batch's tasks, then at each of
# ceil(log2 50) = 6 levels two halves and one look at the refused one.
PER_BAD_ROW = 1 + 3 * math.ceil(math.log2(50))


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "keep-prefix"])
async def test_two_bad_rows_cost_log_n_requests_each_not_one_per_row(rollback) -> None:
    port = FakePort()
    port.rollback = rollback
    # A row the portal's validation refuses, and a row on a task it refuses.
    bad = {137: NewResult(2, "refused text"), 312: NewResult(99, "no such task")}
    port.bad_texts = {"refused text"}
    port.forbidden = {99}
    items = items_with_bad(bad)
    report = await bulk_add(port, items)
    assert_good_once_bad_failed(port, items, report, bad)
    assert isinstance(report.outcomes[137].error, InvalidRequestError)
    assert isinstance(report.outcomes[312].error, NotFoundError)
    sent = sum(port.requests.values())
    assert report.requests == sent
    # Today's one-by-one re-send of two batches would be about 11 + 2 * 50.
    assert CLEAN < sent <= CLEAN + 2 * PER_BAD_ROW, port.requests
    # The rows of the two refused batches that did not exist went again, each counted once.
    if rollback:
        assert report.resent == 100
    else:
        # The kept prefix was found; the bad row and those after it went again.
        assert report.resent == (50 - (137 - 101)) + (50 - (312 - 301))


async def test_a_refused_batch_sends_its_good_rows_in_batches_again() -> None:
    port = FakePort()
    port.rollback = True
    bad = {75: NewResult(3, "refused text")}
    port.bad_texts = {"refused text"}
    items = items_with_bad(bad)[:101]
    report = await bulk_add(port, items)
    assert_good_once_bad_failed(port, items, report, bad)
    # Only the refused row was sent alone: the good rows went in halves.
    assert port.requests["add"] == 2
    assert port.requests["add batch"] <= 2 + 2 * math.ceil(math.log2(50))


@pytest.mark.parametrize(
    "refusal",
    [
        InvalidCredentialsError("Invalid request credentials", code="NO_AUTH_FOUND", status=401),
        InvalidCredentialsError(
            "Insufficient scope", code="insufficient_scope", status=403, method="batch"
        ),
        ServiceBlockedError("REST is blocked", code="PAYMENT_REQUIRED", status=402),
    ],
    ids=["wrong-credentials", "no-scope", "blocked"],
)
async def test_refused_credentials_stop_the_job_at_once(refusal) -> None:
    port = FakePort()
    port.refuse_all = refusal
    items = [NewResult(1 + i % 7, f"row {i}") for i in range(N)]
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, items)
    assert caught.value.cause is refusal
    # One request, and no item reported failed: none was created, none is done.
    assert sum(port.requests.values()) == 1
    assert caught.value.report.outcomes == []


async def test_credentials_revoked_mid_job_keep_what_was_created() -> None:
    port = FakePort()
    items = [NewResult(1 + i % 7, f"row {i}") for i in range(N)]
    seen = 0

    def revoke_after_some(progress) -> None:
        nonlocal seen
        seen = progress.done
        if progress.done >= 101:
            port.refuse_all = InvalidCredentialsError(
                "The access token was revoked", code="invalid_token", status=401
            )

    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, items, on_progress=revoke_after_some, concurrency=2)
    report = caught.value.report
    assert isinstance(caught.value.cause, InvalidCredentialsError)
    assert report.failed == 0
    assert report.created == len(port.all_results()) >= 101
    # Each unit in flight met the refusal once; nothing was tried row by row.
    assert sum(port.requests.values()) <= report.created // 50 + 1 + 2


async def test_an_unreachable_portal_stops_the_job_after_a_few_connect_failures() -> None:
    port = FakePort()
    port.refuse_all = ConnectError("could not connect to the portal (connection refused)")
    items = [NewResult(1 + i % 7, f"row {i}") for i in range(N)]
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, items)
    cause = caught.value.cause
    assert isinstance(cause, ConnectError)
    assert "portal unreachable" in str(cause)
    assert "connection refused" in str(cause)
    assert sum(port.requests.values()) == UNREACHABLE_AFTER
    assert caught.value.report.outcomes == []


async def test_a_connect_failure_between_successes_does_not_stop_the_job() -> None:
    port = FakePort()
    items = [NewResult(1 + i % 7, f"row {i}") for i in range(N)]
    blips = 0
    real = port.execute

    async def flaky(call):
        nonlocal blips
        # Every third request cannot connect (nothing reaches the portal).
        blips += 1
        if blips % 3 == 0:
            port.requests["refused"] += 1
            raise ConnectError("could not connect to the portal (connection refused)")
        return await real(call)

    port.execute = flaky  # type: ignore[method-assign]
    report = await bulk_add(port, items)
    assert report.created == N
    assert Counter((r.task_id, r.text) for r in port.all_results()) == Counter(
        (i.task_id, i.text) for i in items
    )
    # A batch that never left is sent again as is: no look at its tasks.
    assert port.requests["list batch"] == 0
    assert port.requests["refused"] > 0


async def test_results_of_many_refuses_a_non_iterable_before_sending() -> None:
    port = FakePort()
    for bad in (None, 5, "12"):
        with pytest.raises(TypeError, match="task_ids"):
            results_of_many(port, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        results_of_many(port, [1], concurrency=0)
    assert sum(port.requests.values()) == 0


def _bucket(level: float, capacity: float = 48.0, drain: float = 2.0) -> BucketStatistics:
    return BucketStatistics(
        portal="p",
        level=level,
        capacity=capacity,
        drain_per_second=drain,
        nominal_drain_per_second=drain,
    )


TASKS = list(range(1, 2001))  # 40 batches of 50


async def read_all(port: FakePort, **options) -> int:
    return sum([1 async for _ in results_of_many(port, TASKS, **options)])


async def test_a_read_sends_as_many_batches_as_the_bucket_admits_at_once() -> None:
    port = FakePort()
    port.bucket = _bucket(level=0.0)
    port.list_delay = 0.2
    assert await read_all(port) == len(TASKS)
    # 40 batches fit in a free bucket of 48: all in flight together, as a raw
    # concurrent reader would send them (a fixed 4 would take ten round trips).
    assert port.most_lists_in_flight == 40


async def test_a_full_bucket_keeps_only_its_drain_busy() -> None:
    port = FakePort()
    port.bucket = _bucket(level=48.0, drain=0.5)
    port.list_delay = 0.02
    assert await read_all(port) == len(TASKS)
    # drain x round trip + 1 = 0.5 x 0.02 + 1, rounded up: two at a time, not a
    # queue of batches waiting in the scheduler.
    assert port.most_lists_in_flight == 2


async def test_a_read_without_a_known_bucket_or_with_a_given_number() -> None:
    port = FakePort()
    port.list_delay = 0.05
    assert await read_all(port) == len(TASKS)
    assert port.most_lists_in_flight == FIRST_WAVE
    given = FakePort()
    given.bucket = _bucket(level=0.0)
    given.list_delay = 0.01
    assert await read_all(given, concurrency=3) == len(TASKS)
    assert given.most_lists_in_flight == 3


def _report(**fields) -> BulkReport:
    base = {
        "outcomes": [],
        "created": 0,
        "failed": 0,
        "elapsed": 1.0,
        "mode": "batch",
        "statistics": SchedulerStatistics(),
        "job_id": "job",
    }
    return BulkReport(**{**base, **fields})


def test_the_bound_counts_only_requests_the_portal_admitted() -> None:
    limits = Limits(burst=5, drain_per_second=1.0, operating_limit=10.0, operating_window=100.0)
    # 20 sent, of which 3 were 503 and 2 could not connect: 15 reached the bucket.
    report = _report(requests=20, rate_limit_hits=3, retries={"connect": 2, "timeout": 1})
    assert report.ideal_seconds(limits) == pytest.approx((15 - 5) / 1.0)
    assert _report(requests=0).ideal_seconds(limits) == 0.0


def test_the_bound_takes_the_operating_budget_when_it_binds() -> None:
    limits = Limits(burst=50, drain_per_second=2.0, operating_limit=10.0, operating_window=100.0)
    budget = BudgetStatistics(
        credential="c",
        method="tasks.task.result.add",
        operating=None,
        reset_at=None,
        cost=1.0,
        cost_bound=1.5,
        held_until=None,
        in_flight_units=0,
        tracked=True,
    )
    stats = SchedulerStatistics(budgets={("c", "tasks.task.result.add"): budget})
    report = _report(requests=30, statistics=stats, add_requests=30, add_commands=30)
    # Each window of 100 s admits floor(10 / 1) + 1 = 11 adds: 30 adds end in the third.
    assert report.ideal_seconds(limits) == pytest.approx(200.0)


async def test_a_read_refused_for_its_credentials_is_not_split_task_by_task() -> None:
    port = FakePort()
    refusal = InvalidCredentialsError(
        "Invalid request credentials", code="NO_AUTH_FOUND", status=401
    )
    port.refuse_all = refusal
    got = [t async for t in results_of_many(port, TASKS)]
    assert len(got) == len(TASKS)
    assert all(t.error is refusal for t in got)
    # One request per batch of 50: the refusal is every task's, nothing to isolate.
    assert port.requests == {"list batch": len(TASKS) // 50}
