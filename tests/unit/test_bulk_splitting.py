"""Planning what a reconciled batch sends again: lost answers, refused commands, splits."""

from __future__ import annotations

from bitrix_results._bulk.claims import Entry, digest, key_for
from bitrix_results._bulk.reconcile import Reconciled
from bitrix_results._bulk.splitting import plan_resend
from bitrix_results._bulk.types import Outcome
from bitrix_results.errors import NotFoundError
from bitrix_results.models import NewResult


def entries(n: int, task_id: int = 1) -> list[Entry]:
    items = [NewResult(task_id, f"row {i}") for i in range(n)]
    return [Entry(i, item, key_for(item, "job", i), digest(item)) for i, item in enumerate(items)]


def found(absent: list[Entry], settled: list[Entry] | None = None) -> Reconciled:
    done = Reconciled()
    # Reconciliation lists absent rows task by task: out of the batch's order.
    done.absent = list(reversed(absent))
    done.settled = [Outcome(e.index, e.item, "created") for e in settled or []]
    return done


def test_a_lost_answer_sends_the_absent_rows_again_as_one_batch_in_order() -> None:
    sent = entries(6)
    plan = plan_resend(sent, found(sent[2:]), refused=False, last_round=False)
    assert plan.alone == []
    assert plan.groups == [sent[2:]]
    assert len(plan) == 4


def test_after_the_last_lost_round_the_absent_rows_go_alone() -> None:
    sent = entries(4)
    plan = plan_resend(sent, found(sent[1:]), refused=False, last_round=True)
    assert plan.alone == sent[1:]
    assert plan.groups == []


def test_a_refused_batch_with_nothing_kept_is_halved() -> None:
    sent = entries(5)
    plan = plan_resend(sent, found(sent), refused=True, last_round=False)
    assert plan.alone == []
    assert plan.groups == [sent[:3], sent[3:]]
    assert len(plan) == 5


def test_a_refused_batch_that_kept_a_prefix_sends_the_first_absent_row_alone() -> None:
    sent = entries(5)
    plan = plan_resend(sent, found(sent[2:], settled=sent[:2]), refused=True, last_round=False)
    # The refused command is the first row not found; the rest stay batched.
    assert plan.alone == [sent[2]]
    assert plan.groups == [sent[3:]]


def test_groups_of_one_go_alone_and_empty_groups_vanish() -> None:
    sent = entries(3)
    plan = plan_resend(sent, found(sent[:1]), refused=True, last_round=False)
    assert plan.alone == [sent[0]]
    assert plan.groups == []
    assert len(plan_resend(sent, found([]), refused=False, last_round=False)) == 0


def test_rows_on_an_unreadable_task_go_alone_for_their_own_error() -> None:
    sent = entries(2) + entries(2, task_id=9)
    done = found(sent[:2])
    done.unreadable = [
        (e, NotFoundError("no task", code="ERROR_NOT_FOUND", status=404)) for e in sent[2:]
    ]
    plan = plan_resend(sent, done, refused=False, last_round=False)
    assert plan.alone == sent[2:]
    assert plan.groups == [sent[:2]]
