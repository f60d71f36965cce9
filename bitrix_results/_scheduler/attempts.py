"""One attempt of a call: admission, bucket, send, learning from the reply, settling.

:class:`Attempts` is the scheduler's per-attempt machinery and the counters
``Scheduler.statistics()`` reports; ``Scheduler.execute`` runs the retry loop
around :meth:`Attempts.attempt`. Every call passes here, so this is the hot path
(see the package docstring on CPU per call).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from types import MappingProxyType

from .._transport.types import Call, Reply, RetryClass, Transport
from ..errors import OperatingLimitError, OutcomeUnknownError, RateLimitError
from .backends import Backend
from .bucket import BucketConfig
from .budget import Admission, BudgetKey, BudgetRules, Settlement
from .clock import Clock
from .per_loop import PerLoop
from .retry import is_batch
from .slots import Slots
from .stats import BucketStatistics, BudgetStatistics, SchedulerStatistics

__all__ = ["Attempts", "HeldTooLong", "QueuedTime"]

# Rare paths only (a wait for a budget), and only method names and numbers:
# never a URL, a key or a credential.
_log = logging.getLogger("bitrix_results.scheduler")

_FAILED = Settlement("failed")
_OPERATING_LIMIT = Settlement("operating_limit")
#: Seconds a hold may end after a call's deadline (the wall and the monotonic
#: clock are read at slightly different moments).
_HOLD_TOLERANCE = 1e-3


class QueuedTime:
    """Per logical call: seconds spent queueing (pacing, not failing), and the last send."""

    # A plain slotted class, not a dataclass: one is made per call.
    __slots__ = ("seconds", "sent_at")

    def __init__(self) -> None:
        self.seconds = 0.0
        #: When the latest attempt was handed to the transport (monotonic).
        self.sent_at: float | None = None


class HeldTooLong(Exception):
    """A 429-held call would wait past one operating window from its first 429."""


class Attempts:
    """Runs single attempts of calls for one scheduler, and counts what happened.

    Args:
        backend: Where the limits' state lives.
        bucket: The bucket every attempt reserves a request in.
        rules: The operating-budget rules.
        give_up_after: Seconds a 429-limited call waits without progress.
        concurrency: Calls admitted but not yet settled, at most.
        clock: Wall time, loop time and sleep.
    """

    def __init__(
        self,
        backend: Backend,
        bucket: BucketConfig,
        rules: BudgetRules,
        *,
        give_up_after: float,
        concurrency: int,
        clock: Clock,
    ) -> None:
        self._backend = backend
        self._bucket = bucket
        self._rules = rules
        self._clock = clock
        self.give_up_after = give_up_after
        # Keys that have answered 429, and when a call on each last succeeded
        # (monotonic): what bounds a 429-held call (limit_deadline).
        self._limited: set[BudgetKey] = set()
        self._progress: dict[BudgetKey, float] = {}
        # Slots (their futures) bind to the event loop they are used on.
        self._slots: PerLoop[Slots] = PerLoop(lambda: Slots(concurrency))
        # Tickets name a call in flight in shared (Redis) state: unique per process.
        self._prefix = uuid.uuid4().hex[:12]
        self._tickets = itertools.count(1)
        # What statistics() reports.
        self.sent = 0
        #: Successful replies, for the refresh cap (retrying.RetryState).
        self.replies = 0
        self.bucket_waits = 0
        self.bucket_wait_seconds = 0.0
        self.budget_waits = 0
        self.budget_wait_seconds = 0.0
        self.retries: Counter[str] = Counter()
        self.rate_limit_hits = 0
        self.operating_limit_hits = 0
        self.in_flight = 0

    def limit_deadline(self, keys: Sequence[tuple[BudgetKey, int]], limited_since: float) -> float:
        """When a call 429-limited since ``limited_since`` stops waiting (monotonic).

        One operating window and one basket after its first 429 or after the
        latest success of a call on one of its keys, whichever is later. While
        other calls of the method get through, the portal is pacing, not
        refusing for ever (a busy method can keep one call waiting behind the
        others). A real block lasts at most one window from the first call of
        that window (api-facts §2.2); the basket is the granularity of the holds
        that wait it out (a 429 with no known reset holds one basket).
        """
        since = limited_since
        progress = self._progress
        for key, _ in keys:
            since = max(since, progress.get(key, since))
        return since + self.give_up_after

    def held_too_long(self, call: Call, last: OperatingLimitError) -> BaseException:
        """The error for a call still refused with 429 after a whole operating window.

        Every basket of the window has expired since the first 429 (api-facts
        §2.2), so a portal that still refuses is not pacing us: waiting longer
        would hold the caller without end.
        """
        error = OperatingLimitError(
            f"still over the operating limit: no call of this method got through in "
            f"{self.give_up_after:g} s (an operating window and a basket); giving up",
            code=last.code,
            status=last.status,
            method=call.method,
        )
        if call.retry_class is not RetryClass.READ and is_batch(call):
            # A write batch's 429 may follow executed commands (classify_call).
            return OutcomeUnknownError(call.method, error)
        return error

    async def attempt(
        self,
        call: Call,
        transport: Transport,
        portal: str,
        keys: Sequence[tuple[BudgetKey, int]],
        queued: QueuedTime,
        *,
        retrying: bool = False,
        limited_since: float | None = None,
    ) -> Reply:
        """Send ``call`` once when admitted; settle its budget whatever happens.

        Raises :class:`HeldTooLong` when a 429-held call would wait past its
        deadline (:meth:`limit_deadline`), and the attempt's failure otherwise.
        """
        # Every backend step is "try now, else await" (Backend): a step the
        # backend does at once creates no coroutine.
        backend = self._backend
        clock = self._clock
        rules = self._rules
        ticket = f"{self._prefix}-{next(self._tickets)}"
        slots = self._slots.get()
        if not retrying and slots.try_take():
            # A slot free: ask the budget without the _admit coroutine. Same
            # decision as _admit's first turn.
            try:
                admission = backend.admit_now(ticket, keys, rules, clock)
                if admission is None:
                    admission = await backend.admit(ticket, keys, rules, clock)
            except BaseException:
                slots.give()
                raise
            if not admission.admitted:
                slots.give()
                await self._admit(ticket, keys, slots, queued, refused=admission)
        else:
            await self._admit(
                ticket, keys, slots, queued, retrying=retrying, limited_since=limited_since
            )
        self.in_flight += 1
        settlement = _FAILED
        cancelled = False
        try:
            reservation = backend.reserve_now(portal, self._bucket)
            if reservation is None:
                reservation = await backend.reserve(portal, self._bucket, clock)
                if reservation.waited > 0:
                    self.bucket_waits += 1
                    self.bucket_wait_seconds += reservation.waited
                    queued.seconds += reservation.waited
            self.sent += 1
            queued.sent_at = clock.monotonic()
            try:
                reply = await transport.send(call)
            except RateLimitError:
                # 503: another tenant on our address fills the portal's bucket
                # (api-facts §1). Nothing executed; the retry is paced by the bucket.
                self.rate_limit_hits += 1
                await backend.rate_limited(portal, self._bucket, reservation, clock)
                raise
            except OperatingLimitError:
                # 429: the key is held until its reset (api-facts §2.2). The refused
                # call did not run, but a batch's earlier commands may have
                # (design §3): retry.classify_call decides whether to resend.
                self.operating_limit_hits += 1
                self._limited.update(key for key, _ in keys)
                settlement = _OPERATING_LIMIT
                raise
            settlement = Settlement("replied", reply.time, reply.replayed)
            self.replies += 1
            if self._limited:
                # Progress on a key that has seen a 429 (see limit_deadline).
                at = clock.monotonic()
                for key, _ in keys:
                    if key in self._limited:
                        self._progress[key] = at
            if not backend.succeeded_now(portal, self._bucket):
                await backend.succeeded(portal, self._bucket, clock)
            return reply
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.in_flight -= 1
            slots.give()
            if not backend.settle_now(ticket, keys, settlement, rules, clock):
                settling = backend.settle(ticket, keys, settlement, rules, clock)
                if cancelled:
                    # Settle even when cancelled, or the units stay in flight (with
                    # Redis, until the lease runs out); shielded from a second cancel.
                    await asyncio.shield(settling)
                else:
                    await settling

    async def _admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        slots: Slots,
        queued: QueuedTime,
        *,
        refused: Admission | None = None,
        retrying: bool = False,
        limited_since: float | None = None,
    ) -> None:
        """Return holding a concurrency slot, with ``ticket`` admitted on every key.

        ``refused``: the fast path's refusal (taken without holding a slot now),
        to wait on before asking again. ``limited_since``: when the call got
        its first 429 (monotonic); a hold that would end after the call's
        deadline (:meth:`limit_deadline`) raises :class:`HeldTooLong` instead.
        """
        backend = self._backend
        clock = self._clock
        rules = self._rules
        budget_waited = 0.0
        refusals = 0
        woken_by: BudgetKey | None = None
        admission = refused
        while True:
            if admission is None:
                before = clock.monotonic()
                await slots.take()
                if retrying or refusals:
                    # One event-loop turn after taking the slot, for a retry or
                    # a call woken from a budget wait, before it re-asks the
                    # budget. The order in which such calls re-ask decides which
                    # one probes a held key, and so whether one call is refused
                    # again and again (test_portal_without_counters_that_still_
                    # enforces_is_handled_by_429 fails without the turn). A first
                    # attempt skips it: a loop turn per call costs CPU.
                    await asyncio.sleep(0)
                queued.seconds += clock.monotonic() - before
                try:
                    admission = backend.admit_now(ticket, keys, rules, clock, woken_by=woken_by)
                    if admission is None:
                        admission = await backend.admit(
                            ticket, keys, rules, clock, woken_by=woken_by
                        )
                except BaseException:
                    slots.give()
                    raise
                if admission.admitted:
                    break
                # Wait without the slot: a held key must not starve the others.
                slots.give()
            if (
                limited_since is not None
                and not admission.on_change
                and admission.retry_at - clock.time()
                > self.limit_deadline(keys, limited_since) - clock.monotonic() + _HOLD_TOLERANCE
            ):
                raise HeldTooLong()
            refusals += 1
            if refusals == 1 and _log.isEnabledFor(logging.INFO):
                wait = admission.retry_at - clock.time()
                _log.info(
                    "waiting for the operating budget of %s (%s)",
                    ", ".join(sorted({key[1] for key, _ in keys})),
                    f"about {wait:.1f} s" if math.isfinite(wait) else "until a call settles",
                )
            before = clock.monotonic()
            woken_by = await backend.wait_budget(admission, clock, attempt=refusals)
            budget_waited += clock.monotonic() - before
            admission = None
        if refusals:
            self.budget_waits += 1
            self.budget_wait_seconds += budget_waited
            queued.seconds += budget_waited

    def statistics(self, portals: Iterable[str], keys: Iterable[BudgetKey]) -> SchedulerStatistics:
        """The counters, with the buckets of ``portals`` and the budgets of ``keys``."""
        backend = self._backend
        buckets: dict[str, BucketStatistics] = {}
        for portal in portals:
            bucket = backend.bucket_statistics(portal)
            if bucket is not None:
                buckets[portal] = bucket
        budgets: dict[BudgetKey, BudgetStatistics] = {}
        for key in keys:
            budget = backend.budget_statistics(key)
            if budget is not None:
                budgets[key] = budget
        return SchedulerStatistics(
            requests_sent=self.sent,
            bucket_waits=self.bucket_waits,
            bucket_wait_seconds=self.bucket_wait_seconds,
            budget_waits=self.budget_waits,
            budget_wait_seconds=self.budget_wait_seconds,
            retries=MappingProxyType(dict(self.retries)),
            rate_limit_hits=self.rate_limit_hits,
            operating_limit_hits=self.operating_limit_hits,
            in_flight=self.in_flight,
            buckets=MappingProxyType(buckets),
            budgets=MappingProxyType(budgets),
        )
