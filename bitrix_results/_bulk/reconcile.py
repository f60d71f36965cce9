"""Reconciliation: which entries of a batch exist on the portal (design §2.4).

No key protects the adds inside a batch (api-facts §3.2), so when a batch fails
or its answer is lost the job looks instead of re-sending blindly: with the
batch's tasks frozen (no other request of the job touches them), it lists their
results above the batch's watermark (result ids only grow, so anything the
batch created is above it) and matches them by text, and by author, to the
batch's items, skipping results the job already owns. What matches is claimed;
the rest is absent, for the delivery to send again.
"""

from __future__ import annotations

import anyio

from .._paging import PageRule
from ..errors import BitrixError, ConnectError
from ..models import TaskResult
from .claims import Claims, Entry
from .gate import TaskGate
from .health import UNREACHABLE_AFTER, JobHealth
from .port import BulkPort
from .read import read_v3
from .types import Outcome

__all__ = ["Reconciled", "Reconciler"]


class Reconciled:
    """What a reconciliation found for a group of entries."""

    __slots__ = ("absent", "settled", "unreadable")

    def __init__(self) -> None:
        #: Outcomes of entries whose result exists (now claimed).
        self.settled: list[Outcome] = []
        #: Entries with no result of theirs on the portal.
        self.absent: list[Entry] = []
        #: Entries whose task the portal would not list, with its error.
        self.unreadable: list[tuple[Entry, BitrixError]] = []


class Reconciler:
    """Finds a job's entries on the portal, claiming the results that can only be theirs."""

    def __init__(
        self,
        port: BulkPort,
        claims: Claims,
        gate: TaskGate,
        health: JobHealth,
        *,
        rule: PageRule | None = None,
    ) -> None:
        self.port = port
        self.claims = claims
        self.gate = gate
        self.health = health
        # One reconciliation at a time: two could otherwise claim one result.
        self._lock = anyio.Lock()
        # The job's own paging rule: what it learns of page sizes stays in the job.
        self._rule = rule or PageRule()

    async def look(self, entries: list[Entry], watermark: int) -> Reconciled:
        """:meth:`reconcile`, with the job's failures told apart from the tasks' own."""
        for _ in range(UNREACHABLE_AFTER):
            self.health.check()
            try:
                found = await self.reconcile(entries, watermark)
            except ConnectError as exc:
                # Nothing reached the portal: look again (or stop, if it is down).
                self.health.failed(exc)
                continue
            except BitrixError as exc:
                self.health.failed(exc)
                raise
            for _, error in found.unreadable:
                self.health.failed(error)
            if not found.unreadable:
                self.health.reached()
            return found
        raise self.health.stop(
            ConnectError("portal unreachable: the reconciliation could not connect")
        )

    async def reconcile(self, entries: list[Entry], watermark: int) -> Reconciled:
        """Find which of ``entries`` exist on the portal, with their tasks frozen.

        An entry whose task the portal would not list is *unreadable*: an add to
        such a task would be refused too, so nothing of it exists.
        """
        tasks = sorted({e.item.task_id for e in entries})
        found = Reconciled()
        async with self._lock, self.gate.frozen(set(tasks)):
            # One batch of list calls reads up to 50 tasks (api-facts §3.2).
            listed = {
                t.task_id: t
                for t in await read_v3(self.port, tasks, rule=self._rule, after=watermark)
            }
            for task_id in tasks:
                mine = [e for e in entries if e.item.task_id == task_id]
                read = listed[task_id]
                if read.error is not None:
                    found.unreadable += [(e, read.error) for e in mine]
                    continue
                found.settled += self.claims.created(
                    self.match(mine, read.results, watermark, found.absent),  # type: ignore[arg-type]
                    answered=False,
                )
        return found

    def match(
        self, entries: list[Entry], results: list[TaskResult], watermark: int, absent: list[Entry]
    ) -> list[tuple[Entry, TaskResult]]:
        """Pair ``entries`` of one task with the results that can only be theirs.

        A result is a candidate when it is above the watermark (created after the
        unit was sent), not already owned by the job (claimed now or journaled by
        an earlier run), and written by the client's own user: another user's, or
        a result the portal says is someone else's, with the same text must never
        be taken for ours (it would report an item created that never was). Among
        candidates, each entry takes the oldest one with its text. Entries left
        without one go to ``absent``.
        """
        owned = self.claims.owned(entries[0].item.task_id, watermark)
        free = [
            r for r in results if r.id > watermark and r.id not in owned and self.claims.ours(r)
        ]
        matched: list[tuple[Entry, TaskResult]] = []
        for entry in entries:
            hit = next((r for r in free if r.text == entry.item.text), None)
            if hit is None:
                absent.append(entry)
            else:
                free.remove(hit)
                matched.append((entry, hit))
        return matched
