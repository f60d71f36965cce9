"""Sending items and settling them exactly (design §2.3, §2.4).

- A **single** is one keyed ``tasks.task.result.add``: a re-send with the same
  key is replayed by the portal, never repeated (api-facts §4.1).
- A **batch** carries up to 50 adds that no key protects (api-facts §3.2). When
  it fails or its answer is lost, :meth:`Delivery.after_batch` *reconciles*: with
  the batch's tasks frozen (no other request of the job touches them), it lists
  their results above the batch's watermark (result ids only grow, so anything
  the batch created is above it), matches them by text to the batch's items,
  skipping results the job already owns, and re-sends the unmatched ones.
- A batch the portal **refused** because of some of its rows is split: the
  rows the reconciliation did not find go again as two halves (recursively), so
  a bad row costs O(log n) extra requests and the good rows stay batched.
- Some failures are the whole job's, not an item's: credentials the portal
  refuses (wrong, revoked, lacking scope), a service the portal blocked, or a
  portal that could not be connected to several times in a row. They stop the
  job at once (:class:`JobStopped`) instead of failing every item in turn.
"""

from __future__ import annotations

from contextlib import ExitStack

import anyio

from .._paging import PageRule
from .._transport import Call, RetryClass
from .._transport.codec import decode_result
from ..errors import (
    BitrixError,
    ConnectError,
    DecodeError,
    OutcomeUnknownError,
    PortalError,
)
from ..models import ItemBody, TaskResult
from .claims import Claims, Entry
from .gate import TaskGate
from .port import BulkPort
from .read import read_v3, stops_job
from .types import ADD, Outcome

__all__ = [
    "UNKNOWN_ROUNDS",
    "UNREACHABLE_AFTER",
    "Delivery",
    "JobStopped",
    "Reconciled",
    "stops_job",
]

# Sends of one keyed item whose outcome stayed unknown after the scheduler's own
# retries (each send is the scheduler's whole retry policy: the job must not
# multiply it). Between two sends the job looks at the task to settle it.
UNKNOWN_ROUNDS = 3

# Connect failures in a row, with no success between, after which the portal is
# taken to be unreachable and the job stops. Each one already is the scheduler's
# whole retry policy for one request.
UNREACHABLE_AFTER = 3


class JobStopped(Exception):
    """The job must stop at once for ``cause``; the work in flight is abandoned."""

    def __init__(self, cause: BitrixError) -> None:
        super().__init__(cause)
        self.cause = cause


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
        #: Rows a failed or lost batch left absent that were sent again (each once).
        self.resent = 0
        #: Requests carrying adds that the job handed to the port (a batch is one),
        #: and the adds they carried: what the bound of ``BulkReport`` is for.
        self.add_requests = 0
        self.add_commands = 0
        # Connect failures since the last request that reached the portal.
        self._unreachable = 0
        #: Set when the job is stopped: every unit stops before its next request.
        self.stopped: BitrixError | None = None

    # -- the job's health ------------------------------------------------------------

    def _stop(self, cause: BitrixError) -> JobStopped:
        if self.stopped is None:
            self.stopped = cause
        return JobStopped(self.stopped)

    def _reached(self) -> None:
        """A request reached the portal: the run of connect failures is over."""
        self._unreachable = 0

    def _failed(self, error: BitrixError) -> None:
        """Look at a request's failure: raise :class:`JobStopped` if it is the job's."""
        if stops_job(error):
            raise self._stop(error)
        if isinstance(error, ConnectError):
            self._unreachable += 1
            if self._unreachable >= UNREACHABLE_AFTER:
                unreachable = ConnectError(
                    f"portal unreachable: {self._unreachable} requests in a row could not "
                    f"connect ({error})"
                )
                if hasattr(error, "reason"):
                    # The cause (refused, DNS, TLS) of the last failure, kept.
                    setattr(unreachable, "reason", error.reason)  # noqa: B010
                unreachable.__cause__ = error
                raise self._stop(unreachable)
        else:
            # Any other answer came from the portal.
            self._reached()

    def _check_stopped(self) -> None:
        if self.stopped is not None:
            raise JobStopped(self.stopped)

    async def _look(self, entries: list[Entry], watermark: int) -> Reconciled:
        """:meth:`reconcile`, with the job's failures told apart from the tasks' own."""
        for _ in range(UNREACHABLE_AFTER):
            self._check_stopped()
            try:
                found = await self.reconcile(entries, watermark)
            except ConnectError as exc:
                # Nothing reached the portal: look again (or stop, if it is down).
                self._failed(exc)
                continue
            except BitrixError as exc:
                self._failed(exc)
                raise
            for _, error in found.unreadable:
                self._failed(error)
            if not found.unreadable:
                self._reached()
            return found
        raise self._stop(ConnectError("portal unreachable: the reconciliation could not connect"))

    # -- singles -------------------------------------------------------------------

    async def single(self, entry: Entry) -> list[Outcome]:
        """Send one keyed add and settle it, looking at its task when a send was lost.

        Each send is the scheduler's whole retry policy for the call (replays of
        the same key), so the job sends it at most :data:`UNKNOWN_ROUNDS` times,
        looking at the task between sends, and only once while it has no
        watermark: then nothing can settle a lost answer and the job stops.
        """
        tasks = {entry.item.task_id}
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
                    # key's replay, never by matching text against older results,
                    # and the scheduler already replayed it. Stop the job (a
                    # journal keeps the item pending for a later run).
                    if isinstance(lost, OutcomeUnknownError):
                        raise lost
                    raise OutcomeUnknownError(ADD, lost)
                # Look at the task (frozen: nothing of ours in flight there).
                found = await self._look([entry], mark)
                if found.unreadable:
                    # The portal will not list the task: it holds nothing of ours.
                    return self.claims.failed(found.unreadable)
                if not found.absent:
                    return found.settled
            # Seen absent with its task frozen after every send was lost: a
            # failure, and nothing exists for it.
            return self.claims.failed([(entry, lost)])

    async def send_single(self, entry: Entry, *, maybe_sent: bool = False) -> list[Outcome]:
        """Send one keyed add (the scheduler replays it while its outcome is unknown).

        ``maybe_sent``: an earlier send may have executed it. Raises
        ``_StillUnknown`` with the error when the outcome stays unknown.
        """
        connect_failures = 0
        while True:
            self._check_stopped()
            self.add_requests += 1
            self.add_commands += 1
            try:
                result = await self.port.add(
                    entry.item.task_id, entry.item.text, idempotency_key=entry.key
                )
            except (OutcomeUnknownError, DecodeError) as exc:
                self._failed(exc)
                raise _StillUnknown(exc) from None
            except ConnectError as exc:
                # It never reached the portal: send it again (same key), unless
                # the portal is down (the job stops) or this item never gets through.
                self._failed(exc)
                connect_failures += 1
                if connect_failures < UNREACHABLE_AFTER:
                    continue
                if maybe_sent:
                    raise _StillUnknown(exc) from None
                return self.claims.failed([(entry, exc)])
            except BitrixError as exc:
                self._failed(exc)
                if maybe_sent:
                    # An earlier send may have executed it: a refusal now does
                    # not prove that nothing exists.
                    raise _StillUnknown(exc) from None
                # The portal refused it (or it never left): nothing was created.
                return self.claims.failed([(entry, exc)])
            self._reached()
            return self.claims.created([(entry, result)])

    # -- batches -------------------------------------------------------------------

    async def batch(
        self, entries: list[Entry], attempt: int = 0, *, again: bool = False
    ) -> list[Outcome]:
        """Send ``entries`` as one REST 3.0 batch and settle every one of them.

        ``again``: these rows were left absent by an earlier batch of the job
        (they are counted in :attr:`resent` once, there).
        """
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
            connect_failures = 0
            while True:
                self._check_stopped()
                async with self.gate.use(tasks):
                    if connect_failures == 0:
                        mark = self.claims.watermark
                        # Held until the batch is settled, reconciliation included.
                        hold.enter_context(self.claims.holding(mark))
                        self.claims.pending(entries, batched=True, watermark=mark)
                    self.add_requests += 1
                    self.add_commands += len(entries)
                    try:
                        reply = await self.port.execute(call)
                        bodies = decode_result(reply.result, list[ItemBody], method="batch")
                    except ConnectError as exc:
                        # Nothing reached the portal (an earlier attempt that might
                        # have would make it OutcomeUnknownError): send it as is.
                        self._failed(exc)
                        connect_failures += 1
                        if connect_failures < UNREACHABLE_AFTER:
                            continue
                        bodies = None
                    except PortalError as exc:
                        # A command was refused; the batch rolled back or kept a prefix.
                        self._failed(exc)
                        bodies, refused = None, True
                    except BitrixError as exc:
                        # The answer was lost (or unreadable): any prefix may have run.
                        self._failed(exc)
                        bodies = None
                    else:
                        self._reached()
                    if bodies is not None and len(bodies) == len(entries):
                        pairs = zip(entries, bodies, strict=True)
                        return self.claims.created([(e, b.item) for e, b in pairs])
                break
            return await self.after_batch(
                entries, mark, refused=refused, attempt=attempt, again=again
            )

    async def after_batch(
        self,
        entries: list[Entry],
        watermark: int,
        *,
        refused: bool,
        attempt: int,
        again: bool = False,
    ) -> list[Outcome]:
        """Settle a batch whose outcome is not known item by item.

        What exists is claimed; the rest is sent again. When only the answer was
        lost, the rest go as a batch again. When the portal refused a command,
        the batch is split so the bad rows fail alone, each with its own error,
        at O(log n) extra requests each, while the good rows stay batched:

        - if the batch kept the prefix before the refused command (one reading
          of design §3), the reconciliation found that prefix and the refused
          command is the first row it did not find: it goes alone, the rest as
          one batch;
        - if nothing of the batch exists (it rolled back, the other reading),
          the rows go again as two halves, and a half that is refused again is
          split the same way, down to single rows.
        """
        found = await self._look(entries, watermark)
        settled = found.settled
        order = {id(e): n for n, e in enumerate(entries)}
        absent = sorted(found.absent, key=lambda e: order[id(e)])
        # Sent alone, an item on a task the portal will not list gets its own error.
        alone = [entry for entry, _ in found.unreadable]
        groups: list[list[Entry]] = []
        if refused and settled and absent:
            alone.append(absent[0])
            groups.append(absent[1:])
        elif refused:
            half = (len(absent) + 1) // 2
            groups += [absent[:half], absent[half:]]
        elif attempt + 1 >= UNKNOWN_ROUNDS:
            alone += absent
        else:
            groups.append(absent)
        alone += [group[0] for group in groups if len(group) == 1]
        groups = [group for group in groups if len(group) > 1]
        if not again:
            self.resent += len(alone) + sum(len(group) for group in groups)
        async with anyio.create_task_group() as tg:

            async def single(entry: Entry) -> None:
                settled.extend(await self.single(entry))

            async def batch(group: list[Entry]) -> None:
                # A refused batch's halves start their own rounds of lost answers.
                settled.extend(await self.batch(group, 0 if refused else attempt + 1, again=True))

            for entry in alone:
                tg.start_soon(single, entry)
            for group in groups:
                tg.start_soon(batch, group)
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
