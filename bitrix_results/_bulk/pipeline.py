"""The bulk job: items in, units of work to the workers, outcomes and progress out.

The first item of a job goes alone, so every batch after it has a watermark
(see ``claims.py``). A programmer error (an input that is not an item, a
journal of another input, an exception in ``on_progress``) stops the feeding;
the work in flight still settles and is reported, then the error is raised.

A failure of the whole job (credentials the portal refuses, a portal that
cannot be reached: see ``health.py``) stops it at once instead: the work in
flight is abandoned, its items are neither created nor failed in the outcomes
(a journal keeps them pending for the next run), and the error is raised.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _validate as check
from ..errors import InvalidInputError
from ..models import NewResult
from .claims import PRUNE_AT, Claims, Entry, digest, key_for
from .delivery import Delivery
from .health import JobStopped
from .journal import Journal
from .port import BulkPort
from .streams import aiter_any, send, unwrap
from .types import MAX_BATCH, BulkOptions, BulkProgress, Outcome, check_options
from .verify import Ambiguity, Reported, verify

__all__ = ["Job"]


@dataclass(slots=True, eq=False)
class _Unit:
    entries: list[Entry]
    kind: Literal["single", "batch", "reconcile"]
    # For "reconcile" units (resumed from a journal): the watermark of the batch
    # that was in flight when the previous run died.
    watermark: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)


class _StopFeeding(Exception):
    """Raised inside the feed: no more items; settle what is in flight, then raise ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _first(group: BaseExceptionGroup[JobStopped]) -> JobStopped:
    """The first :class:`JobStopped` of a (nested) group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, JobStopped)
    return error


class Job:
    """One bulk import: its options, its claims, its delivery and its counters."""

    def __init__(
        self,
        port: BulkPort,
        options: BulkOptions,
        *,
        total: int | None = None,
        prune_at: int = PRUNE_AT,
        where: str = "bulk_add",
    ) -> None:
        check_options(options, where)
        self.batch = options.get("batch", True)
        concurrency = options.get("concurrency")
        if concurrency is not None:
            check.positive_int("concurrency", concurrency)
        self.concurrency = concurrency or (8 if self.batch else 16)
        job_id = options.get("job_id")
        path = options.get("journal")
        journal = None
        if path is not None:
            if not isinstance(path, str | os.PathLike):
                raise TypeError(f"journal: must be a file path (str or os.PathLike), not {path!r}")
            journal = Journal(path, job_id, port.binding)
        if journal is not None:
            self.job_id = journal.job_id
        else:
            self.job_id = check.key("job_id", job_id) if job_id is not None else uuid.uuid4().hex
        self.on_progress = options.get("on_progress")
        self.total = total
        self.started = time.monotonic()
        self.created = 0
        self.failed = 0
        # The verification pass needs every reported id: bulk_add holds them all
        # anyway, a stream promises bounded memory and does not verify.
        verify_option = options.get("verify", True)
        if not isinstance(verify_option, bool):
            raise TypeError(f"verify: must be True or False, not {verify_option!r}")
        self.verify = verify_option and where == "bulk_add"
        self.reported = Reported() if self.verify else None
        self.started_at = datetime.now(UTC).replace(microsecond=0)
        #: Items whose created outcome the journal of an earlier run gave.
        self.created_earlier = 0
        #: Doubles of ours the verification pass deleted.
        self.repaired = 0
        self.port = port
        self.ambiguity = Ambiguity(port) if self.verify else None
        if self.ambiguity is not None:
            # The delivery's lost answers tell the pass whether, and when, to look.
            port = self.ambiguity.watch(port)
        self.claims = Claims(journal, prune_at=prune_at, track=self.verify)
        self.delivery = Delivery(port, self.claims)
        # The first error that stops the job: the feed takes no item after it.
        self._error: Exception | None = None

    def progress(self) -> BulkProgress:
        done = self.created + self.failed
        return BulkProgress(
            done, self.created, self.failed, self.total, time.monotonic() - self.started
        )

    async def run(
        self, items: Iterable[object] | AsyncIterable[object], out: MemoryObjectSendStream[Outcome]
    ) -> None:
        """Feed ``items`` to the workers and send every outcome to ``out``."""
        units_send, units_recv = anyio.create_memory_object_stream[_Unit](self.concurrency)
        try:
            # The workers share one receiving end and ``out``; their owner closes
            # them, so a worker cancelled before it ever ran leaves nothing open.
            with units_recv:
                async with out, anyio.create_task_group() as tg:
                    for _ in range(self.concurrency):
                        tg.start_soon(self._worker, units_recv, out)
                    async with units_send:
                        await self._feed(items, units_send, out)
        except JobStopped as stopped:
            raise stopped.cause from None
        except BaseExceptionGroup as group:
            # Several units may meet the job's failure at once: the first one says why.
            stop, _ = group.split(JobStopped)
            if stop is not None:
                raise _first(stop).cause from None
            raise unwrap(group) from None
        finally:
            if self.claims.journal is not None:
                self.claims.journal.close()
        if self.ambiguity is not None and self.reported is not None and self._error is None:
            # The job ended normally: look for doubles a late call left (verify.py).
            self.repaired = await verify(
                self.port,
                self.claims,
                self.reported,
                started=self.started_at,
                ambiguity=self.ambiguity,
            )
        if self._error is not None:
            raise self._error

    def _stop(self, error: Exception) -> None:
        """Stop feeding for ``error`` (the first one wins); the work in flight settles."""
        if self._error is None:
            self._error = error

    async def _feed(
        self,
        items: Iterable[object] | AsyncIterable[object],
        units: MemoryObjectSendStream[_Unit],
        out: MemoryObjectSendStream[Outcome],
    ) -> None:
        pending: list[Entry] = []
        # Items of one interrupted batch (same watermark) are reconciled together.
        resumed: _Unit | None = None
        index = -1
        async for raw in aiter_any(items):
            if self._error is not None:
                break
            index += 1
            try:
                entry = self._entry(index, raw)
                unit = None if isinstance(entry, Outcome) else self._resume(entry)
            except _StopFeeding as stop:
                # The items already taken are still sent (below); no more are.
                self._stop(stop.error)
                break
            if isinstance(entry, Outcome):
                await self._emit([entry], out)
            elif isinstance(unit, Outcome):
                self.created_earlier += 1
                await self._emit([unit], out)
            elif unit is not None and unit.kind == "reconcile":
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
            elif unit is not None:
                await units.send(unit)
            elif self.claims.watermark == 0:
                # Until one answer gave us a watermark, items go one at a time:
                # an item sent without one could not be told apart from older
                # results of its task if its answer were lost.
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

    def _entry(self, index: int, raw: object) -> Entry | Outcome:
        """The entry of a valid item, or the failed outcome of an invalid one."""
        try:
            item = check.new_result(raw)
        except InvalidInputError as exc:
            if exc.field == "item":
                # Not an item at all: a programmer error, not a failed item.
                raise _StopFeeding(TypeError(f"items[{index}]: {exc.message}")) from None
            # A NewResult or a pair of the wrong types: keep it as given.
            item = raw if isinstance(raw, NewResult) else NewResult(*raw)  # type: ignore[misc]
            return Outcome(index, item, "failed", error=exc)
        return Entry(index, item, key_for(item, self.job_id, index), digest(item))

    def _resume(self, entry: Entry) -> _Unit | Outcome | None:
        """What the journal says about an item: settled, to send again, or nothing."""
        try:
            row = self.claims.journaled(entry)
        except ValueError as exc:
            raise _StopFeeding(exc) from None
        if row is None or isinstance(row, Outcome):
            return row
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
                    settled = await self.delivery.batch(unit.entries)
                elif unit.kind == "single":
                    settled = await self.delivery.single(unit.entries[0])
                else:
                    settled = await self.delivery.resumed(unit.entries, unit.watermark)
            finally:
                unit.done.set()
            await self._emit(settled, out)

    async def _emit(self, settled: list[Outcome], out: MemoryObjectSendStream[Outcome]) -> None:
        if self.ambiguity is not None:
            self.ambiguity.sample()
        for outcome in settled:
            if self.reported is not None:
                self.reported.note(outcome)
            if outcome.status == "created":
                self.created += 1
            else:
                self.failed += 1
            await send(out, outcome)
        if self.on_progress is not None and settled and self._error is None:
            try:
                report = self.on_progress(self.progress())
                if report is not None:
                    await report
            except Exception as exc:
                # The caller's callback broke: stop feeding, settle what is in
                # flight (its outcomes are still reported), then raise it.
                self._stop(exc)
