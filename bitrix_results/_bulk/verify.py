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

What it cannot tell apart: a result with the same text by the same user
created on the same task during the job by another process (another import on
the same webhook) looks exactly like a double and is deleted; nothing on the
portal says which process wrote it. Such setups turn the pass off. A
call the portal runs later than its request cut-off (api-facts §1), after the
pass, is not seen; nor is a double on a task this run did not send to (an
item an earlier run of the journal created).
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

import anyio

from .._paging import PageRule
from .._transport import Call, RetryClass
from ..errors import (
    AccessDeniedError,
    BitrixError,
    DecodeError,
    NotFoundError,
    OutcomeUnknownError,
    PortalError,
    RequestTimeoutError,
)
from ..models import LegacyTaskResult, TaskResult
from .claims import Claims
from .port import BulkPort
from .read import read_v3
from .types import MAX_BATCH, Outcome

if TYPE_CHECKING:
    from .._scheduler.stats import SchedulerStatistics
    from .._transport.types import Reply

DELETE = "tasks.task.result.delete"

__all__ = ["DELETE", "SETTLE_SECONDS", "Ambiguity", "Reported", "delete_all", "verify"]


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


# A call the portal runs late still ends within its request cut-off (api-facts
# §1: 60 s in the cloud): that long after a timeout, whatever the timed-out
# call did is visible.
SETTLE_SECONDS = 60.0
# Scheduler retry reasons after which the first attempt may have run: the only
# ones that can leave a double behind ("timeout": it may even still be running).
_AMBIGUOUS = ("timeout", "connection_lost", "server_error", "decode_error")
# How often the job looks at the scheduler's retry counters (they are a snapshot).
_SAMPLE_EVERY = 0.25


class Ambiguity:
    """Whether, and when, the job saw a call whose outcome was unknown.

    Two sources: the delivery's own lost answers, seen through :meth:`watch`,
    and the scheduler's retries after a timeout or a lost connection, which the
    delivery never sees (the retry succeeded). The latter are noticed by
    sampling the client's counters as outcomes are emitted, so a time kept is
    at or after the real one: waiting from it is never too short.
    """

    def __init__(self, port: BulkPort) -> None:
        self.port = port
        self.ambiguous = False
        self.timed_out_at: float | None = None
        self._counts = self._read()
        self._sampled = anyio.current_time()

    def watch(self, port: BulkPort) -> BulkPort:
        """``port``, noting every write whose outcome it leaves unknown."""
        return _Watched(port, self)

    def unknown(self, error: BaseException) -> None:
        """Note a write whose outcome is unknown, and when, if it timed out."""
        self.ambiguous = True
        cause = error.cause if isinstance(error, OutcomeUnknownError) else error
        if isinstance(cause, RequestTimeoutError):
            self.timed_out_at = anyio.current_time()

    def _read(self) -> tuple[int, int]:
        retries = self.port.statistics().retries
        return retries.get("timeout", 0), sum(retries.get(r, 0) for r in _AMBIGUOUS)

    def sample(self, *, force: bool = False) -> None:
        now = anyio.current_time()
        if not force and now - self._sampled < _SAMPLE_EVERY:
            return
        self._sampled = now
        counts = self._read()
        if counts[1] != self._counts[1]:
            self.ambiguous = True
        if counts[0] != self._counts[0]:
            self.timed_out_at = now
        self._counts = counts

    def settle_until(self) -> float | None:
        """None when no outcome was ever unknown, else the time the pass may read at."""
        self.sample(force=True)
        if not self.ambiguous:
            return None
        if self.timed_out_at is None:
            return anyio.current_time()
        return self.timed_out_at + SETTLE_SECONDS


class _Watched:
    """A :class:`BulkPort` that tells an :class:`Ambiguity` of unknown write outcomes."""

    def __init__(self, port: BulkPort, ambiguity: Ambiguity) -> None:
        self._port = port
        self._ambiguity = ambiguity

    @property
    def page_size(self) -> int:
        return self._port.page_size

    @property
    def binding(self) -> tuple[str, str]:
        return self._port.binding

    async def add(
        self, task_id: int, text: str, *, idempotency_key: str | None = None
    ) -> TaskResult:
        try:
            return await self._port.add(task_id, text, idempotency_key=idempotency_key)
        except (OutcomeUnknownError, DecodeError) as exc:
            self._ambiguity.unknown(exc)
            raise

    async def delete(self, result_id: int) -> None:
        await self._port.delete(result_id)

    async def execute(self, call: Call) -> Reply:
        try:
            return await self._port.execute(call)
        except PortalError:
            # The portal answered: the batch ran (in part) or not, but not late.
            raise
        except BitrixError as exc:
            if call.retry_class is RetryClass.UNKEYED_WRITE:
                # A batch of adds whose answer was lost: it may still run.
                self._ambiguity.unknown(exc)
            raise

    def iter_results(self, task_id: int, *, after_id: int = 0) -> AsyncIterator[TaskResult]:
        return self._port.iter_results(task_id, after_id=after_id)

    async def list_legacy(self, task_id: int) -> builtins.list[LegacyTaskResult]:
        return await self._port.list_legacy(task_id)

    def statistics(self) -> SchedulerStatistics:
        return self._port.statistics()


async def verify(
    port: BulkPort,
    claims: Claims,
    reported: Reported,
    *,
    started: datetime,
    ambiguity: Ambiguity,
) -> int:
    """Delete the doubles of ours on the tasks the job touched; how many were deleted.

    Nothing is read when no call's outcome was ever unknown: every call then
    ran once, so no double can exist. After a timeout the pass first waits
    until :data:`SETTLE_SECONDS` have passed since the last one, so a call the
    portal is still running has ended. Read and delete failures end the pass
    early (it repairs what it can): the job's outcomes are settled and stay true.
    """
    touched = claims.touched or {}
    author_id = claims.author_id
    until = ambiguity.settle_until()
    if author_id is None or not touched or until is None:
        return 0
    await anyio.sleep(max(0.0, until - anyio.current_time()))
    rule = PageRule()
    # By floor, so the tasks read in one batch have floors close together: the
    # batch reads above the lowest of them, results at or below a task's own
    # floor are then skipped.
    tasks = sorted((t for t in touched if reported.texts.get(t)), key=lambda t: (touched[t], t))
    doomed: list[int] = []
    for start in range(0, len(tasks), MAX_BATCH):
        group = tasks[start : start + MAX_BATCH]
        try:
            read = await read_v3(port, group, rule=rule, after=touched[group[0]])
        except BitrixError:
            break
        for done in read:
            if done.error is None:
                doomed += [
                    r.id
                    for r in doubles(
                        done.task_id,
                        done.results,  # type: ignore[arg-type]
                        floor=touched[done.task_id],
                        reported=reported,
                        author_id=author_id,
                        started=started,
                    )
                ]
    return await delete_all(port, doomed)


async def delete_all(port: BulkPort, ids: list[int]) -> int:
    """Delete ``ids``, up to 50 per REST 3.0 batch; how many are gone after it.

    A batch the portal refuses (a result deleted meanwhile, or not ours to
    delete, fails the whole batch, api-facts §3.2) or whose answer is lost is
    done again one by one: deleting is idempotent in effect, a second delete of
    a result is only refused as not found.
    """
    repaired = 0
    for start in range(0, len(ids), MAX_BATCH):
        chunk = ids[start : start + MAX_BATCH]
        call = Call(
            method="batch",
            api="v3",
            params=[{"method": DELETE, "query": {"id": i}} for i in chunk],
            # Not re-sent blindly: a lost answer is settled one by one below.
            retry_class=RetryClass.UNKEYED_WRITE,
            budget=(("batch", 1), (DELETE, len(chunk))),
        )
        try:
            await port.execute(call)
        except BitrixError:
            pass
        else:
            repaired += len(chunk)
            continue
        for result_id in chunk:
            try:
                await port.delete(result_id)
            except NotFoundError:
                # Gone since it was read: deleted by the batch (a kept prefix, a
                # lost answer) or by someone else. The double is gone either way.
                repaired += 1
                continue
            except AccessDeniedError:
                continue
            except BitrixError:
                # The portal is failing now: the job's outcomes stand, stop here.
                return repaired
            repaired += 1
    return repaired
