"""Sending items and settling them exactly (design §2.3, §2.4).

- A **single** is one keyed ``tasks.task.result.add``: a re-send with the same
  key is replayed by the portal, never repeated (api-facts §4.1).
- A **batch** carries up to 50 adds that no key protects (api-facts §3.2). When
  it fails or its answer is lost, :meth:`Delivery.after_batch` *reconciles*: with
  the batch's tasks frozen (no other request of the job touches them), it lists
  their results above the batch's watermark (result ids only grow, so anything
  the batch created is above it), matches them by text to the batch's items,
  skipping results the job already owns, and re-sends the unmatched ones.
"""

from __future__ import annotations

from contextlib import ExitStack

import anyio

from .._paging import PageRule
from .._transport import Call, RetryClass
from .._transport.codec import decode_result
from ..errors import BitrixError, DecodeError, OutcomeUnknownError, PortalError
from ..models import ItemBody, TaskResult
from .claims import Claims, Entry
from .gate import TaskGate
from .port import BulkPort
from .read import read_v3
from .types import ADD, Outcome

__all__ = ["UNKNOWN_ROUNDS", "Delivery", "Reconciled"]

# Rounds of re-sending one keyed item whose outcome stayed unknown after the
# scheduler's own retries, before the job looks at the task to settle it.
UNKNOWN_ROUNDS = 3


class _StillUnknown(Exception):
    """Every round of a keyed send was lost: ``error`` is the last reason."""

    def __init__(self, error: BitrixError) -> None:
        super().__init__(error)
        self.error = error


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


class Delivery:
    """Sends entries through a :class:`BulkPort` and settles each one exactly."""

    def __init__(self, port: BulkPort, claims: Claims, *, rule: PageRule | None = None) -> None:
        self.port = port
        self.claims = claims
        self.gate = TaskGate()
        # One reconciliation at a time: two could otherwise claim one result.
        self._reconciling = anyio.Lock()
        # The job's own paging rule: what it learns of page sizes stays in the job.
        self._rule = rule or PageRule()

    # -- singles -------------------------------------------------------------------

    async def single(self, entry: Entry) -> list[Outcome]:
        """Send one keyed add and settle it, reconciling if every round was lost."""
        tasks = {entry.item.task_id}
        lost: BitrixError = OutcomeUnknownError(ADD, RuntimeError("not sent"))
        with ExitStack() as hold:
            mark = 0
            for round_ in range(UNKNOWN_ROUNDS):
                async with self.gate.use(tasks):
                    if round_ == 0:
                        mark = self.claims.watermark
                        hold.enter_context(self.claims.holding(mark))
                        self.claims.pending([entry], batched=False, watermark=mark)
                    try:
                        return await self.send_single(entry, maybe_sent=round_ > 0)
                    except _StillUnknown as unknown:
                        lost = unknown.error
                if mark == 0:
                    # No watermark yet: a lost answer can only be settled by its
                    # key's replay, never by matching text against older results.
                    continue
                # Look at the task (frozen: nothing of ours in flight there).
                found = await self.reconcile([entry], mark)
                if found.unreadable:
                    # The portal will not list the task: it holds nothing of ours.
                    return self.claims.failed(found.unreadable)
                if not found.absent:
                    return found.settled
            if mark == 0:
                # Nothing can settle it: stop the job (a journal keeps it pending).
                if isinstance(lost, OutcomeUnknownError):
                    raise lost
                raise OutcomeUnknownError(ADD, lost)
            # Seen absent with its task frozen after every attempt was lost: a
            # failure, and nothing exists for it.
            return self.claims.failed([(entry, lost)])

    async def send_single(self, entry: Entry, *, maybe_sent: bool = False) -> list[Outcome]:
        """Send one keyed add, replaying it while its outcome is unknown.

        ``maybe_sent``: an earlier attempt may have executed it. Raises
        ``_StillUnknown`` with the last error when every round was lost.
        """
        unknown: BitrixError | None = (
            OutcomeUnknownError(ADD, RuntimeError("an earlier attempt was lost"))
            if maybe_sent
            else None
        )
        for _ in range(UNKNOWN_ROUNDS):
            try:
                result = await self.port.add(
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
                return self.claims.failed([(entry, exc)])
            return self.claims.created([(entry, result)])
        assert unknown is not None
        raise _StillUnknown(unknown)

    # -- batches -------------------------------------------------------------------

    async def batch(self, entries: list[Entry], attempt: int = 0) -> list[Outcome]:
        """Send ``entries`` as one REST 3.0 batch and settle every one of them."""
        tasks = {e.item.task_id for e in entries}
        commands = [
            {"method": ADD, "query": {"fields": {"taskId": e.item.task_id, "text": e.item.text}}}
            for e in entries
        ]
        call = Call(
            method="batch",
            api="v3",
            params=commands,
            # No key protects the commands inside a batch (design §2.4): a lost
            # answer is settled by reconciliation, never by a blind re-send.
            retry_class=RetryClass.UNKEYED_WRITE,
            budget=(("batch", 1), (ADD, len(entries))),
        )
        refused = False
        with ExitStack() as hold:
            async with self.gate.use(tasks):
                mark = self.claims.watermark
                # Held until the batch is settled, reconciliation included.
                hold.enter_context(self.claims.holding(mark))
                self.claims.pending(entries, batched=True, watermark=mark)
                try:
                    reply = await self.port.execute(call)
                    bodies = decode_result(reply.result, list[ItemBody], method="batch")
                except PortalError:
                    # A command was refused; the batch rolled back or kept a prefix.
                    bodies, refused = None, True
                except BitrixError:
                    # The answer was lost (or unreadable): any prefix may have run.
                    bodies = None
                if bodies is not None and len(bodies) == len(entries):
                    pairs = zip(entries, bodies, strict=True)
                    return self.claims.created([(e, b.item) for e, b in pairs])
            return await self.after_batch(entries, mark, refused=refused, attempt=attempt)

    async def after_batch(
        self, entries: list[Entry], watermark: int, *, refused: bool, attempt: int
    ) -> list[Outcome]:
        """Settle a batch whose outcome is not known item by item.

        What exists is claimed; the rest is sent again. When the portal refused a
        command, the rest go one by one so the bad item fails alone with its own
        error; when only the answer was lost, they go as a batch again.
        """
        found = await self.reconcile(entries, watermark)
        settled, absent = found.settled, found.absent
        # Sent alone, an item on a task the portal will not list gets its own error.
        alone = [entry for entry, _ in found.unreadable]
        if refused or attempt + 1 >= UNKNOWN_ROUNDS or len(absent) == 1:
            alone, absent = alone + absent, []
        async with anyio.create_task_group() as tg:

            async def single(entry: Entry) -> None:
                settled.extend(await self.single(entry))

            async def batch(group: list[Entry]) -> None:
                settled.extend(await self.batch(group, attempt + 1))

            for entry in alone:
                tg.start_soon(single, entry)
            if absent:
                tg.start_soon(batch, absent)
        return settled

    async def resumed(self, entries: list[Entry], watermark: int) -> list[Outcome]:
        """Settle a batch a previous run left in flight at ``watermark``."""
        with self.claims.holding(watermark):
            return await self.after_batch(entries, watermark, refused=False, attempt=0)

    async def reconcile(self, entries: list[Entry], watermark: int) -> Reconciled:
        """Find which of ``entries`` exist on the portal, with their tasks frozen.

        An entry whose task the portal would not list is *unreadable*: an add to
        such a task would be refused too, so nothing of it exists.
        """
        tasks = sorted({e.item.task_id for e in entries})
        found = Reconciled()
        async with self._reconciling, self.gate.frozen(set(tasks)):
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
