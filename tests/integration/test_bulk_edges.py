"""Regressions from review: every path where an outcome could be wrong or lost."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

import aiohttp
import anyio
import pytest

from bitrix_results import (
    ConnectError,
    InvalidInputError,
    Limits,
    NewResult,
    Outcome,
    OutcomeUnknownError,
    ResultsClient,
    RetryPolicy,
)
from bitrix_results._bulk.journal import Journal
from bitrix_results._bulk.pipeline import Job
from bitrix_results.errors import BulkAbortedError
from bitrix_results.testing import Faults

from .conftest import FAST_RETRY, assert_exactly_once, client_for

FAST = {"scale": 100, "drain_per_second": 20.0}


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
async def test_a_lost_first_answer_is_never_matched_to_an_older_result(make_fake_portal, batch):
    # The task already has "Done"; every add fails with 500 without running. The
    # job has no watermark yet, so it must not take the old "Done" for its own.
    running = make_fake_portal(
        **FAST, faults=Faults(fail_before=1.0, methods=frozenset({"tasks.task.result.add"}))
    )
    running.portal.add_result(1, "Done")
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, settle_time=0.0)
    async with client_for(running, retry=retry) as client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add([(1, "Done")], batch=batch)
    assert isinstance(caught.value.cause, OutcomeUnknownError)
    assert caught.value.report.created == 0
    assert [r["text"] for r in running.portal.results_of(1)] == ["Done"]


async def test_a_refusal_after_a_lost_answer_does_not_claim_nothing_exists(make_fake_portal):
    # Round 1 executes but its answers are lost; later rounds cannot connect.
    running = make_fake_portal(
        **FAST, faults=Faults(drop_after=1.0, methods=frozenset({"tasks.task.result.add"}))
    )
    client = client_for(running, retry=RetryPolicy(max_attempts=2, base_delay=0.0, settle_time=0.0))
    real_send, sent = client._transport.send, 0

    async def send(call):
        nonlocal sent
        sent += 1
        if call.method == "tasks.task.result.add" and sent > 2:
            raise ConnectError("could not connect to the portal", method=call.method)
        return await real_send(call)

    client._transport.send = send  # type: ignore[method-assign]
    async with client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add([(5, "Shipped")], batch=False)
    # Never "failed, nothing created": the result is on the portal.
    assert caught.value.report.failed == 0
    assert [r["text"] for r in running.portal.results_of(5)] == ["Shipped"]


async def test_a_broken_progress_callback_loses_no_outcome(make_fake_portal):
    running = make_fake_portal(**FAST, latency=0.01)
    items = [NewResult(1 + i % 30, f"row {i}") for i in range(1500)]
    calls = 0

    def progress(_):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("progress bar broke")

    async with client_for(running) as client:
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add(items, on_progress=progress)
    report = caught.value.report
    assert isinstance(caught.value.cause, RuntimeError)
    # Every result on the portal is in the partial report, and nothing twice.
    on_portal = {r.id for r in running.portal.ledger.created}
    assert {o.result.id for o in report.outcomes if o.result is not None} == on_portal
    assert 0 < report.created < len(items)
    assert running.portal.ledger.duplicates() == 0


@pytest.fixture
def emulator_process():
    """A fake portal in its own process (``bitrix-results emulator``).

    Abandoning requests mid-flight makes aiohttp's *server* side drop a few
    connection transports without closing them; in-process, the garbage
    collector would report those as this test's ResourceWarnings. Out of
    process, only the client's own resources are judged here.
    """
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "bitrix_results", "emulator", "--port", "0", "--scale", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        webhook = stats = ""
        while not (webhook and stats):
            line = proc.stdout.readline()
            assert line, "the emulator stopped before printing its addresses"
            if line.startswith("Webhook URL: "):
                webhook = line.split(": ", 1)[1].strip()
            elif line.startswith("Stats: "):
                stats = line.split(": ", 1)[1].strip()
        yield webhook, stats
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("close", [True, False], ids=["aclosing", "abandoned"])
async def test_stopping_a_stream_early_is_clean(emulator_process, close):
    webhook, stats_url = emulator_process
    items = [(1 + i % 30, f"row {i}") for i in range(1500)]
    seen = 0
    limits = Limits.standard().scaled(100)
    async with ResultsClient.from_webhook(webhook, limits=limits, retry=FAST_RETRY) as client:
        stream = client.bulk_add_stream(items)
        async with contextlib.aclosing(stream) if close else contextlib.nullcontext(stream):
            async for _ in stream:
                seen += 1
                if seen == 60:
                    break
        if not close:
            await stream.aclose()
        # The job stopped with the stream: nothing more reaches the portal.
        async with aiohttp.ClientSession() as http, http.get(stats_url) as resp:
            before = (await resp.json())["results_created"]
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http, http.get(stats_url) as resp:
            stats = await resp.json()
    assert seen == 60
    assert stats["results_created"] == before
    assert stats["duplicates"] == 0


async def test_results_of_many_repeated_and_bad_ids(make_fake_portal):
    running = make_fake_portal(**FAST)
    running.portal.add_result(3, "three")
    async with client_for(running) as client:
        got = [(t.task_id, len(t.results)) async for t in client.results_of_many([3, 4, 3])]
        with pytest.raises(InvalidInputError):
            _ = [t async for t in client.results_of_many([3, 0])]
    assert sorted(got) == [(3, 1), (3, 1), (4, 0)]


async def test_a_journal_of_another_input_is_refused(make_fake_portal, tmp_path):
    running = make_fake_portal(**FAST)
    journal = str(tmp_path / "job.journal")
    async with client_for(running) as client:
        await client.bulk_add([(11, "Approved"), (12, "Rejected")], journal=journal)
        # Same texts on other tasks: not the same input.
        with pytest.raises(BulkAbortedError) as caught:
            await client.bulk_add([(21, "Approved"), (22, "Rejected")], journal=journal)
    assert isinstance(caught.value.cause, ValueError)
    assert running.portal.results_of(21) == []


async def test_pruning_never_loses_a_claim_a_reconciliation_needs(make_fake_portal):
    running = make_fake_portal(
        **FAST, faults=Faults(fail_before=0.3, methods=frozenset({"batch"})), seed=3
    )
    # Repeated texts per task: a wrong claim would show as a missing item.
    items = [NewResult(1 + i % 4, f"same {i % 6}") for i in range(1200)]
    async with client_for(running) as client:
        # Pruned after every claim: only the watermarks of units in flight keep ids.
        job = Job(client, {}, total=len(items), prune_at=1)
        send, receive = anyio.create_memory_object_stream[Outcome](100)
        outcomes: list[Outcome] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run, items, send)
            async with receive:
                outcomes = [o async for o in receive]
    assert len(job.claims.claimed) < len(items)
    assert_exactly_once(running, items, sorted(outcomes, key=lambda o: o.index))


async def test_a_resumed_job_starts_from_the_journals_largest_result_id(make_fake_portal, tmp_path):
    running = make_fake_portal(**FAST)
    journal = tmp_path / "job.journal"
    items = [NewResult(1 + i % 5, f"row {i}") for i in range(300)]
    async with client_for(running, retry=FAST_RETRY) as client:
        first = await client.bulk_add(items, journal=str(journal))
    reopened = Journal(journal)
    try:
        top = reopened.max_result_id()
    finally:
        reopened.close()
    assert top == max(o.result.id for o in first.outcomes if o.result is not None)
    # The job built on that journal starts with it as its watermark.
    async with client_for(running) as client:
        job = Job(client, {"journal": str(journal)})
        try:
            assert job.claims.watermark == top
        finally:
            assert job.claims.journal is not None
            job.claims.journal.close()
