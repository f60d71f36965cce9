"""Exactly once when the portal runs a call late (issue 10): the verification pass.

The slow-execution fault runs a call only after a delay, with its Idempotency-Key
looked up on arrival, so the client's same-key retry after a timeout runs too
(api-facts §4.1). The job's answers cannot show the double; the pass at the end
of ``bulk_add`` finds and deletes it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bitrix_results import JournalError, NewResult, RetryPolicy
from bitrix_results.errors import ConnectionLostError
from bitrix_results.testing import Faults, RunningPortal
from bitrix_results.testing._world import OTHER_USER

from .conftest import client_for

FAST = {"scale": 100, "drain_per_second": 20.0}
#: A same-key resend with no settle time: it goes while the late call still runs.
NO_SETTLE = RetryPolicy(base_delay=0.02, max_delay=0.2, settle_time=0.0)


def on_portal(running: RunningPortal, tasks: set[int]) -> Counter[tuple[int, str]]:
    """The results the portal holds now (deleted ones are gone), by (task, text)."""
    return Counter((t, r["text"]) for t in tasks for r in running.portal.results_of(t))


@pytest.mark.parametrize(
    ("batch", "method", "p", "late"),
    [(False, "tasks.task.result.add", 0.05, 0.6), (True, "batch", 0.3, 1.5)],
    ids=["single", "batch"],
)
async def test_calls_run_late_leave_no_double_behind(make_fake_portal, batch, method, p, late):
    # Batch: the batch runs after the job has looked for its items (found none)
    # and sent them again; single: after the same-key retry ran.
    running = make_fake_portal(
        **FAST,
        faults=Faults(slow_execution=p, slow_execution_seconds=late, methods=frozenset({method})),
        seed=7,
    )
    items = [NewResult(1 + i % 20, f"result {i}") for i in range(300)]
    # Single: the scheduler waits out a settle time before a same-key resend,
    # which leaves no double; none here, as if the portal ran calls later than
    # that, so the pass has doubles to find.
    retry = None if batch else NO_SETTLE
    async with client_for(running, timeout=0.3, retry=retry) as client:
        report = await client.bulk_add(items, batch=batch)
    assert report.created == len(items)
    held = on_portal(running, {i.task_id for i in items})
    # Every item is on the portal exactly once, and it is the result reported.
    assert held == Counter((i.task_id, i.text) for i in items)
    ids = {r["id"] for t in range(1, 21) for r in running.portal.results_of(t)}
    assert {o.result.id for o in report.outcomes if o.result is not None} == ids
    # The late calls did double items (the fault did its work), and the pass
    # deleted exactly those doubles.
    doubled = running.portal.ledger.duplicates()
    assert doubled > 0
    assert report.repaired == doubled


async def test_verify_off_leaves_the_doubles_for_the_caller(make_fake_portal):
    running = make_fake_portal(
        **FAST,
        faults=Faults(
            slow_execution=0.1,
            slow_execution_seconds=0.6,
            methods=frozenset({"tasks.task.result.add"}),
        ),
        seed=7,
    )
    items = [NewResult(1 + i % 20, f"result {i}") for i in range(300)]
    async with client_for(running, timeout=0.3, retry=NO_SETTLE) as client:
        report = await client.bulk_add(items, batch=False, verify=False)
    assert report.repaired == 0
    doubled = running.portal.ledger.duplicates()
    assert doubled > 0
    assert sum(on_portal(running, set(range(1, 21))).values()) == len(items) + doubled


async def test_another_users_same_text_is_never_taken_for_ours(make_fake_portal):
    # The first batch is lost before it reaches the portal; meanwhile a colleague
    # writes the same text on the same task. Reconciling the batch must not take
    # the colleague's result for the item: the item is sent again and created.
    running = make_fake_portal(**FAST)
    items = [NewResult(5, "warm-up"), NewResult(7, "Approved"), NewResult(7, "Rejected")]
    async with client_for(running) as client:
        real_execute = client.execute
        lost = False

        async def execute(call):
            nonlocal lost
            if call.method == "batch" and not lost:
                lost = True
                colleague = running.portal.add_result(7, "Approved", author_id=OTHER_USER)
                assert colleague > 0
                raise ConnectionLostError("connection reset", method="batch")
            return await real_execute(call)

        client.execute = execute  # type: ignore[method-assign]
        report = await client.bulk_add(items)
    assert report.created == 3
    approved = report.outcomes[1].result
    assert approved is not None
    assert approved.author_id == running.portal.config.webhook_user
    held = sorted((r["text"], r["authorId"]) for r in running.portal.results_of(7))
    assert held == [
        ("Approved", running.portal.config.webhook_user),
        ("Approved", OTHER_USER),
        ("Rejected", running.portal.config.webhook_user),
    ]
    # The verification pass ran (an answer was lost) and left the colleague's alone.
    assert report.repaired == 0


async def test_a_journal_is_refused_by_another_portal(make_fake_portal, tmp_path):
    first, second = make_fake_portal(**FAST), make_fake_portal(**FAST)
    journal = tmp_path / "job.journal"
    items = [NewResult(1 + i % 3, f"row {i}") for i in range(10)]
    async with client_for(first) as client:
        assert (await client.bulk_add(items, journal=journal)).created == 10
    async with client_for(second) as client:
        with pytest.raises(JournalError) as caught:
            await client.bulk_add(items, journal=journal)
    assert caught.value.field == "portal"
    assert second.portal.stats().requests == 0
    # The webhook code is in neither the message nor the file.
    code = first.webhook_url.rstrip("/").rsplit("/", 1)[1]
    assert code not in str(caught.value)
    assert code.encode() not in journal.read_bytes()
    # Emptied after the job ran: refused, not taken for a new job.
    journal.write_bytes(b"")
    async with client_for(first) as client:
        with pytest.raises(JournalError, match="empty"):
            await client.bulk_add(items, journal=journal)
    assert first.portal.stats().results_created == 10
