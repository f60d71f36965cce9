"""The verification pass at the end of ``bulk_add``: find and delete our doubles.

Keys make a re-send a replay (api-facts §4.1), but two requests with the same
key *at the same time* may both run: when the portal executes a call after our
timeout, the retry runs too and the item exists twice. Nothing in the answers
shows it, so the job looks once it is done (design §2.3).

For each task the job touched it reads the results above the lowest watermark
any of its units was sent at (ids only grow, so nothing older is read), in
batches of list calls. A result is a double, and is deleted, when all hold:

- its text is the text of an item this job reported created on that task, and
  that item's reported result is another one (so one copy always stays);
- it is not a result the job reported (nor one an earlier run of the journal did);
- its author is the client's own user (known from our adds' answers; if the
  portal never said, nothing is deleted);
- it was created during the job: above the watermark, and, on a task first
  touched before the job had any watermark (its first item), with a
  ``createdAt`` no earlier than the job's start by the portal's clock.

What it cannot see: a result with the same text by the same user created
during the job by someone else (another process on the same webhook) looks
exactly like a double and is deleted, unless each item carries its own ``key``
(then the portal's replay keeps one copy and there is nothing to repair). A
double created after the pass (a call the portal runs later still) is not seen.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from .._paging import PageRule
from ..errors import AccessDeniedError, BitrixError, NotFoundError
from ..models import TaskResult
from .claims import Claims
from .port import BulkPort
from .read import read_v3
from .types import MAX_BATCH, Outcome

__all__ = ["Reported", "verify"]


class Reported:
    """What the job reported created, per task: ids and their texts."""

    __slots__ = ("ids", "texts")

    def __init__(self) -> None:
        self.ids: defaultdict[int, set[int]] = defaultdict(set)
        self.texts: defaultdict[int, set[str]] = defaultdict(set)

    def note(self, outcome: Outcome) -> None:
        if outcome.status == "created" and outcome.result is not None:
            task_id = outcome.item.task_id
            self.ids[task_id].add(outcome.result.id)
            self.texts[task_id].add(outcome.item.text)


def doubles(
    task_id: int,
    results: list[TaskResult],
    *,
    floor: int,
    reported: Reported,
    author_id: int,
    started: datetime,
) -> list[TaskResult]:
    """The results of ``task_id`` that are doubles of ours (see the module doc)."""
    ids, texts = reported.ids[task_id], reported.texts[task_id]
    found = []
    for r in results:
        if r.id <= floor or r.id in ids or r.text not in texts or r.author_id != author_id:
            continue
        if floor == 0 and (
            r.created_at is None or r.created_at.tzinfo is None or r.created_at < started
        ):
            # No watermark bounds this task: only the portal's clock can say the
            # result is not older than the job.
            continue
        found.append(r)
    return found


async def verify(
    port: BulkPort, claims: Claims, reported: Reported, *, started: datetime, retried: bool
) -> int:
    """Delete the doubles of ours on the tasks the job touched; how many were deleted.

    ``retried``: the client's scheduler re-sent a request during the job. The
    pass reads nothing when no request was re-sent and no answer was lost: every
    call then ran once, so no double can exist. Read and delete failures end the
    pass early (it repairs what it can): the job's own outcomes are settled
    already and stay true.
    """
    touched = claims.touched or {}
    author_id = claims.author_id
    if author_id is None or not touched or not (retried or claims.ambiguous):
        return 0
    rule = PageRule()
    tasks = sorted(t for t in touched if reported.texts.get(t))
    repaired = 0
    for start in range(0, len(tasks), MAX_BATCH):
        group = tasks[start : start + MAX_BATCH]
        try:
            read = await read_v3(port, group, rule=rule, floors=touched)
        except BitrixError:
            return repaired
        for done in read:
            if done.error is not None:
                continue
            found = doubles(
                done.task_id,
                done.results,  # type: ignore[arg-type]
                floor=touched[done.task_id],
                reported=reported,
                author_id=author_id,
                started=started,
            )
            for double in found:
                try:
                    await port.delete(double.id)
                except (NotFoundError, AccessDeniedError):
                    # Gone already (a replayed delete), or not ours to delete.
                    continue
                except BitrixError:
                    return repaired
                repaired += 1
    return repaired
