"""Claims and the task gate, as pure units: no port, no network."""

from __future__ import annotations

import anyio
import pytest

from bitrix_results._bulk.claims import Claims, Entry, digest, key_for
from bitrix_results._bulk.gate import TaskGate
from bitrix_results._bulk.journal import Journal, JournalEntry
from bitrix_results._bulk.types import Outcome
from bitrix_results.errors import InvalidInputError
from bitrix_results.models import NewResult, TaskResult


def entry(index: int, task_id: int = 1, text: str = "Done", key: str | None = None) -> Entry:
    item = NewResult(task_id, text, key)
    return Entry(index, item, key_for(item, "job", index), digest(item))


def result(result_id: int, task_id: int = 1, text: str = "Done") -> TaskResult:
    return TaskResult(id=result_id, task_id=task_id, text=text)


def test_keys_come_from_the_item_key_else_from_the_job_and_position() -> None:
    keyed = NewResult(1, "Done", "row-7")
    assert key_for(keyed, "a", 0) == key_for(keyed, "b", 9)
    assert key_for(keyed, "a", 0).startswith("br-k-")
    assert key_for(NewResult(1, "Done"), "job", 3) == "br-job-3"
    # The fingerprint tells items apart by task, key and text.
    assert len({digest(NewResult(1, "a")), digest(NewResult(2, "a")), digest(keyed)}) == 3


def test_created_claims_the_ids_and_raises_the_watermark() -> None:
    claims = Claims()
    outcomes = claims.created([(entry(0), result(7)), (entry(1), result(4))])
    assert [(o.index, o.status, o.result) for o in outcomes] == [
        (0, "created", result(7)),
        (1, "created", result(4)),
    ]
    assert claims.claimed == {4, 7}
    assert claims.watermark == 7
    failed = claims.failed([(entry(2), InvalidInputError("text", "empty"))])
    assert failed[0].status == "failed"
    assert isinstance(failed[0].error, InvalidInputError)
    assert claims.claimed == {4, 7}


def test_a_prune_keeps_every_id_above_the_lowest_watermark_in_flight() -> None:
    claims = Claims(prune_at=1)
    claims.created([(entry(0), result(3))])
    # Nothing in flight: everything at or below the watermark goes.
    assert claims.claimed == set()
    with claims.holding(3):
        with claims.holding(5):
            claims.created([(entry(1), result(4)), (entry(2), result(6))])
            assert claims.claimed == {4, 6}
        # The unit sent at 5 settled; the one sent at 3 may still reconcile.
        claims.created([(entry(3), result(8))])
        assert claims.claimed == {4, 6, 8}
    assert claims.unit_watermarks == {}
    claims.created([(entry(4), result(9))])
    assert claims.claimed == set()
    assert claims.watermark == 9


def test_below_the_threshold_nothing_is_pruned() -> None:
    claims = Claims(prune_at=3)
    claims.created([(entry(0), result(1)), (entry(1), result(2))])
    assert claims.claimed == {1, 2}


def test_the_journal_sees_pending_created_and_forgotten_items(tmp_path) -> None:
    journal = Journal(tmp_path / "job.journal", "job")
    claims = Claims(journal)
    first, second, third = entry(0), entry(1, text="Two"), entry(2, task_id=2)
    claims.pending([first, second], batched=True, watermark=5)
    claims.pending([third], batched=False, watermark=5)
    claims.created([(first, result(11))])
    claims.failed([(third, InvalidInputError("text", "empty"))])
    journal.close()

    reopened = Claims(Journal(tmp_path / "job.journal"))
    assert reopened.watermark == 11
    settled = reopened.journaled(first)
    assert isinstance(settled, Outcome)
    assert settled.result == result(11)
    assert reopened.claimed == {11}
    pending = reopened.journaled(second)
    assert isinstance(pending, JournalEntry)
    assert (pending.status, pending.batched, pending.watermark) == ("pending", True, 5)
    assert reopened.journaled(third) is None
    assert reopened.owned(1, 5) == {11}
    with pytest.raises(ValueError, match="another item at position 1"):
        reopened.journaled(entry(1, text="Other"))
    assert reopened.journal is not None
    reopened.journal.close()


async def test_a_frozen_task_waits_for_sends_in_flight_and_holds_new_ones() -> None:
    gate = TaskGate()
    events: list[str] = []
    release = anyio.Event()

    async def send(task_id: int, name: str) -> None:
        async with gate.use({task_id}):
            events.append(f"{name} in")
            if name == "first":
                await release.wait()
            events.append(f"{name} out")

    async def reconcile() -> None:
        async with gate.frozen({1}):
            events.append("frozen")
            await anyio.wait_all_tasks_blocked()
            events.append("thawed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, 1, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(reconcile)
        await anyio.wait_all_tasks_blocked()
        # Still waiting for the send in flight; a new send on task 1 waits too,
        # one on another task goes through.
        assert gate.is_frozen(1)
        assert "frozen" not in events
        tg.start_soon(send, 1, "second")
        tg.start_soon(send, 2, "other")
        await anyio.wait_all_tasks_blocked()
        assert events == ["first in", "other in", "other out"]
        release.set()
    assert events == [
        "first in",
        "other in",
        "other out",
        "first out",
        "frozen",
        "thawed",
        "second in",
        "second out",
    ]
    assert not gate.is_frozen(1)
    assert gate.busy(1) == 0
