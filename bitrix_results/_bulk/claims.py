"""What the job owns: entries and their keys, the watermark, claimed ids, journal writes.

A batch whose answer is lost is settled by matching the task's results above
the batch's watermark against its items (see ``reconcile.py``). That only works
if the job knows which results are already its own: the *claimed* ids. They are
kept while a reconciliation might need them and pruned after, so a stream of
millions stays in bounded memory.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec

from .._transport.codec import decode_result, encode
from ..errors import BitrixError, JournalError
from ..models import NewResult, TaskResult
from .journal import MAX_ID, Journal, JournalEntry
from .types import ADD, Outcome

__all__ = ["PRUNE_AT", "Claims", "Entry", "digest", "key_for"]

# Claimed result ids are kept only while a reconciliation might need them; the set
# is pruned when it grows past this many entries (bounded memory on long streams).
PRUNE_AT = 20_000


@dataclass(slots=True, eq=False)
class Entry:
    """One valid input item on its way: its position, its key and its fingerprint."""

    index: int
    item: NewResult
    key: str
    digest: str


def digest(item: NewResult) -> str:
    """The journal's fingerprint of an item: a resumed run must feed the same items."""
    raw = f"{item.task_id}\x00{item.key or ''}\x00{item.text}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def key_for(item: NewResult, job_id: str, index: int) -> str:
    """The Idempotency-Key of an item: from its own ``key``, else from the job and position.

    Both are the same in a resumed run, so a re-send is replayed (api-facts §4.1).
    """
    if item.key is not None:
        return "br-k-" + hashlib.sha256(item.key.encode()).hexdigest()[:40]
    return f"br-{job_id}-{index}"


class Claims:
    """The watermark, the claimed result ids, and the journal's view of both.

    The watermark is the largest result id seen in an answer: every result
    created later has a larger id, which is what lets a reconciliation ignore
    older results. A unit registers the watermark it was sent at with
    :meth:`holding`; claimed ids above the lowest such watermark are never pruned.
    """

    def __init__(
        self, journal: Journal | None = None, *, prune_at: int = PRUNE_AT, track: bool = False
    ) -> None:
        self.journal = journal
        self.prune_at = prune_at
        self.watermark = journal.max_result_id() if journal is not None else 0
        self.claimed: set[int] = set()
        self.unit_watermarks: Counter[int] = Counter()
        #: The client's own user id, learnt from the author of a result the portal
        #: answered one of our adds with (None until then, or if it never says).
        self.author_id: int | None = None
        #: With ``track``: the lowest watermark any unit touching a task was sent
        #: at, per task (what the verification pass reads above).
        self.touched: dict[int, int] | None = {} if track else None

    def learn_author(self, result: TaskResult) -> None:
        """Take the author of a result that is certainly ours as the client's user id."""
        if self.author_id is None and result.author_id is not None:
            self.author_id = result.author_id

    def ours(self, result: TaskResult) -> bool:
        """Whether ``result`` may be ours by its author: False only when both are
        known and differ (a portal that omits ``authorId`` cannot narrow a match)."""
        return self.author_id is None or result.author_id in (None, self.author_id)

    def created(
        self, pairs: list[tuple[Entry, TaskResult]], *, answered: bool = True
    ) -> list[Outcome]:
        """Claim the results of ``pairs``, journal them, and report them created.

        ``answered``: the portal returned these results to our own adds (so their
        author is the client's user); False for results matched by reconciliation.
        """
        for _, result in pairs:
            self.claimed.add(result.id)
            if result.id <= MAX_ID:
                # An id past 64 bits is no real id order: it must not become
                # the watermark every later result would fall below.
                self.watermark = max(self.watermark, result.id)
            if answered:
                self.learn_author(result)
        if self.journal is not None:
            self.journal.mark_created(
                [(e.index, e.item.task_id, e.digest, r.id, encode(r)) for e, r in pairs]
            )
        self.prune()
        return [Outcome(e.index, e.item, "created", result=r) for e, r in pairs]

    def failed(self, pairs: list[tuple[Entry, BitrixError]]) -> list[Outcome]:
        """Report ``pairs`` failed; nothing of theirs exists, so the journal forgets them."""
        if self.journal is not None:
            self.journal.forget([e.index for e, _ in pairs])
        return [Outcome(e.index, e.item, "failed", error=err) for e, err in pairs]

    def pending(self, entries: list[Entry], *, batched: bool, watermark: int) -> None:
        """Journal ``entries`` as about to be sent at ``watermark`` (before the request)."""
        if self.touched is not None:
            for e in entries:
                task_id = e.item.task_id
                self.touched[task_id] = min(self.touched.get(task_id, watermark), watermark)
        if self.journal is not None:
            rows = [(e.index, e.item.task_id, e.digest) for e in entries]
            self.journal.mark_pending(rows, batched=batched, watermark=watermark)

    def owned(self, task_id: int, above: int) -> set[int]:
        """Result ids of ``task_id`` above ``above`` that this job (or its earlier run) owns."""
        if self.journal is None:
            return self.claimed
        return self.claimed | self.journal.claimed_ids(task_id, above)

    def journaled(self, entry: Entry) -> Outcome | JournalEntry | None:
        """What the journal says about ``entry``.

        An :class:`Outcome` when it was created in an earlier run (its result is
        claimed again), the pending row (``batched``, ``watermark``) when it may
        have been sent, None when it has no row for it or the item failed (it
        is sent again). Raises :class:`JournalError` (``field="input"``) when
        the journal's row is of another item.
        """
        if self.journal is None:
            return None
        row = self.journal.lookup(entry.index)
        if row is None:
            return None
        if row.text_digest != entry.digest:
            raise JournalError(
                self.journal.path,
                f"holds another item at position {entry.index}: resume it with the same input",
                field="input",
            )
        if row.status == "failed":
            return None
        if row.status == "created" and row.result is not None:
            result = decode_result(msgspec.Raw(row.result), TaskResult, method=ADD)
            self.claimed.add(result.id)
            # Created for this credential by an earlier run (the journal is bound to it).
            self.learn_author(result)
            return Outcome(entry.index, entry.item, "created", result=result)
        return row

    def prune(self) -> None:
        """Forget claimed ids no reconciliation can need: those at or below the
        lowest watermark of any unit still in flight."""
        if len(self.claimed) < self.prune_at:
            return
        floor = min(self.unit_watermarks, default=self.watermark)
        self.claimed = {i for i in self.claimed if i > floor}

    @contextmanager
    def holding(self, mark: int) -> Iterator[None]:
        """Keep the claimed ids above ``mark`` while a unit sent at it may still
        reconcile: until the unit is settled, not only while it is on the wire."""
        self.unit_watermarks[mark] += 1
        try:
            yield
        finally:
            self.unit_watermarks[mark] -= 1
            if not self.unit_watermarks[mark]:
                del self.unit_watermarks[mark]
