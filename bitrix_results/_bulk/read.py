"""Reading many tasks' results through batches of list calls.

Used by :func:`results_of_many` and by reconciliations, which read the tasks of
a lost batch above its watermark.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from .. import _validate as check
from .._paging import PageRule, page_query
from .._transport import Call, RetryClass
from .._transport.codec import decode_result
from .._transport.types import Api
from ..errors import AuthError, OAuthError, PortalError, ServiceBlockedError, portal_error
from ..models import ItemsBody, LegacyTaskResult, TaskResult
from .port import BulkPort
from .streams import aiter_any, drain, send, unwrap
from .types import LIST, MAX_BATCH, ResultsOfTask

__all__ = ["InFlight", "read_v2", "read_v3", "results_of_many", "stops_job"]


def stops_job(error: BaseException) -> bool:
    """Whether ``error`` is the whole job's: no item or task can succeed while it holds.

    Credentials the portal refuses (wrong, revoked, lacking a scope: the
    scheduler already refreshed an expired token, so any auth error reaching
    bulk is one no refresh fixes), a token endpoint that refuses to refresh,
    and a portal that blocked REST for the account.
    """
    return isinstance(error, AuthError | OAuthError | ServiceBlockedError)


class _V2Error(msgspec.Struct):
    error: str = ""
    error_description: str = ""


class _V2Batch(msgspec.Struct):
    result: dict[str, msgspec.Raw] | list[msgspec.Raw] = msgspec.field(default_factory=dict)
    result_error: dict[str, _V2Error] | list[_V2Error] = msgspec.field(default_factory=dict)


def results_of_many(
    client: BulkPort,
    task_ids: Iterable[int] | AsyncIterable[int],
    *,
    api: Api = "v3",
    concurrency: int | None = None,
) -> AsyncIterator[ResultsOfTask]:
    """The results of many tasks, read through batches of list calls and streamed.

    Up to 50 tasks share one request (api-facts §3). REST 3.0 pages through each
    task by id; REST v2 returns each task's results whole. Tasks come back in the
    order they finish, one :class:`ResultsOfTask` per id given (a repeated id is
    read again); a task the portal refuses carries its ``error``.

    ``concurrency``: requests in flight. By default it follows the client's
    bucket and the round trip it measures (:class:`InFlight`): as many as the
    bucket admits at once, and never fewer than keep its drain busy.

    The arguments are checked here, when called, so a mistake (``task_ids=None``)
    is a TypeError naming the argument before anything is sent.
    """
    if isinstance(task_ids, str | bytes) or not isinstance(task_ids, Iterable | AsyncIterable):
        raise TypeError(f"task_ids: must be an iterable of task ids, got {type(task_ids).__name__}")
    check.choice("api", api, ("v2", "v3"))
    workers = check.positive_int("concurrency", concurrency) if concurrency is not None else None
    return _results_of_many(client, task_ids, api, workers)


# Groups in flight before the client's bucket is known (no request sent yet):
# a first wave; the scheduler admits them as its budget and bucket allow.
FIRST_WAVE = 16
# Never more groups in flight than this, whatever the bucket allows: beyond it
# the scheduler would only queue them, holding their results in memory.
MAX_IN_FLIGHT = 64
# While at the limit, how often to look at the bucket again (it drains with
# time, not only when a read finishes): seconds, bucket known / not yet known.
_POLL = 0.05
_POLL_UNKNOWN = 0.005


class InFlight:
    """How many groups a bulk read has in flight: the caller's number, or one
    derived from the client's bucket and the round trip it measures.

    The default keeps the bucket busy without queueing in the scheduler for
    nothing: as many requests as the bucket admits at once now (its capacity,
    the burst less the headroom, minus its level, plus the reads already in
    flight, which that level counts), and at least enough to keep its drain
    busy over one round trip (``drain x round trip + 1``), so a read is never
    bound by latency while the portal could take more (design §4).
    """

    def __init__(self, client: BulkPort, fixed: int | None = None) -> None:
        self._client = client
        self._fixed = fixed
        self.busy = 0
        self._round_trip: float | None = None
        self._known = False
        self._cond = anyio.Condition()

    def limit(self) -> int:
        if self._fixed is not None:
            return self._fixed
        bucket = self._client.statistics().bucket
        self._known = bucket is not None
        if bucket is None:
            return FIRST_WAVE
        free = math.floor(bucket.capacity - bucket.level) + self.busy
        keep_busy = 1
        if self._round_trip is not None:
            keep_busy = math.ceil(bucket.drain_per_second * self._round_trip) + 1
        return max(1, min(MAX_IN_FLIGHT, max(free, keep_busy)))

    async def admit(self) -> None:
        while self.busy >= self.limit():
            async with self._cond:
                with anyio.move_on_after(_POLL if self._known else _POLL_UNKNOWN):
                    await self._cond.wait()
        self.busy += 1

    async def done(self, seconds: float) -> None:
        """A group finished after ``seconds``: learn the round trip, free its place."""
        # A moving average: one slow answer does not swing the limit.
        rtt = self._round_trip
        self._round_trip = seconds if rtt is None else 0.8 * rtt + 0.2 * seconds
        self.busy -= 1
        async with self._cond:
            self._cond.notify_all()


async def _results_of_many(
    client: BulkPort,
    task_ids: Iterable[int] | AsyncIterable[int],
    api: Api,
    concurrency: int | None,
) -> AsyncIterator[ResultsOfTask]:
    rule = PageRule()

    async def read(group: list[int]) -> list[ResultsOfTask]:
        if api == "v3":
            return await read_v3(client, group, rule=rule)
        return await read_v2(client, group)

    async def run(out: MemoryObjectSendStream[ResultsOfTask]) -> None:
        in_flight = InFlight(client, concurrency)

        async def work(group: list[int]) -> None:
            started = anyio.current_time()
            try:
                results = await read(group)
            finally:
                with anyio.CancelScope(shield=True):
                    await in_flight.done(anyio.current_time() - started)
            for done in results:
                await send(out, done)

        try:
            async with out, anyio.create_task_group() as tg:

                async def start(group: list[int]) -> None:
                    await in_flight.admit()
                    tg.start_soon(work, group)

                group: list[int] = []
                async for raw in aiter_any(task_ids):
                    task_id = check.positive_int("task_id", raw)
                    if len(group) == MAX_BATCH or task_id in group:
                        # A repeated id goes to the next request, so each
                        # occurrence gets its own answer.
                        await start(group)
                        group = []
                    group.append(task_id)
                if group:
                    await start(group)
        except BaseExceptionGroup as eg:
            raise unwrap(eg) from None

    async with contextlib.aclosing(drain(run, MAX_BATCH * 2)) as results:
        async for done in results:
            yield done


async def read_one(client: BulkPort, task_id: int, api: Api, *, after: int = 0) -> ResultsOfTask:
    """One task read on its own; a refusal becomes the task's ``error``."""
    try:
        if api == "v2":
            return ResultsOfTask(task_id, await client.list_legacy(task_id))
        results = [r async for r in client.iter_results(task_id, after_id=after)]
        return ResultsOfTask(task_id, results)
    except PortalError as exc:
        return ResultsOfTask(task_id, [], error=exc)


async def read_v3(
    client: BulkPort, group: list[int], *, rule: PageRule, after: int = 0
) -> list[ResultsOfTask]:
    """Read a group of tasks (results with ids above ``after``) with REST 3.0 batches.

    One task the portal refuses fails the whole batch (api-facts §3.2): the
    group is then split in halves, recursively, so a refused task costs
    O(log n) extra requests and is read alone to get its own error.
    """
    collected: dict[int, list[TaskResult]] = {t: [] for t in group}
    after_ids: dict[int, int] = dict.fromkeys(group, after)
    return await _read_open(client, list(group), after_ids, collected, rule)


async def _read_open(
    client: BulkPort,
    open_tasks: list[int],
    after_ids: dict[int, int],
    collected: dict[int, list[TaskResult]],
    rule: PageRule,
) -> list[ResultsOfTask]:
    """Page ``open_tasks`` on from ``after_ids`` to their end, adding to ``collected``."""
    done: list[ResultsOfTask] = []
    size = client.page_size
    while open_tasks:
        commands = [
            {"method": LIST, "query": page_query(t, after_ids[t], size)} for t in open_tasks
        ]
        call = Call(
            method="batch",
            api="v3",
            params=commands,
            retry_class=RetryClass.READ,
            budget=(("batch", 1), (LIST, len(commands))),
        )
        try:
            reply = await client.execute(call)
            pages = decode_result(reply.result, list[ItemsBody], method="batch")
        except PortalError as exc:
            if stops_job(exc):
                # Refused for every task alike: splitting would only repeat it.
                return done + [ResultsOfTask(t, [], error=exc) for t in open_tasks]
            # One task the portal refuses fails the whole REST 3.0 batch
            # (api-facts §3.2): read the halves apart to isolate it.
            pages = None
        if (pages is None or len(pages) != len(open_tasks)) and len(open_tasks) == 1:
            # Alone, a plain list call: a refusal is this task's own error.
            (task_id,) = open_tasks
            single = await read_one(client, task_id, "v3", after=after_ids[task_id])
            if single.error is None:
                single = ResultsOfTask(task_id, [*collected.pop(task_id), *single.results])
            done.append(single)
            return done
        if pages is None or len(pages) != len(open_tasks):
            half = (len(open_tasks) + 1) // 2
            for part in (open_tasks[:half], open_tasks[half:]):
                done += await _read_open(client, part, after_ids, collected, rule)
            return done
        still_open: list[int] = []
        for task_id, page in zip(open_tasks, pages, strict=True):
            fresh = [r for r in page.items if r.id > after_ids[task_id]]
            collected[task_id] += fresh
            if fresh and rule.more(len(page.items), size):
                after_ids[task_id] = max(r.id for r in fresh)
                still_open.append(task_id)
            else:
                done.append(ResultsOfTask(task_id, collected.pop(task_id)))
        open_tasks = still_open
    return done


async def read_v2(client: BulkPort, group: list[int]) -> list[ResultsOfTask]:
    """Read a group of tasks with one REST v2 batch (per-command errors, api-facts §3.1)."""
    cmd = {f"t{t}": f"{LIST}?taskId={t}" for t in group}
    call = Call(
        method="batch", api="v2", params={"cmd": cmd, "halt": 0}, retry_class=RetryClass.READ
    )
    reply = await client.execute(call)
    body = decode_result(reply.result, _V2Batch, method="batch", strict=False)
    results = body.result if isinstance(body.result, dict) else {}
    errors = body.result_error if isinstance(body.result_error, dict) else {}
    done: list[ResultsOfTask] = []
    for task_id in group:
        key = f"t{task_id}"
        if key in results:
            items = decode_result(results[key], list[LegacyTaskResult], method=LIST, strict=False)
            done.append(ResultsOfTask(task_id, items))
        elif key in errors:
            err = errors[key]
            error = portal_error(
                code=err.error, message=err.error_description, status=400, method=LIST
            )
            done.append(ResultsOfTask(task_id, [], error=error))
        else:
            done.append(await read_one(client, task_id, "v2"))
    return done
