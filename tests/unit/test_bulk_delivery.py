"""Delivery and reconciliation against a fake port: lost answers, duplicates, prunes."""

from __future__ import annotations

from collections import Counter

import pytest
from bulk_fakes import FakePort

from bitrix_results._bulk.claims import Claims, Entry, digest, key_for
from bitrix_results._bulk.delivery import Delivery
from bitrix_results._bulk.types import Outcome
from bitrix_results.errors import NotFoundError, OutcomeUnknownError
from bitrix_results.models import NewResult


def entries(items: list[NewResult], start: int = 0) -> list[Entry]:
    return [
        Entry(i, item, key_for(item, "job", i), digest(item)) for i, item in enumerate(items, start)
    ]


def with_history(port: FakePort, claims: Claims, task_ids: list[int], text: str) -> None:
    """Older results the job does not own, and a watermark above them."""
    for task_id in task_ids:
        claims.watermark = port.create(task_id, text).id


def assert_each_created_once(port: FakePort, sent: list[Entry], outcomes: list[Outcome]) -> None:
    assert sorted(o.index for o in outcomes) == sorted(e.index for e in sent)
    assert all(o.status == "created" for o in outcomes), [o.error for o in outcomes]
    ids = [o.result.id for o in outcomes if o.result is not None]
    assert len(set(ids)) == len(sent)
    by_id = {r.id: r for r in port.all_results()}
    for o in outcomes:
        assert o.result is not None
        assert (by_id[o.result.id].task_id, by_id[o.result.id].text) == (
            o.item.task_id,
            o.item.text,
        )


async def test_a_lost_batch_answer_is_settled_by_reconciliation_not_a_resend() -> None:
    port, claims = FakePort(), Claims()
    with_history(port, claims, [1, 2], "Done")
    sent = entries([NewResult(1 + i % 2, f"row {i}") for i in range(10)])
    port.lose_batches = 1
    outcomes = await Delivery(port, claims).batch(sent)
    assert_each_created_once(port, sent, outcomes)
    # Ten created by the one batch that ran, none by a second send.
    assert len(port.all_results()) == 2 + 10
    assert port.requests["add batch"] == 1
    assert port.requests["list batch"] == 1


async def test_duplicate_texts_on_a_task_each_claim_their_own_result() -> None:
    port, claims = FakePort(), Claims()
    # The same text exists already (below the watermark) and is repeated in the batch.
    with_history(port, claims, [1], "same")
    sent = entries([NewResult(1, "same")] * 4 + [NewResult(1, "other")])
    port.lose_batches = 1
    outcomes = await Delivery(port, claims).batch(sent)
    assert_each_created_once(port, sent, outcomes)
    on_task = Counter(r.text for r in port.tasks[1])
    assert on_task == {"same": 5, "other": 1}
    assert 1 not in {o.result.id for o in outcomes if o.result is not None}


async def test_results_the_job_owns_are_never_matched_twice() -> None:
    port, claims = FakePort(), Claims()
    delivery = Delivery(port, claims)
    first = entries([NewResult(1, "same")])
    # A first item of the job creates "same" at the watermark-less start.
    assert (await delivery.single(first[0]))[0].status == "created"
    # A later item with the same text that never reached the portal: the only
    # "same" above the watermark is the job's own, so the item is absent.
    second = entries([NewResult(1, "same")], start=1)
    found = await delivery.reconciler.reconcile(second, watermark=0)
    assert found.settled == []
    assert found.absent == second


async def test_a_refused_command_fails_alone_and_the_executed_prefix_is_kept() -> None:
    port, claims = FakePort(), Claims()
    with_history(port, claims, [1], "old")
    port.forbidden = {9}
    sent = entries([NewResult(1, "a"), NewResult(1, "b"), NewResult(9, "bad"), NewResult(1, "c")])
    outcomes = sorted(await Delivery(port, claims).batch(sent), key=lambda o: o.index)
    assert [o.status for o in outcomes] == ["created", "created", "failed", "created"]
    assert isinstance(outcomes[2].error, NotFoundError)
    assert Counter(r.text for r in port.tasks[1]) == {"old": 1, "a": 1, "b": 1, "c": 1}
    assert port.tasks[9] == []


async def test_a_lost_single_answer_is_settled_by_its_task_not_a_second_send() -> None:
    port, claims = FakePort(), Claims()
    with_history(port, claims, [1], "old")
    # The scheduler already replayed the key and gave up: the job looks at the
    # task instead of multiplying the scheduler's retries.
    port.lose_adds = 1
    (sent,) = entries([NewResult(1, "Done")])
    (outcome,) = await Delivery(port, claims).single(sent)
    assert outcome.status == "created"
    assert [r.text for r in port.tasks[1]] == ["old", "Done"]
    assert port.requests == {"add": 1, "list batch": 1}


async def test_a_single_lost_without_a_watermark_stops_after_one_send() -> None:
    # A silent first item: each send is the scheduler's whole retry policy, so the
    # job sends it once (not 3 x 3 times) and stops: nothing else can settle it.
    port, claims = FakePort(), Claims()
    port.lose_adds = 100
    (sent,) = entries([NewResult(1, "Done")])
    with pytest.raises(OutcomeUnknownError):
        await Delivery(port, claims).single(sent)
    assert port.requests == {"add": 1}


async def test_a_single_lost_every_round_is_settled_by_looking_at_its_task() -> None:
    port, claims = FakePort(), Claims()
    with_history(port, claims, [1], "Done")
    port.lose_adds = 100
    (sent,) = entries([NewResult(1, "Done")])
    (outcome,) = await Delivery(port, claims).single(sent)
    # The first round created it; reconciliation finds it above the watermark.
    assert outcome.status == "created"
    assert outcome.result is not None
    assert outcome.result.id == 2
    assert len(port.tasks[1]) == 2
