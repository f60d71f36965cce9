"""The bulk result types and options: a leaf that imports only the models.

``errors.py`` imports :class:`BulkReport` from here, so nothing in this module
may import the rest of the package at run time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

from ..models import LegacyTaskResult, NewResult, TaskResult

if TYPE_CHECKING:
    from .._scheduler.limits import Limits
    from .._scheduler.stats import SchedulerStatistics
    from ..errors import BitrixError

__all__ = [
    "ADD",
    "LIST",
    "MAX_BATCH",
    "BulkOptions",
    "BulkProgress",
    "BulkReport",
    "Outcome",
    "ProgressCallback",
    "ResultsOfTask",
    "check_options",
]

ADD = "tasks.task.result.add"
LIST = "tasks.task.result.list"
# At most 50 commands in one batch (api-facts §3.1, §3.2).
MAX_BATCH = 50


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one input item.

    ``status == "created"``: ``result`` is the new result. ``status == "failed"``:
    ``error`` says why, and nothing was created for this item.
    """

    #: The item's position in the input (0-based).
    index: int
    #: The item, as a `NewResult`.
    item: NewResult
    #: ``"created"`` or ``"failed"``.
    status: Literal["created", "failed"]
    #: The created result (``"created"`` only).
    result: TaskResult | None = None
    #: Why it failed (``"failed"`` only); nothing was created for the item.
    error: BitrixError | None = None


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """Passed to ``on_progress`` as items settle. ``total`` is None for unsized inputs."""

    #: Items settled so far, created or failed.
    done: int
    #: Of those, created.
    created: int
    #: Of those, failed.
    failed: int
    #: The input's length, or None when it has none (a generator).
    total: int | None
    #: Seconds since the job started.
    elapsed: float

    @property
    def rate(self) -> float:
        """Items settled per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[BulkProgress], Awaitable[None] | None]


class BulkOptions(TypedDict, total=False):
    """The options of a bulk import, shared by the client, the blocking facade and the CLI.

    All are optional; a misspelt name raises ``TypeError``.

    - ``batch`` (default True): up to 50 adds per request; False sends one keyed
      request per item.
    - ``concurrency``: units of work in flight (default 8 in batch mode, 16 single).
    - ``journal``: a SQLite file path; a killed import started again with it
      finishes the rest and creates nothing twice.
    - ``on_progress``: called (sync or async) with a :class:`BulkProgress` as items settle.
    - ``job_id``: the job's id, from which unkeyed items' idempotency keys derive.
    - ``verify`` (default True): ``bulk_add`` ends with a pass that finds results
      of ours created twice during the job and deletes the extra copies
      (``BulkReport.repaired``); ``bulk_add_stream`` does not run it.

    Example:
        ```python
        report = await client.bulk_add(
            rows, journal="import.sqlite", job_id="import-2026-11", on_progress=print
        )
        ```
    """

    batch: bool
    concurrency: int | None
    journal: str | os.PathLike[str] | None
    on_progress: ProgressCallback | None
    job_id: str | None
    verify: bool


def check_options(options: Mapping[str, object], where: str = "bulk_add") -> None:
    """Refuse an option the job does not know, as a misspelt keyword would be refused.

    ``**options: Unpack[BulkOptions]`` is checked by mypy only; a typo at run
    time must not be ignored silently.
    """
    for name in options:
        if name not in BulkOptions.__annotations__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


@dataclass(frozen=True, slots=True)
class BulkReport:
    """The result of :func:`bitrix_results.bulk.bulk_add`: one outcome per item, in input order.

    ``created + failed`` is the number of items; every item is in exactly one.
    """

    #: One outcome per input item, in input order.
    outcomes: list[Outcome]
    #: Items whose result exists (this run or an earlier run of the journal).
    created: int
    #: Items that failed; nothing was created for them.
    failed: int
    #: Seconds the job took.
    elapsed: float
    #: ``"batch"`` (up to 50 adds per request) or ``"single"``.
    mode: Literal["batch", "single"]
    #: The client's scheduler at the end of the job (its counters span the client's life).
    statistics: SchedulerStatistics
    #: The job's id; run again with it and the same journal to resume.
    job_id: str
    #: Of ``created``, the items whose result an earlier run of the journal created.
    created_earlier: int = 0
    #: Doubles of ours (created twice by a call the portal ran late) that the
    #: verification pass found and deleted.
    repaired: int = 0
    #: This job's HTTP requests (retries included).
    requests: int = 0
    #: 503 ``QUERY_LIMIT_EXCEEDED`` answers this job saw.
    rate_limit_hits: int = 0
    #: 429 ``OPERATION_TIME_LIMIT`` answers this job saw.
    operating_limit_hits: int = 0
    #: This job's retries by reason (``"rate_limit"``, ``"timeout"``...).
    retries: dict[str, int] = field(default_factory=dict)
    #: Seconds this job's calls waited for the bucket and the budgets, summed.
    wait_seconds: float = 0.0
    #: Rows a failed batch left absent (rolled back, or never run) that were sent
    #: again, each counted once however many times it went.
    resent: int = 0
    #: Requests carrying adds that the job sent (a batch is one; the scheduler's
    #: retries of one request are not counted again).
    add_requests: int = 0
    #: The adds those requests carried.
    add_commands: int = 0

    def ideal_seconds(self, limits: Limits) -> float:
        """The theoretical lower bound (design §4) for the requests this job sent.

        The time an ideal client would need for the requests this job actually
        sent, so ``elapsed / ideal_seconds(limits)`` is never below 1 (give the
        limits the client ran with). Two bounds hold at once and the larger is
        taken:

        - the bucket: every request that reached the portal's bucket (sent,
          minus the 503 and 429 answers and connect failures, which an ideal
          client would not have sent) is one request of it;
        - the operating budget of ``tasks.task.result.add``: the adds sent, at
          the per-add cost the scheduler learned from the portal's answers
          (unknown: the budget is taken not to bind), in requests of as many
          adds as the job's requests carried on average (rounded down).

        Both count from the first request to the admission of the last, so the
        job's own time (latency, the last answer) only adds to ``elapsed``.

        Args:
            limits: The limits the client ran with.

        Returns:
            Seconds an ideal client would have needed.

        Example:
            ```python
            report = await client.bulk_add(rows)
            print(report.elapsed / report.ideal_seconds(Limits.standard()))
            ```
        """
        from .._bound import ideal_finish_time
        from .._scheduler.limits import Limits

        refused = self.rate_limit_hits + self.operating_limit_hits + self.retries.get("connect", 0)
        admitted = max(0, self.requests - refused)
        bound = ideal_finish_time(admitted, limits)
        learned = [
            b.cost
            for (_, method), b in self.statistics.budgets.items()
            if method == ADD and b.cost is not None
        ]
        if learned and self.add_requests > 0:
            # The budget alone: a bucket that never binds.
            budget_only = Limits(
                burst=2**62,
                drain_per_second=1e18,
                operating_limit=limits.operating_limit,
                operating_window=limits.operating_window,
            )
            per_request = max(1, self.add_commands // self.add_requests)
            bound = max(
                bound,
                ideal_finish_time(
                    self.add_requests,
                    budget_only,
                    cost=min(learned),
                    units_per_request=per_request,
                ),
            )
        return bound

    def failures_by_reason(self) -> dict[str, int]:
        """Failed items counted by error class name (``InvalidInputError``, ...)."""
        reasons = Counter(type(o.error).__name__ for o in self.outcomes if o.status == "failed")
        return dict(reasons.most_common())

    @property
    def rate(self) -> float:
        """Items settled per second over the whole job."""
        return len(self.outcomes) / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ResultsOfTask:
    """The results of one task from ``results_of_many``, or why they could not be read."""

    #: The task.
    task_id: int
    #: Its results (`TaskResult`s for v3, `LegacyTaskResult`s for v2); empty on error.
    results: list[TaskResult] | list[LegacyTaskResult]
    #: Why the task's results could not be read (``NotFoundError``...), or None.
    error: BitrixError | None = None
