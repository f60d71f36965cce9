"""Sending items and settling them exactly (design §2.3, §2.4).

- A **single** is one keyed ``tasks.task.result.add``: a re-send with the same
  key is replayed by the portal, never repeated (api-facts §4.1).
- A **batch** carries up to 50 adds that no key protects (api-facts §3.2). When
  it fails or its answer is lost, :meth:`Delivery.after_batch` settles it: the
  :class:`~.reconcile.Reconciler` claims what exists, and the rest is sent
  again as ``splitting.py`` plans it (a refused batch is split, so a bad row
  costs O(log n) extra requests and the good rows stay batched).
- Failures that are the whole job's stop it at once (see ``health.py``).

:class:`Delivery` is the coordinator: it owns the job's :class:`~.gate.TaskGate`,
its :class:`~.health.JobHealth` and its :class:`~.reconcile.Reconciler`, and
counts the requests carrying adds.
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
from ..models import ItemBody
from .claims import Claims, Entry
from .gate import TaskGate
from .health import UNREACHABLE_AFTER, JobHealth
from .port import BulkPort
from .reconcile import Reconciler
from .splitting import plan_resend
from .types import ADD, Outcome

__all__ = ["UNKNOWN_ROUNDS", "Delivery"]

# Sends of one keyed item whose outcome stayed unknown after the scheduler's own
# retries (each send is the scheduler's whole retry policy: the job must not
# multiply it). Between two sends the job looks at the task to settle it.
UNKNOWN_ROUNDS = 3


class _StillUnknown(Exception):
    """Every round of a keyed send was lost: ``error`` is the last reason."""

    def __init__(self, error: BitrixError) -> None:
        super().__init__(error)
        self.error = error


class Delivery:
    """Sends entries through a :class:`BulkPort` and settles each one exactly."""

    def __init__(self, port: BulkPort, claims: Claims, *, rule: PageRule | None = None) -> None:
        self.port = port
        self.claims = claims
        self.gate = TaskGate()
        self.health = JobHealth()
        self.reconciler = Reconciler(port, claims, self.gate, self.health, rule=rule)
        #: Rows a failed or lost batch left absent that were sent again (each once).
        self.resent = 0
        #: Requests carrying adds that the job handed to the port (a batch is one),
        #: and the adds they carried: what the bound of ``BulkReport`` is for.
        self.add_requests = 0
        self.add_commands = 0

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
                found = await self.reconciler.look([entry], mark)
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
            self.health.check()
            self.add_requests += 1
            self.add_commands += 1
            try:
                result = await self.port.add(
                    entry.item.task_id, entry.item.text, idempotency_key=entry.key
                )
            except (OutcomeUnknownError, DecodeError) as exc:
                self.health.failed(exc)
                raise _StillUnknown(exc) from None
            except ConnectError as exc:
                # It never reached the portal: send it again (same key), unless
                # the portal is down (the job stops) or this item never gets through.
                self.health.failed(exc)
                connect_failures += 1
                if connect_failures < UNREACHABLE_AFTER:
                    continue
                if maybe_sent:
                    raise _StillUnknown(exc) from None
                return self.claims.failed([(entry, exc)])
            except BitrixError as exc:
                self.health.failed(exc)
                if maybe_sent:
                    # An earlier send may have executed it: a refusal now does
                    # not prove that nothing exists.
                    raise _StillUnknown(exc) from None
                # The portal refused it (or it never left): nothing was created.
                return self.claims.failed([(entry, exc)])
            self.health.reached()
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
                self.health.check()
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
                        self.health.failed(exc)
                        connect_failures += 1
                        if connect_failures < UNREACHABLE_AFTER:
                            continue
                        bodies = None
                    except PortalError as exc:
                        # A command was refused; the batch rolled back or kept a prefix.
                        self.health.failed(exc)
                        bodies, refused = None, True
                    except BitrixError as exc:
                        # The answer was lost (or unreadable): any prefix may have run.
                        self.health.failed(exc)
                        bodies = None
                    else:
                        self.health.reached()
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

        What exists is claimed; the rest is sent again, as one batch when only
        the answer was lost, split when the portal refused a command (see
        ``splitting.py``).
        """
        found = await self.reconciler.look(entries, watermark)
        settled = found.settled
        resend = plan_resend(
            entries, found, refused=refused, last_round=attempt + 1 >= UNKNOWN_ROUNDS
        )
        if not again:
            self.resent += len(resend)
        async with anyio.create_task_group() as tg:

            async def single(entry: Entry) -> None:
                settled.extend(await self.single(entry))

            async def batch(group: list[Entry]) -> None:
                # A refused batch's halves start their own rounds of lost answers.
                settled.extend(await self.batch(group, 0 if refused else attempt + 1, again=True))

            for entry in resend.alone:
                tg.start_soon(single, entry)
            for group in resend.groups:
                tg.start_soon(batch, group)
        return settled

    async def resumed(self, entries: list[Entry], watermark: int) -> list[Outcome]:
        """Settle a batch a previous run left in flight at ``watermark``."""
        with self.claims.holding(watermark):
            return await self.after_batch(entries, watermark, refused=False, attempt=0)
