"""Bulk import and bulk read: many results at the portal's bound, every outcome exact.

``bulk_add`` / ``bulk_add_stream`` add any number of results with one
:class:`Outcome` per input item: ``created`` (with the result) or ``failed``
(with a typed error and the guarantee that nothing was created).

How "nothing lost, nothing doubled" holds (design §2.3, §2.4):

- **Single mode** sends each item as its own ``tasks.task.result.add`` with an
  Idempotency-Key derived from the item (its ``key``, or the job id and its
  position). A retry, or a resumed run, carries the same key, so the portal
  replays the stored answer instead of creating the result again (api-facts §4.1).
- **Batch mode** sends up to 50 adds in one REST 3.0 batch (one request for the
  bucket, api-facts §3.2). No key protects the commands inside a batch, and a
  failed batch may have rolled back or left earlier commands executed. So when
  a batch fails or its answer is lost, the job *reconciles*: it freezes the
  batch's tasks (no other request of the job touches them), lists their results
  newer than the batch's watermark (the largest result id the job had seen
  before sending it; result ids only grow, so anything the batch created is
  above it), matches them by text against the batch's items, skipping results
  the job already owns, and re-sends the unmatched items: as a batch when only
  the answer was lost; split in halves (recursively) when the portal refused a
  command, so a bad row fails alone at O(log n) extra requests.
  The first item of a batch-mode job goes alone, so every batch has a watermark.
- A ``journal`` (SQLite) records each item as pending before it is sent and as
  created after; a killed run resumes from it with the same job id (so the same
  keys), reconciling batches that were in flight when it died.

The engine lives in ``bitrix_results._bulk`` and reaches the client only through
:class:`~bitrix_results._bulk.port.BulkPort`; this module is its public face.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Unpack

from ._bulk.pipeline import Job
from ._bulk.port import BulkPort
from ._bulk.read import results_of_many
from ._bulk.streams import drain, size_of
from ._bulk.types import (
    ADD,
    LIST,
    MAX_BATCH,
    BulkOptions,
    BulkProgress,
    BulkReport,
    Outcome,
    ProgressCallback,
    ResultsOfTask,
)
from .errors import BulkAbortedError
from .models import NewResult

__all__ = [
    "ADD",
    "LIST",
    "MAX_BATCH",
    "BulkOptions",
    "BulkPort",
    "BulkProgress",
    "BulkReport",
    "Outcome",
    "ProgressCallback",
    "ResultsOfTask",
    "bulk_add",
    "bulk_add_stream",
    "results_of_many",
]

Items = Iterable[NewResult | tuple[int, str]] | AsyncIterable[NewResult | tuple[int, str]]


async def bulk_add_stream(
    client: BulkPort, items: Items, **options: Unpack[BulkOptions]
) -> AsyncIterator[Outcome]:
    """Add results from ``items``, yielding one :class:`Outcome` per item as it settles.

    ``items`` is read lazily with backpressure: at most a few units of work are
    buffered, so a stream of millions runs in bounded memory. Outcomes come in the
    order they settle (``Outcome.index`` is the input position). Stopping early
    (close the iterator, e.g. with ``contextlib.aclosing``) cancels the work in
    flight; with a ``journal`` a later run settles it exactly. The verification
    pass of `bulk_add` does not run here.

    Args:
        client: A `ResultsClient` (anything with the bulk engine's port).
        items: ``(task_id, text)`` pairs or `NewResult`s, sync or async iterable.
        **options: The `BulkOptions`.

    Yields:
        One `Outcome` per item, as it settles.

    Raises:
        InvalidInputError: An option's value is invalid; nothing was sent. (An item
            with a bad task id or text becomes a failed `Outcome`.)
        TypeError: An option's name is unknown, or an item is not a pair or a
            `NewResult`.
        JournalError: The journal cannot be used.
        BitrixError: An error that stops the whole job (the shared limiter
            unreachable, say), after the work in flight has settled.

    Example:
        ```python
        async with contextlib.aclosing(client.bulk_add_stream(rows)) as outcomes:
            async for outcome in outcomes:
                if outcome.status == "failed":
                    print(outcome.index, outcome.error)
        ```
    """
    job = Job(client, options, total=size_of(items), where="bulk_add_stream")
    # Closing this generator must close the inner one too, at once, not at GC.
    async with contextlib.aclosing(drain(functools.partial(job.run, items), MAX_BATCH * 2)) as outs:
        async for outcome in outs:
            yield outcome


async def bulk_add(client: BulkPort, items: Items, **options: Unpack[BulkOptions]) -> BulkReport:
    """Add results from ``items`` and report every outcome, in input order.

    ``batch=True`` (the default) sends up to 50 adds per request: when the
    request bucket binds that is up to 50 times faster than ``batch=False``,
    which sends one keyed request per item (see docs/bulk.md for measurements).
    ``journal`` is a file path: a killed import started again with the same
    journal finishes the rest and creates nothing twice. A failed item does not
    stop the job: it becomes a failed `Outcome`, and nothing was created for it.

    Args:
        client: A `ResultsClient` (anything with the bulk engine's port).
        items: ``(task_id, text)`` pairs or `NewResult`s, sync or async iterable.
        **options: The `BulkOptions`.

    Returns:
        The report: one `Outcome` per item in input order, counts, and this job's
            share of the requests, limit errors, retries and waits.

    Raises:
        InvalidInputError: An option's value is invalid; nothing was sent.
        TypeError: An option's name is unknown.
        JournalError: The journal cannot be used (another job's, unreadable...);
            nothing was sent.
        BulkAbortedError: The job stopped before its input was done (an item that is
            not a pair or a `NewResult`, the shared limiter unreachable...); its
            ``report`` holds every item settled before, and ``cause`` the error.

    Example:
        ```python
        report = await bulk_add(client, rows, journal="import.sqlite")
        print(report.created, report.failed, report.failures_by_reason())
        ```
    """
    started = time.monotonic()
    before = client.statistics()
    job = Job(client, options, total=size_of(items))
    slots: dict[int, Outcome] = {}
    aborted: Exception | None = None
    try:
        async with contextlib.aclosing(
            drain(functools.partial(job.run, items), MAX_BATCH * 2)
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
        mode="batch" if job.batch else "single",
        statistics=after,
        job_id=job.job_id,
        created_earlier=job.created_earlier,
        repaired=job.repaired,
        requests=after.requests_sent - before.requests_sent,
        rate_limit_hits=after.rate_limit_hits - before.rate_limit_hits,
        operating_limit_hits=after.operating_limit_hits - before.operating_limit_hits,
        retries=retries,
        wait_seconds=(after.bucket_wait_seconds + after.budget_wait_seconds)
        - (before.bucket_wait_seconds + before.budget_wait_seconds),
        resent=job.delivery.resent,
        add_requests=job.delivery.add_requests,
        add_commands=job.delivery.add_commands,
    )
    if aborted is not None:
        raise BulkAbortedError(report, aborted) from aborted
    return report
