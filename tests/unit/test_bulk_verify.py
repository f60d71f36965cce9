"""The verification pass and author-aware reconciliation, on the fake port."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import anyio.lowlevel
import msgspec
import pytest
from bulk_fakes import FakePort as PlainPort

from bitrix_results._bulk import verify as verify_module
from bitrix_results._bulk.claims import Claims, Entry, digest, key_for
from bitrix_results._bulk.delivery import Delivery
from bitrix_results._bulk.types import ADD
from bitrix_results._bulk.verify import DELETE
from bitrix_results._scheduler import SchedulerStatistics
from bitrix_results._transport import Call
from bitrix_results._transport.types import Reply
from bitrix_results.bulk import bulk_add
from bitrix_results.errors import ConnectionLostError, RequestTimeoutError, portal_error
from bitrix_results.models import NewResult
from bitrix_results.testing import virtual_time


class FakePort(PlainPort):
    """The fake port with calls the portal runs late, and a hook for races.

    - ``late_adds``: how many of the next keyed adds time out and run *late*,
      after the scheduler's retry arrived (the key not stored yet), so the
      retry runs too: a double, behind an answer that looks right.
    - ``late_batches``: how many of the next add batches run late: the answer
      is lost at once (a timeout), the commands run just before the next add batch.
    - ``refuse_batches``: how many of the next add batches fail before anything runs.
    - ``before_batch``: called with an add batch's commands before it runs.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.late_adds = 0
        # Retries after a timeout, as the client's scheduler would count them.
        self.timeouts = 0
        self.late_batches = 0
        self.refuse_batches = 0
        self.before_batch: Callable[[list[Mapping[str, Any]]], None] | None = None
        self._late: list[Mapping[str, Any]] = []

    async def add(self, task_id: int, text: str, *, idempotency_key: str | None = None) -> Any:
        if self.late_adds:
            # The first attempt timed out and ran late (its key unknown to the
            # portal when the retry came): the scheduler's retry runs it again.
            self.late_adds -= 1
            self.create(task_id, text)
            self.timeouts += 1
        return await super().add(task_id, text, idempotency_key=idempotency_key)

    async def _delete_batch(self, ids: list[int]) -> Reply:
        await anyio.lowlevel.checkpoint()
        self.requests["delete batch"] += 1
        here = {r.id for r in self.all_results()}
        if not set(ids) <= here:
            # One refused command fails the whole REST 3.0 batch (api-facts §3.2).
            raise portal_error(code="0", message="Result not found.", status=404, method=DELETE)
        for results in self.tasks.values():
            results[:] = [r for r in results if r.id not in ids]
        return Reply(200, msgspec.Raw(msgspec.json.encode([{"result": True}] * len(ids))), None)

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            requests_sent=sum(self.requests.values()), retries={"timeout": self.timeouts}
        )

    async def execute(self, call: Call) -> Reply:
        commands: list[Mapping[str, Any]] = list(call.params)  # type: ignore[arg-type]
        if {c["method"] for c in commands} == {DELETE}:
            return await self._delete_batch([c["query"]["id"] for c in commands])
        if {c["method"] for c in commands} == {ADD}:
            if self.before_batch is not None:
                self.before_batch(commands)
            late, self._late = self._late, []
            for command in late:
                fields = command["query"]["fields"]
                self.create(fields["taskId"], fields["text"])
            if self.late_batches:
                self.late_batches -= 1
                self._late = commands
                raise RequestTimeoutError("timed out; the batch runs later", method="batch")
            if self.refuse_batches:
                self.refuse_batches -= 1
                raise ConnectionLostError("connection reset before the batch ran", method="batch")
        return await super().execute(call)


@pytest.fixture(autouse=True)
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake port runs nothing late past its answer: no cut-off to wait out.
    monkeypatch.setattr(verify_module, "SETTLE_SECONDS", 0.0)


def texts_on(port: FakePort, task_id: int) -> Counter[str]:
    return Counter(r.text for r in port.tasks[task_id])


def assert_reported_results_exist(port: FakePort, report: Any) -> None:
    on_portal = {r.id for r in port.all_results()}
    assert all(o.status == "created" for o in report.outcomes)
    assert {o.result.id for o in report.outcomes} <= on_portal


@pytest.mark.parametrize("late_at", [0, 5], ids=["first item", "later item"])
async def test_a_keyed_add_run_late_is_found_and_deleted(late_at: int) -> None:
    port = FakePort()
    items = [NewResult(1 + i % 3, f"row {i}") for i in range(12)]
    sent = 0
    real_add = port.add

    async def add(task_id: int, text: str, *, idempotency_key: str | None = None) -> Any:
        nonlocal sent
        if sent == late_at:
            port.late_adds = 1
        sent += 1
        return await real_add(task_id, text, idempotency_key=idempotency_key)

    port.add = add  # type: ignore[method-assign]
    report = await bulk_add(port, items, batch=False, concurrency=1)
    # The late run and the retry both created the item; the pass removed one.
    assert report.repaired == 1
    assert report.created == len(items)
    for task_id in (1, 2, 3):
        assert max(texts_on(port, task_id).values()) == 1
    assert len(port.all_results()) == len(items)
    # The copy kept is the one the report points at.
    assert_reported_results_exist(port, report)
    assert port.requests["delete batch"] == 1


async def test_a_batch_run_late_after_its_items_were_sent_again_is_repaired() -> None:
    port = FakePort()
    items = [NewResult(1 + i % 4, f"row {i}") for i in range(51)]
    port.late_batches = 1
    report = await bulk_add(port, items)
    # The batch (the 50 items after the lone first one) ran late, after the job
    # had looked and found nothing, just before its re-send: 50 doubles, all found.
    assert report.repaired == 50
    assert report.created == len(items)
    assert len(port.all_results()) == len(items)
    assert_reported_results_exist(port, report)


async def test_the_pass_spares_other_authors_older_results_and_same_text_twice() -> None:
    port = FakePort()
    # Before the job, on the first item's task: our own "row 0" (an hour ago by
    # the portal's clock) and another user's.
    port.skew = timedelta(hours=-1)
    port.create(1, "row 0")
    port.skew = timedelta(0)
    port.create(1, "row 0", author=2)
    # Two items with the same text: two results are wanted, none is a double.
    items = [NewResult(1, "row 0"), NewResult(1, "twice"), NewResult(1, "twice")]
    items += [NewResult(2, f"row {i}") for i in range(5)]

    def race(_: list[Any]) -> None:
        # During the job, another user writes the same text on task 2, and this
        # first batch will run late.
        port.before_batch = None
        port.create(2, "row 1", author=2)
        port.late_batches = 1

    port.before_batch = race
    report = await bulk_add(port, items)
    # Only the late batch's copies (7 items) go.
    assert report.repaired == 7
    assert texts_on(port, 1) == Counter({"row 0": 3, "twice": 2})
    assert [r.author_id for r in port.tasks[1] if r.text == "row 0"][:2] == [1, 2]
    assert texts_on(port, 2)["row 1"] == 2
    assert_reported_results_exist(port, report)


async def test_verify_false_leaves_the_doubles_and_a_clean_job_reads_nothing() -> None:
    port = FakePort()
    port.late_batches = 1
    report = await bulk_add(port, [NewResult(1, f"r{i}") for i in range(11)], verify=False)
    assert report.repaired == 0
    assert len(port.all_results()) == 21
    # No answer was lost: no call can have run twice, so the pass reads nothing.
    clean = FakePort()
    report = await bulk_add(clean, [NewResult(1, f"r{i}") for i in range(11)])
    assert report.repaired == 0
    assert "list batch" not in clean.requests


async def test_without_a_known_author_the_pass_deletes_nothing() -> None:
    port = FakePort(user=None)
    port.late_batches = 1
    report = await bulk_add(port, [NewResult(1, f"r{i}") for i in range(11)])
    assert report.repaired == 0
    assert report.created == 11


async def test_the_stream_does_not_verify() -> None:
    from bitrix_results.bulk import bulk_add_stream

    port = FakePort()
    port.late_batches = 1
    outcomes = [o async for o in bulk_add_stream(port, [NewResult(1, f"r{i}") for i in range(11)])]
    assert len(outcomes) == 11
    assert port.requests["delete"] == 0


def entry(index: int, task_id: int, text: str) -> Entry:
    item = NewResult(task_id, text)
    return Entry(index, item, key_for(item, "job", index), digest(item))


async def test_reconciliation_never_claims_another_users_same_text() -> None:
    port = FakePort()
    claims = Claims()
    delivery = Delivery(port, claims)
    # The job has a watermark and knows its author.
    await delivery.single(entry(0, 1, "first"))
    assert claims.author_id == 1
    batch = [entry(1, 7, "Approved"), entry(2, 7, "Rejected")]

    def race(_: list[Any]) -> None:
        # Between our send and its (lost) answer, another user writes "Approved".
        port.before_batch = None
        port.create(7, "Approved", author=2)

    port.before_batch = race
    port.refuse_batches = 1
    outcomes = await delivery.batch(batch)
    by_index = {o.index: o for o in outcomes}
    assert {o.status for o in outcomes} == {"created"}
    approved = by_index[1].result
    assert approved is not None
    assert approved.author_id == 1
    # Ours was sent again: the task holds both users' "Approved".
    assert sorted((r.text, r.author_id) for r in port.tasks[7]) == [
        ("Approved", 1),
        ("Approved", 2),
        ("Rejected", 1),
    ]


async def test_reconciliation_with_authors_unknown_still_settles() -> None:
    # A portal that omits authorId cannot narrow the match; the batch still settles.
    port = FakePort(user=None)
    claims = Claims()
    delivery = Delivery(port, claims)
    await delivery.single(entry(0, 1, "first"))
    assert claims.author_id is None
    port.lose_batches = 1
    outcomes = await delivery.batch([entry(1, 7, "a"), entry(2, 7, "b")])
    assert sorted(o.result.text for o in outcomes if o.result is not None) == ["a", "b"]
    assert len(port.tasks[7]) == 2


def test_the_pass_waits_out_the_portals_cut_off_after_a_lost_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify_module, "SETTLE_SECONDS", 60.0)
    port = FakePort()
    port.late_batches = 1
    items = [NewResult(1, f"r{i}") for i in range(11)]

    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        report = await bulk_add(port, items)
        return start, loop.time(), report.repaired

    start, end, repaired = virtual_time.run(main())
    # Read only once a call still running on the portal must have ended.
    assert end - start >= 60.0
    assert repaired == 10
    assert len(port.all_results()) == len(items)


async def test_doubles_are_deleted_in_batches_and_one_by_one_when_one_is_gone() -> None:
    port = FakePort()
    ids = [port.create(1, f"d{i}").id for i in range(120)]
    assert await verify_module.delete_all(port, ids) == 120
    # 50 + 50 + 20 in three requests, nothing one by one.
    assert port.requests["delete batch"] == 3
    assert "delete" not in port.requests
    assert port.all_results() == []
    # One of them gone meanwhile: its batch is refused whole, and done one by one.
    ids = [port.create(1, f"e{i}").id for i in range(3)]
    await port.delete(ids[1])
    assert await verify_module.delete_all(port, ids) == 3
    assert port.all_results() == []
