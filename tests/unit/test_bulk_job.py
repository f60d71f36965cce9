"""The bulk job end to end on a fake port: feeding, stopping, resuming, reading."""

from __future__ import annotations

import contextlib
from collections import Counter

import anyio
import pytest
from bulk_fakes import FakePort

from bitrix_results import BulkProgress, Outcome
from bitrix_results._bulk.pipeline import Job
from bitrix_results._bulk.read import results_of_many
from bitrix_results.bulk import bulk_add, bulk_add_stream
from bitrix_results.errors import BulkAbortedError, InvalidInputError, NotFoundError
from bitrix_results.models import NewResult


async def run_job(job: Job, items: list[NewResult]) -> list[Outcome]:
    send, receive = anyio.create_memory_object_stream[Outcome](100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(job.run, items, send)
        async with receive:
            outcomes = [o async for o in receive]
    return sorted(outcomes, key=lambda o: o.index)


def assert_exactly_once(port: FakePort, items: list[NewResult], outcomes: list[Outcome]) -> None:
    assert [o.index for o in outcomes] == list(range(len(items)))
    assert all(o.status == "created" for o in outcomes)
    assert Counter((r.task_id, r.text) for r in port.all_results()) == Counter(
        (i.task_id, i.text) for i in items
    )
    assert len({o.result.id for o in outcomes if o.result is not None}) == len(items)


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
async def test_a_prune_under_load_never_loses_a_claim_a_reconciliation_needs(batch) -> None:
    port = FakePort()
    # Every third batch loses its answer, while the job prunes after every claim
    # and many units are in flight; repeated texts make a wrong claim visible.
    port.lose_every_batch = 3
    items = [NewResult(1 + i % 4, f"same {i % 6}") for i in range(1500)]
    job = Job(port, {"batch": batch, "concurrency": 8}, total=len(items), prune_at=1)
    outcomes = await run_job(job, items)
    assert_exactly_once(port, items, outcomes)
    if batch:
        assert port.requests["list batch"] > 0
    assert len(job.claims.claimed) < len(items)


async def test_the_first_item_goes_alone_then_batches_of_fifty() -> None:
    port = FakePort()
    items = [NewResult(1, f"row {i}") for i in range(101)]
    report = await bulk_add(port, items)
    assert report.created == 101
    assert report.mode == "batch"
    assert port.requests == {"add": 1, "add batch": 2}


async def test_a_non_item_stops_the_feed_and_the_items_before_it_are_reported() -> None:
    port = FakePort()
    items: list[object] = [NewResult(1, "a"), (2, ""), NewResult(1, "b"), "not an item"]
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, items)  # type: ignore[arg-type]
    assert isinstance(caught.value.cause, TypeError)
    assert "items[3]" in str(caught.value.cause)
    report = caught.value.report
    assert [o.status for o in report.outcomes] == ["created", "failed", "created"]
    assert isinstance(report.outcomes[1].error, InvalidInputError)


async def test_a_broken_progress_callback_stops_the_job_after_the_work_in_flight() -> None:
    port = FakePort()
    seen: list[BulkProgress] = []

    def progress(p: BulkProgress) -> None:
        seen.append(p)
        if p.done >= 60:
            raise RuntimeError("callback broke")

    items = [NewResult(1 + i % 3, f"row {i}") for i in range(500)]
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, items, on_progress=progress, concurrency=2)
    assert isinstance(caught.value.cause, RuntimeError)
    report = caught.value.report
    # Everything sent was settled and reported; nothing after the stop was sent.
    assert report.created == len(port.all_results()) < len(items)
    assert seen[-1].done >= 60
    assert seen[-1].total == len(items)


async def test_an_unknown_option_is_refused_like_a_misspelt_keyword() -> None:
    with pytest.raises(TypeError, match="'concurency'"):
        await bulk_add(FakePort(), [NewResult(1, "a")], concurency=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bulk_add_stream"):
        async for _ in bulk_add_stream(FakePort(), [], jobid="x"):  # type: ignore[call-arg]
            pass


async def test_a_resumed_job_reconciles_the_batches_its_last_run_left_in_flight(
    tmp_path,
) -> None:
    port = FakePort()
    journal = str(tmp_path / "job.journal")
    items = [NewResult(1 + i % 2, f"row {i}") for i in range(180)]
    # The first run is stopped while its batches have executed but not answered.
    port.hang_batches = True
    settled: list[Outcome] = []
    stream = bulk_add_stream(port, items, journal=journal, job_id="job-1")
    async with contextlib.aclosing(stream) as outcomes:
        with anyio.move_on_after(0.2):
            async for outcome in outcomes:
                settled.append(outcome)
    assert len(settled) == 1
    assert len(port.all_results()) > 1
    port.hang_batches = False
    report = await bulk_add(port, items, journal=journal)
    assert report.job_id == "job-1"
    assert_exactly_once(port, items, report.outcomes)
    assert port.requests["list batch"] > 0


async def test_results_of_many_pages_each_task_and_isolates_a_refused_one() -> None:
    # The portal caps pages at 12 of the 20 asked (api-facts §4.3).
    port = FakePort(page_size=20, cap=12)
    for i in range(61):
        port.create(1 + i % 2, f"r{i}")
    port.forbidden = {7}
    got = {t.task_id: t async for t in results_of_many(port, [1, 7, 2])}
    assert [r.text for r in got[1].results] == [f"r{i}" for i in range(0, 61, 2)]
    assert [r.text for r in got[2].results] == [f"r{i}" for i in range(1, 61, 2)]
    assert isinstance(got[7].error, NotFoundError)


async def test_cancelling_the_consumer_of_a_stream_stops_its_work() -> None:
    port = FakePort()
    port.hang_batches = True
    items = [NewResult(1, f"row {i}") for i in range(200)]
    stream = bulk_add_stream(port, items)
    async with contextlib.aclosing(stream) as outcomes:
        with anyio.move_on_after(0.1) as scope:
            async for _ in outcomes:
                pass
    assert scope.cancelled_caught
    sent = dict(port.requests)
    await anyio.sleep(0.05)
    # The work was cancelled with its consumer, not left running in the background.
    assert port.requests == sent
