"""Bulk import and bulk read: many results at the portal's bound, every outcome exact.

``bulk_add`` / ``bulk_add_stream`` add any number of results with one
:class:`Outcome` per input item: ``created`` (with the result) or ``failed``
(with a typed error and the guarantee that nothing was created).

How "nothing lost, nothing doubled" holds (SPEC §2.3, §2.4):

- **Single mode** sends each item as its own ``tasks.task.result.add`` with an
  Idempotency-Key derived from the item (its ``key``, or the job id and its
  position). A retry, or a resumed run, carries the same key, so the portal
  replays the stored answer instead of creating the result again (facts §4.1).
- **Batch mode** sends up to 50 adds in one REST 3.0 batch (one request for the
  bucket, facts §3.2). No key protects the commands inside a batch, and a failed
  batch may have rolled back or left earlier commands executed (SPEC §3). So when
  a batch fails or its answer is lost, the job *reconciles*: it freezes the
  batch's tasks (no other request of the job touches them), lists their results
  newer than the batch's watermark (the largest result id the job had seen
  before sending it; result ids only grow, so anything the batch created is
  above it), matches them by text against the batch's items, skipping results
  the job already owns, and re-sends the unmatched items singly with their keys.
  The first item of a batch-mode job goes alone, so every batch has a watermark.
- A ``journal`` (SQLite) records each item as pending before it is sent and as
  created after; a killed run resumes from it with the same job id (so the same
  keys), reconciling batches that were in flight when it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _validate as check
from ._journal import Journal
from ._transport import Call, RetryClass
from ._transport.codec import decode_result, encode
from .errors import (
    BitrixError,
    BulkAbortedError,
    DecodeError,
    InvalidInputError,
    OutcomeUnknownError,
    PortalError,
    portal_error,
)
from .models import ItemBody, ItemsBody, LegacyTaskResult, NewResult, TaskResult

if TYPE_CHECKING:
    from ._scheduler import SchedulerStatistics
    from ._transport.types import Api
    from .client import ResultsClient

__all__ = [
    "BulkReport",
    "Outcome",
    "Progress",
    "ProgressCallback",
    "TaskResults",
    "bulk_add",
    "bulk_add_stream",
    "results_of_many",
]

ADD = "tasks.task.result.add"
LIST = "tasks.task.result.list"
# At most 50 commands in one batch (facts §3.1; the REST 3.0 limit per b24jssdk, §3.2).
MAX_BATCH = 50
# Rounds of re-sending one keyed item whose outcome stayed unknown after the
# scheduler's own retries, before the job looks at the task to settle it.
_UNKNOWN_ROUNDS = 3
# Claimed result ids are kept only while a reconciliation might need them; the set
# is pruned when it grows past this many entries (bounded memory on long streams).
_PRUNE_AT = 20_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one input item.

    ``status == "created"``: ``result`` is the new result. ``status == "failed"``:
    ``error`` says why, and nothing was created for this item.
    """

    index: int
    item: NewResult
    status: Literal["created", "failed"]
    result: TaskResult | None = None
    error: BitrixError | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Passed to ``on_progress`` as items settle. ``total`` is None for unsized inputs."""

    done: int
    created: int
    failed: int
    total: int | None
    elapsed: float

    @property
    def rate(self) -> float:
        """Items settled per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[Progress], Awaitable[None] | None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BulkReport:
    """The result of :func:`bulk_add`: one outcome per item, in input order."""

    outcomes: list[Outcome]
    created: int
    failed: int
    elapsed: float
    mode: Literal["batch", "single"]
    #: The client's scheduler at the end of the job (its counters span the client's life).
    statistics: SchedulerStatistics
    job_id: str
    #: This job's share of the counters: HTTP requests sent (retries included), 503
    #: and 429 answers seen, retries by reason, seconds spent waiting for the limits.
    requests: int = 0
    rate_limit_hits: int = 0
    operating_limit_hits: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    wait_seconds: float = 0.0

    def failures_by_reason(self) -> dict[str, int]:
        """Failed items counted by error class name (``InvalidInputError``, ...)."""
        reasons = Counter(type(o.error).__name__ for o in self.outcomes if o.status == "failed")
        return dict(reasons.most_common())

    @property
    def rate(self) -> float:
        return len(self.outcomes) / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TaskResults:
    """The results of one task from :func:`results_of_many`, or why they could not be read."""

    task_id: int
    results: list[TaskResult] | list[LegacyTaskResult]
    error: BitrixError | None = None


@dataclass(slots=True, eq=False)
class _Entry:
    index: int
    item: NewResult
    key: str
    digest: str


@dataclass(slots=True, eq=False)
class _Unit:
    entries: list[_Entry]
    kind: Literal["single", "batch", "reconcile"]
    # For "reconcile" units (resumed from a journal): the watermark of the batch
    # that was in flight when the previous run died.
    watermark: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)


def _digest(item: NewResult) -> str:
    """The journal's fingerprint of an item: a resumed run must feed the same items."""
    raw = f"{item.task_id}\x00{item.key or ''}\x00{item.text}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


async def _aiter(items: Iterable[object] | AsyncIterable[object]) -> AsyncIterator[object]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class _TaskGate:
    """Per-task admission: units touching a task vs. a reconciliation freezing it.

    A reconciliation must see a task with none of the job's requests in flight on
    it, or a result still on its way back could be claimed twice.
    """

    def __init__(self) -> None:
        self._busy: Counter[int] = Counter()
        self._frozen: set[int] = set()
        self._cond = anyio.Condition()

    @asynccontextmanager
    async def use(self, tasks: set[int]) -> AsyncIterator[None]:
        async with self._cond:
            while not self._frozen.isdisjoint(tasks):
                await self._cond.wait()
            self._busy.update(tasks)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._busy.subtract(tasks)
                    self._cond.notify_all()

    @asynccontextmanager
    async def frozen(self, tasks: set[int]) -> AsyncIterator[None]:
        async with self._cond:
            self._frozen |= tasks
            while any(self._busy[t] > 0 for t in tasks):
                await self._cond.wait()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._frozen -= tasks
                    self._cond.notify_all()


class _Job:
    def __init__(
        self,
        client: ResultsClient,
        *,
        batch: bool,
        concurrency: int | None,
        journal: str | None,
        on_progress: ProgressCallback | None,
        job_id: str | None,
        total: int | None,
    ) -> None:
        self.client = client
        self.batch = batch
        if concurrency is not None:
            check.positive_int("concurrency", concurrency)
        self.concurrency = concurrency or (8 if batch else 16)
        self.journal = Journal(journal, job_id) if journal is not None else None
        if self.journal is not None:
            self.job_id = self.journal.job_id
        else:
            self.job_id = check.key("job_id", job_id) if job_id is not None else uuid.uuid4().hex
        self.on_progress = on_progress
        self.total = total
        self.started = time.monotonic()
        self.created = 0
        self.failed = 0
        # The largest result id seen in an answer: every result created later has a
        # larger id, which is what lets a reconciliation ignore older results.
        self.watermark = self.journal.max_result_id() if self.journal is not None else 0
        self.claimed: set[int] = set()
        self.unit_watermarks: Counter[int] = Counter()
        self.gate = _TaskGate()
        self.reconcile_lock = anyio.Lock()
        self.fatal: BaseException | None = None

    # -- the pipeline --------------------------------------------------------------

    async def run(
        self, items: Iterable[object] | AsyncIterable[object], out: MemoryObjectSendStream[Outcome]
    ) -> None:
        """Feed ``items`` to the workers and send every outcome to ``out``.

        A programmer error (an input that is not an item, a journal of another
        input, an exception in ``on_progress``) stops the feeding; the work in
        flight still settles and is reported, then the error is raised.
        """
        units_send, units_recv = anyio.create_memory_object_stream[_Unit](self.concurrency)
        try:
            # The workers share one receiving end and ``out``; their owner closes
            # them, so a worker cancelled before it ever ran leaves nothing open.
            with units_recv:
                async with out, anyio.create_task_group() as tg:
                    for _ in range(self.concurrency):
                        tg.start_soon(self._worker, units_recv, out)
                    await self._feed(items, units_send, out)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            if self.journal is not None:
                self.journal.close()
        if self.fatal is not None:
            raise self.fatal

    async def _feed(
        self,
        items: Iterable[object] | AsyncIterable[object],
        units: MemoryObjectSendStream[_Unit],
        out: MemoryObjectSendStream[Outcome],
    ) -> None:
        async with units:
            pending: list[_Entry] = []
            # Items of one interrupted batch (same watermark) are reconciled together.
            resumed: _Unit | None = None
            index = -1
            async for raw in _aiter(items):
                if self.fatal is not None:
                    break
                index += 1
                entry = self._entry(index, raw)
                if entry is None:
                    # A programmer error (not an item at all): stop feeding, let the
                    # work in flight settle, then raise it.
                    break
                if isinstance(entry, Outcome):
                    await self._emit([entry], out)
                    continue
                unit = self._resume(entry)
                if unit is None and self.fatal is not None:
                    break
                if isinstance(unit, _Unit) and unit.kind == "reconcile":
                    if (
                        resumed is not None
                        and resumed.watermark == unit.watermark
                        and len(resumed.entries) < MAX_BATCH
                    ):
                        resumed.entries += unit.entries
                        continue
                    if resumed is not None:
                        await units.send(resumed)
                    resumed = unit
                elif isinstance(unit, Outcome):
                    await self._emit([unit], out)
                elif unit is not None:
                    await units.send(unit)
                elif self.watermark == 0:
                    # Until one answer gave us a watermark, items go one at a
                    # time: an item sent without one could not be told apart from
                    # older results of its task if its answer were lost.
                    probe = _Unit([entry], "single")
                    await units.send(probe)
                    await probe.done.wait()
                elif not self.batch:
                    await units.send(_Unit([entry], "single"))
                else:
                    pending.append(entry)
                    if len(pending) == MAX_BATCH:
                        await units.send(_Unit(pending, "batch"))
                        pending = []
            if resumed is not None:
                await units.send(resumed)
            if pending:
                await units.send(_Unit(pending, "batch"))

    def _entry(self, index: int, raw: object) -> _Entry | Outcome | None:
        try:
            item = check.new_result(raw)
        except InvalidInputError as exc:
            if exc.field == "item":
                self.fatal = TypeError(f"items[{index}]: {exc.message}")
                return None
            # A NewResult or a pair of the wrong types: keep it as given.
            item = raw if isinstance(raw, NewResult) else NewResult(*raw)  # type: ignore[misc]
            return Outcome(index, item, "failed", error=exc)
        if item.key is not None:
            key = "br-k-" + hashlib.sha256(item.key.encode()).hexdigest()[:40]
        else:
            key = f"br-{self.job_id}-{index}"
        return _Entry(index, item, key, _digest(item))

    def _resume(self, entry: _Entry) -> _Unit | Outcome | None:
        """What the journal says about an item: settled, to reconcile, or nothing."""
        if self.journal is None:
            return None
        row = self.journal.lookup(entry.index)
        if row is None:
            return None
        if row.text_digest != entry.digest:
            self.fatal = ValueError(
                f"journal: item {entry.index} differs from the one journaled; "
                "resume with the same input file"
            )
            return None
        if row.status == "created" and row.result is not None:
            result = decode_result(msgspec.Raw(row.result), TaskResult, method=ADD)
            self.claimed.add(result.id)
            return Outcome(entry.index, entry.item, "created", result=result)
        if row.batched:
            return _Unit([entry], "reconcile", watermark=row.watermark)
        # A pending single: sending it again with the same key is a replay.
        return _Unit([entry], "single")

    async def _worker(
        self, units: MemoryObjectReceiveStream[_Unit], out: MemoryObjectSendStream[Outcome]
    ) -> None:
        async for unit in units:
            try:
                if unit.kind == "batch":
                    settled = await self._run_batch(unit.entries)
                elif unit.kind == "single":
                    settled = await self._run_single(unit.entries[0])
                else:
                    with self._holding(unit.watermark):
                        settled = await self._after_batch(
                            unit.entries, unit.watermark, refused=False, attempt=0
                        )
            finally:
                unit.done.set()
            await self._emit(settled, out)

    async def _emit(self, settled: list[Outcome], out: MemoryObjectSendStream[Outcome]) -> None:
        for outcome in settled:
            if outcome.status == "created":
                self.created += 1
            else:
                self.failed += 1
            await out.send(outcome)
        if self.on_progress is not None and settled and self.fatal is None:
            try:
                report = self.on_progress(self.progress())
                if report is not None:
                    await report
            except Exception as exc:
                # The caller's callback broke: stop feeding, settle what is in
                # flight (its outcomes are still reported), then raise it.
                self.fatal = exc

    def progress(self) -> Progress:
        done = self.created + self.failed
        return Progress(
            done, self.created, self.failed, self.total, time.monotonic() - self.started
        )

    # -- settling ------------------------------------------------------------------

    def _created(self, entries: list[tuple[_Entry, TaskResult]]) -> list[Outcome]:
        for _, result in entries:
            self.claimed.add(result.id)
            self.watermark = max(self.watermark, result.id)
        if self.journal is not None:
            self.journal.mark_created(
                [(e.index, e.item.task_id, e.digest, r.id, encode(r)) for e, r in entries]
            )
        self._prune()
        return [Outcome(e.index, e.item, "created", result=r) for e, r in entries]

    def _failed(self, entries: list[tuple[_Entry, BitrixError]]) -> list[Outcome]:
        if self.journal is not None:
            self.journal.forget([e.index for e, _ in entries])
        return [Outcome(e.index, e.item, "failed", error=err) for e, err in entries]

    def _prune(self) -> None:
        """Forget claimed ids no reconciliation can need: those at or below the
        lowest watermark of any unit still in flight."""
        if len(self.claimed) < _PRUNE_AT:
            return
        floor = min(self.unit_watermarks, default=self.watermark)
        self.claimed = {i for i in self.claimed if i > floor}

    @contextmanager
    def _holding(self, mark: int) -> Iterator[None]:
        """Keep the claimed ids above ``mark`` while a unit sent at it may still
        reconcile: until the unit is settled, not only while it is on the wire."""
        self.unit_watermarks[mark] += 1
        try:
            yield
        finally:
            self.unit_watermarks[mark] -= 1
            if not self.unit_watermarks[mark]:
                del self.unit_watermarks[mark]

    async def _run_single(self, entry: _Entry) -> list[Outcome]:
        tasks = {entry.item.task_id}
        lost: BitrixError = OutcomeUnknownError(ADD, RuntimeError("not sent"))
        with ExitStack() as hold:
            mark = 0
            for round_ in range(_UNKNOWN_ROUNDS):
                async with self.gate.use(tasks):
                    if round_ == 0:
                        mark = self.watermark
                        hold.enter_context(self._holding(mark))
                        if self.journal is not None:
                            rows = [(entry.index, entry.item.task_id, entry.digest)]
                            self.journal.mark_pending(rows, batched=False, watermark=mark)
                    sent = await self._send_single(entry, maybe_sent=round_ > 0)
                if isinstance(sent, list):
                    return sent
                lost = sent
                if mark == 0:
                    # No watermark yet: a lost answer can only be settled by its
                    # key's replay, never by matching text against older results.
                    continue
                # Look at the task (frozen: nothing of ours in flight there).
                settled, absent, unreadable = await self._reconcile([entry], mark)
                if unreadable:
                    # The portal will not list the task: it holds nothing of ours.
                    return self._failed(unreadable)
                if not absent:
                    return settled
            if mark == 0:
                # Nothing can settle it: stop the job (a journal keeps it pending).
                if isinstance(lost, OutcomeUnknownError):
                    raise lost
                raise OutcomeUnknownError(ADD, lost)
            # Seen absent with its task frozen after every attempt was lost: a
            # failure, and nothing exists for it.
            return self._failed([(entry, lost)])

    async def _send_single(
        self, entry: _Entry, *, maybe_sent: bool = False
    ) -> list[Outcome] | BitrixError:
        """Send one keyed add, replaying it while its outcome is unknown.

        ``maybe_sent``: an earlier attempt may have executed it. Returns the last
        error when the outcome is still unknown after every round."""
        unknown: BitrixError | None = (
            OutcomeUnknownError(ADD, RuntimeError("an earlier attempt was lost"))
            if maybe_sent
            else None
        )
        for _ in range(_UNKNOWN_ROUNDS):
            try:
                result = await self.client.add(
                    entry.item.task_id, entry.item.text, idempotency_key=entry.key
                )
            except (OutcomeUnknownError, DecodeError) as exc:
                unknown = exc
                continue
            except BitrixError as exc:
                if unknown is not None:
                    # An earlier round may have executed it: a refusal now does
                    # not prove that nothing exists.
                    unknown = exc
                    continue
                # The portal refused it (or it never left): nothing was created.
                return self._failed([(entry, exc)])
            return self._created([(entry, result)])
        assert unknown is not None
        return unknown

    async def _run_batch(self, entries: list[_Entry], attempt: int = 0) -> list[Outcome]:
        tasks = {e.item.task_id for e in entries}
        commands = [
            {"method": ADD, "query": {"fields": {"taskId": e.item.task_id, "text": e.item.text}}}
            for e in entries
        ]
        call = Call(
            method="batch",
            api="v3",
            params=commands,
            # No key protects the commands inside a batch (SPEC §2.4): a lost
            # answer is settled by reconciliation, never by a blind re-send.
            retry=RetryClass.UNKEYED_WRITE,
            budget=(("batch", 1), (ADD, len(entries))),
        )
        refused = False
        with ExitStack() as hold:
            async with self.gate.use(tasks):
                mark = self.watermark
                # Held until the batch is settled, reconciliation included.
                hold.enter_context(self._holding(mark))
                if self.journal is not None:
                    rows = [(e.index, e.item.task_id, e.digest) for e in entries]
                    self.journal.mark_pending(rows, batched=True, watermark=mark)
                try:
                    reply = await self.client._execute(call)
                    bodies = decode_result(reply.result, list[ItemBody], method="batch")
                except PortalError:
                    # A command was refused; the batch rolled back or kept a prefix.
                    bodies, refused = None, True
                except BitrixError:
                    # The answer was lost (or unreadable): any prefix may have run.
                    bodies = None
                if bodies is not None and len(bodies) == len(entries):
                    pairs = zip(entries, bodies, strict=True)
                    return self._created([(e, b.item) for e, b in pairs])
            return await self._after_batch(entries, mark, refused=refused, attempt=attempt)

    async def _after_batch(
        self, entries: list[_Entry], watermark: int, *, refused: bool, attempt: int
    ) -> list[Outcome]:
        """Settle a batch whose outcome is not known item by item.

        What exists is claimed; the rest is sent again. When the portal refused a
        command, the rest go one by one so the bad item fails alone with its own
        error; when only the answer was lost, they go as a batch again.
        """
        settled, absent, unreadable = await self._reconcile(entries, watermark)
        # Sent alone, an item on a task the portal will not list gets its own error.
        alone = [entry for entry, _ in unreadable]
        if refused or attempt + 1 >= _UNKNOWN_ROUNDS or len(absent) == 1:
            alone, absent = alone + absent, []
        async with anyio.create_task_group() as tg:

            async def single(entry: _Entry) -> None:
                settled.extend(await self._run_single(entry))

            async def batch(group: list[_Entry]) -> None:
                settled.extend(await self._run_batch(group, attempt + 1))

            for entry in alone:
                tg.start_soon(single, entry)
            if absent:
                tg.start_soon(batch, absent)
        return settled

    async def _reconcile(
        self, entries: list[_Entry], watermark: int
    ) -> tuple[list[Outcome], list[_Entry], list[tuple[_Entry, BitrixError]]]:
        """Find which of ``entries`` exist on the portal, with their tasks frozen.

        Returns the outcomes of those that exist, those that do not, and those
        whose task the portal would not list, with its error (an add to such a
        task would be refused too, so nothing of theirs exists).
        """
        tasks = sorted({e.item.task_id for e in entries})
        settled: list[Outcome] = []
        absent: list[_Entry] = []
        unreadable: list[tuple[_Entry, BitrixError]] = []
        async with self.reconcile_lock, self.gate.frozen(set(tasks)):
            # One batch of list calls reads up to 50 tasks (facts §3.2).
            listed = {t.task_id: t for t in await _read_v3(self.client, tasks, after=watermark)}
            for task_id in tasks:
                mine = [e for e in entries if e.item.task_id == task_id]
                found = listed[task_id]
                if found.error is not None:
                    unreadable += [(e, found.error) for e in mine]
                    continue
                owned = self.claimed
                if self.journal is not None:
                    owned = owned | self.journal.claimed_ids(task_id, watermark)
                free = [r for r in found.results if r.id not in owned]
                matched: list[tuple[_Entry, TaskResult]] = []
                for entry in mine:
                    hit = next((r for r in free if r.text == entry.item.text), None)
                    if hit is None:
                        absent.append(entry)
                    else:
                        free.remove(hit)
                        matched.append((entry, hit))  # type: ignore[arg-type]
                settled += self._created(matched)
        return settled, absent, unreadable


def _size(items: object) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside nested task-group exception groups, if there is one."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _drain(
    work: Callable[[MemoryObjectSendStream[T]], Coroutine[object, object, None]],
    buffer: int,
) -> AsyncGenerator[T, None]:
    """Yield what ``work`` sends, with the work in its own task.

    An async generator must not yield from inside a task group: if the consumer
    stops early, the group would be exited from another task. So the work runs
    as a task of its own, and closing the generator cancels it.
    """
    send, receive = anyio.create_memory_object_stream[T](buffer)
    task = asyncio.ensure_future(work(send))
    try:
        async for value in receive:
            yield value
        await task
    finally:
        # Stop the work before closing its stream (or its sends would fail), wait
        # for it without raising, and observe how it ended so nothing is lost
        # silently: an early close is the consumer's choice, not an error.
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
        receive.close()


async def bulk_add_stream(
    client: ResultsClient,
    items: Iterable[NewResult | tuple[int, str]] | AsyncIterable[NewResult | tuple[int, str]],
    *,
    batch: bool = True,
    concurrency: int | None = None,
    journal: str | None = None,
    on_progress: ProgressCallback | None = None,
    job_id: str | None = None,
) -> AsyncIterator[Outcome]:
    """Add results from ``items``, yielding one :class:`Outcome` per item as it settles.

    ``items`` is read lazily with backpressure: at most a few units of work are
    buffered, so a stream of millions runs in bounded memory. Outcomes come in the
    order they settle (``Outcome.index`` is the input position). Stopping early
    (close the iterator, e.g. with ``contextlib.aclosing``) cancels the work in
    flight; with a ``journal`` a later run settles it exactly.
    """
    job = _Job(
        client,
        batch=batch,
        concurrency=concurrency,
        journal=journal,
        on_progress=on_progress,
        job_id=job_id,
        total=_size(items),
    )
    # Closing this generator must close the inner one too, at once, not at GC.
    async with contextlib.aclosing(
        _drain(functools.partial(job.run, items), MAX_BATCH * 2)
    ) as outs:
        async for outcome in outs:
            yield outcome


async def bulk_add(
    client: ResultsClient,
    items: Iterable[NewResult | tuple[int, str]] | AsyncIterable[NewResult | tuple[int, str]],
    *,
    batch: bool = True,
    concurrency: int | None = None,
    journal: str | None = None,
    on_progress: ProgressCallback | None = None,
    job_id: str | None = None,
) -> BulkReport:
    """Add results from ``items`` and report every outcome, in input order.

    ``batch=True`` (the default) sends up to 50 adds per request: when the
    request bucket binds that is up to 50 times faster than ``batch=False``,
    which sends one keyed request per item (see docs/bulk.md for measurements).
    ``journal`` is a file path: a killed import started again with the same
    journal finishes the rest and creates nothing twice.
    """
    started = time.monotonic()
    before = client.statistics()
    total = _size(items)
    job = _Job(
        client,
        batch=batch,
        concurrency=concurrency,
        journal=journal,
        on_progress=on_progress,
        job_id=job_id,
        total=total,
    )
    slots: dict[int, Outcome] = {}
    aborted: Exception | None = None
    try:
        async with contextlib.aclosing(
            _drain(functools.partial(job.run, items), MAX_BATCH * 2)
        ) as outs:
            async for outcome in outs:
                slots[outcome.index] = outcome
    except Exception as exc:
        aborted = exc
    outcomes = [slots[i] for i in sorted(slots)]
    after = client.statistics()
    retries = {
        reason: count - before.retries.get(reason, 0)
        for reason, count in after.retries.items()
        if count > before.retries.get(reason, 0)
    }
    report = BulkReport(
        outcomes=outcomes,
        created=job.created,
        failed=job.failed,
        elapsed=time.monotonic() - started,
        mode="batch" if batch else "single",
        statistics=after,
        job_id=job.job_id,
        requests=after.requests_sent - before.requests_sent,
        rate_limit_hits=after.rate_limit_hits - before.rate_limit_hits,
        operating_limit_hits=after.operating_limit_hits - before.operating_limit_hits,
        retries=retries,
        wait_seconds=(after.bucket_wait_seconds + after.budget_wait_seconds)
        - (before.bucket_wait_seconds + before.budget_wait_seconds),
    )
    if aborted is not None:
        raise BulkAbortedError(report, aborted) from aborted
    return report


# -- reading many tasks -----------------------------------------------------------------


class _V2Error(msgspec.Struct):
    error: str = ""
    error_description: str = ""


class _V2Batch(msgspec.Struct):
    result: dict[str, msgspec.Raw] | list[msgspec.Raw] = msgspec.field(default_factory=dict)
    result_error: dict[str, _V2Error] | list[_V2Error] = msgspec.field(default_factory=dict)


async def results_of_many(
    client: ResultsClient,
    task_ids: Iterable[int] | AsyncIterable[int],
    *,
    api: Api = "v3",
    concurrency: int | None = None,
) -> AsyncIterator[TaskResults]:
    """The results of many tasks, read through batches of list calls and streamed.

    Up to 50 tasks share one request (facts §3). REST 3.0 pages through each task
    by id; REST v2 returns each task's results whole. Tasks come back in the
    order they finish, one :class:`TaskResults` per id given (a repeated id is
    read again); a task the portal refuses carries its ``error``.
    """
    check.choice("api", api, ("v2", "v3"))
    workers = check.positive_int("concurrency", concurrency) if concurrency is not None else 4
    read = _read_v3 if api == "v3" else _read_v2

    async def run(out: MemoryObjectSendStream[TaskResults]) -> None:
        groups_send, groups_recv = anyio.create_memory_object_stream[list[int]](workers)

        async def work() -> None:
            async for group in groups_recv:
                for done in await read(client, group):
                    await out.send(done)

        try:
            with groups_recv:
                async with out, anyio.create_task_group() as tg:
                    for _ in range(workers):
                        tg.start_soon(work)
                    async with groups_send:
                        group: list[int] = []
                        async for raw in _aiter(task_ids):
                            task_id = check.positive_int("task_id", raw)
                            if len(group) == MAX_BATCH or task_id in group:
                                # A repeated id goes to the next request, so each
                                # occurrence gets its own answer.
                                await groups_send.send(group)
                                group = []
                            group.append(task_id)
                        if group:
                            await groups_send.send(group)
        except BaseExceptionGroup as eg:
            raise _unwrap(eg) from None

    async with contextlib.aclosing(_drain(run, MAX_BATCH * 2)) as results:
        async for done in results:
            yield done


async def _read_one(
    client: ResultsClient, task_id: int, api: Api, *, after: int = 0
) -> TaskResults:
    try:
        if api == "v2":
            return TaskResults(task_id, await client.list_legacy(task_id))
        results = [r async for r in client.iter_results(task_id, after_id=after)]
        return TaskResults(task_id, results)
    except PortalError as exc:
        return TaskResults(task_id, [], error=exc)


async def _read_v3(client: ResultsClient, group: list[int], *, after: int = 0) -> list[TaskResults]:
    """Read a group of tasks (results with ids above ``after``) with REST 3.0 batches."""
    collected: dict[int, list[TaskResult]] = {t: [] for t in group}
    after_ids: dict[int, int] = dict.fromkeys(group, after)
    open_tasks = list(group)
    done: list[TaskResults] = []
    while open_tasks:
        commands = [
            {"method": LIST, "query": client._page_query(t, after_ids[t])} for t in open_tasks
        ]
        call = Call(
            method="batch",
            api="v3",
            params=commands,
            retry=RetryClass.READ,
            budget=(("batch", 1), (LIST, len(commands))),
        )
        try:
            reply = await client._execute(call)
            pages = decode_result(reply.result, list[ItemsBody], method="batch")
        except PortalError:
            # One task the portal refuses fails the whole REST 3.0 batch (facts
            # §3.2): read this group's tasks one by one to isolate it.
            pages = None
        if pages is None or len(pages) != len(open_tasks):
            for task_id in open_tasks:
                single = await _read_one(client, task_id, "v3", after=after_ids[task_id])
                if single.error is None:
                    single = TaskResults(task_id, [*collected[task_id], *single.results])
                done.append(single)
            return done
        still_open: list[int] = []
        for task_id, page in zip(open_tasks, pages, strict=True):
            fresh = [r for r in page.items if r.id > after_ids[task_id]]
            collected[task_id] += fresh
            if fresh and client._more_pages(page.items, client.page_size):
                after_ids[task_id] = max(r.id for r in fresh)
                still_open.append(task_id)
            else:
                done.append(TaskResults(task_id, collected.pop(task_id)))
        open_tasks = still_open
    return done


async def _read_v2(client: ResultsClient, group: list[int]) -> list[TaskResults]:
    """Read a group of tasks with one REST v2 batch (per-command errors, facts §3.1)."""
    cmd = {f"t{t}": f"{LIST}?taskId={t}" for t in group}
    call = Call(method="batch", api="v2", params={"cmd": cmd, "halt": 0}, retry=RetryClass.READ)
    reply = await client._execute(call)
    body = decode_result(reply.result, _V2Batch, method="batch", strict=False)
    results = body.result if isinstance(body.result, dict) else {}
    errors = body.result_error if isinstance(body.result_error, dict) else {}
    done: list[TaskResults] = []
    for task_id in group:
        key = f"t{task_id}"
        if key in results:
            items = decode_result(results[key], list[LegacyTaskResult], method=LIST, strict=False)
            done.append(TaskResults(task_id, items))
        elif key in errors:
            err = errors[key]
            done.append(
                TaskResults(
                    task_id,
                    [],
                    error=portal_error(
                        code=err.error, message=err.error_description, status=400, method=LIST
                    ),
                )
            )
        else:
            done.append(await _read_one(client, task_id, "v2"))
    return done
