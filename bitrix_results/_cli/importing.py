"""``bitrix-results import``: a journal by default, a probe first, a bar that says why it waits.

Re-running an interrupted import is safe without any option: the journal is
kept beside the input (``results.jsonl`` -> ``results.jsonl.journal``), so the
same command finishes the rest and creates nothing twice (design §5). Before
anything is sent, one cheap read checks that the portal answers and takes the
webhook: a wrong code or a dead portal stops the command in seconds, with the
cause, instead of failing every row.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from .._scheduler import Limits, SchedulerStatistics
from ..bulk import BulkOptions, BulkProgress, BulkReport
from ..client import ResultsClient
from ..errors import BulkAbortedError, InvalidInputError, JournalError, PortalError
from . import console
from .exits import AUTH, SOME_FAILED, describe
from .report import Counts, summary_json, summary_table, write_failures
from .rows import Rows

__all__ = [
    "ImportState",
    "default_journal",
    "failures_path",
    "import_rows",
    "probe",
    "run_import",
    "waiting_for",
    "write_demo_rows",
]

#: Unreadable rows listed on stderr one by one; the rest are only counted.
MAX_LISTED = 20


@dataclass
class ImportState:
    """What an import has done so far, for the message when it is interrupted."""

    argv: Sequence[str]
    source: Path
    journal: Path | None
    total: int = 0
    progress: BulkProgress | None = None
    started: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def resume_command(self) -> str:
        """The command to run again, the webhook's value never shown (it holds the code)."""
        words: list[str] = []
        hide = False
        for word in self.argv:
            if hide:
                words.append("$BITRIX_WEBHOOK_URL")
                hide = False
            elif word == "--webhook":
                words.append(word)
                hide = True
            elif word.startswith("--webhook="):
                words.append("--webhook=$BITRIX_WEBHOOK_URL")
            else:
                words.append(word)
        # The placeholder is left for the shell to expand: not quoted.
        text = shlex.join(["bitrix-results", *words])
        return text.replace("'$BITRIX_WEBHOOK_URL'", '"$BITRIX_WEBHOOK_URL"').replace(
            "'--webhook=$BITRIX_WEBHOOK_URL'", '--webhook="$BITRIX_WEBHOOK_URL"'
        )

    def interrupted(self) -> str:
        """What was done when Ctrl-C came, and how to go on."""
        if not self.started:
            return "interrupted before anything was sent"
        p = self.progress
        done = (
            f"{p.done} of {self.total} rows settled ({p.created} created, {p.failed} failed)"
            if p is not None
            else f"0 of {self.total} rows settled"
        )
        if self.journal is None:
            return (
                f"interrupted: {done}. No journal was kept (--no-journal): running the "
                "same command again would send every row again, creating duplicates."
            )
        return (
            f"interrupted: {done}; the journal {self.journal} records them.\n"
            f"Resume (nothing is created twice): {self.resume_command()}"
        )


def default_journal(source: Path) -> Path:
    """``X.jsonl`` -> ``X.jsonl.journal``: beside the input, named after all of it."""
    return source.with_name(source.name + ".journal")


def failures_path(source: Path) -> Path:
    """``X.csv`` -> ``X.csv.failed.jsonl``: X.csv and X.jsonl do not overwrite each other."""
    return source.with_name(source.name + ".failed.jsonl")


# -- waiting, as the bar shows it ---------------------------------------------------------


def waiting_for(stats: SchedulerStatistics, limits: Limits, now: float) -> str:
    """What the import is waiting for right now, in words, or ``""``.

    A method whose operating budget is held (after a 429) or spent waits until
    the portal's oldest basket expires (api-facts §2.2); a full request bucket
    only costs a fraction of a second per request, so it is named but not timed.
    """
    for (_, method), budget in stats.budgets.items():
        until = budget.held_until
        if until is None or until <= now:
            spent = budget.operating is not None and budget.operating >= limits.operating_limit
            until = budget.reset_at if spent else None
        if until is not None and until > now:
            clock = time.strftime("%H:%M:%S", time.localtime(until))
            short = method.removeprefix("tasks.task.")
            return (
                f"waiting for the operating budget of {short} until {clock} ({until - now:.0f} s)"
            )
    bucket = stats.bucket
    if bucket is not None and bucket.level >= bucket.capacity - 1:
        return f"pacing: request bucket full, {bucket.drain_per_second:g} requests/s"
    return ""


class _WaitColumn(ProgressColumn):
    """Read on every refresh of the bar, so it moves while no row settles."""

    def __init__(self, client: ResultsClient, limits: Limits) -> None:
        super().__init__()
        self._client = client
        self._limits = limits

    def render(self, task: object) -> Text:
        text = waiting_for(self._client.statistics(), self._limits, time.time())
        return Text(text, style="yellow")


# -- the import ------------------------------------------------------------------------------


async def probe(client: ResultsClient, task_id: int) -> None:
    """One read before the import: the portal is there and takes the webhook.

    A refusal for the task itself (no access, no such task) still proves both,
    so only authentication and transport errors stop the import here.
    """
    try:
        await client.list(task_id, limit=1)
    except PortalError as exc:
        if describe(exc)[0] != AUTH:
            return
        raise


async def import_rows(
    client: ResultsClient,
    rows: Rows,
    *,
    total: int,
    options: BulkOptions,
    limits: Limits,
    show_progress: bool,
    state: ImportState | None = None,
) -> BulkReport:
    """Run the bulk import with a progress bar on stderr; the report."""
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f}/s  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        _WaitColumn(client, limits),
        console=console.err,
        disable=not show_progress,
    ) as bar:
        task = bar.add_task("import", total=total, rate=0.0, failed=0)

        def progress(p: BulkProgress) -> None:
            if state is not None:
                state.progress = p
            # Unreadable rows count as failed here as in the summary.
            bar.update(task, completed=p.done, rate=p.rate, failed=p.failed + len(rows.unreadable))

        # The bar is the CLI's own progress: it replaces any callback in ``options``.
        with_bar = options.copy()
        with_bar["on_progress"] = progress
        if state is not None:
            state.started = True
        report: BulkReport | None = None
        try:
            report = await client.bulk_add(rows, **with_bar)
        except BulkAbortedError as exc:
            report = exc.report
            raise
        finally:
            if report is not None:
                # The last callback may precede the last outcomes: end on the report's.
                bar.update(
                    task,
                    completed=len(report.outcomes),
                    failed=report.failed + len(rows.unreadable),
                )
    return report


def _list_unreadable(source: Path, unreadable: Sequence[tuple[int, str, str]]) -> None:
    """The rows that could not be read, on stderr: the first few, then a count."""
    for line, reason, _ in unreadable[:MAX_LISTED]:
        console.err.print(
            escape(f"{source.name} line {line}: unreadable row: {reason}"), soft_wrap=True
        )
    if len(unreadable) > MAX_LISTED:
        console.err.print(f"... and {len(unreadable) - MAX_LISTED} more unreadable rows")


def _first_task_id(rows: Rows) -> int:
    """The probe's task: the file's first valid task id (any task proves the webhook)."""
    items = iter(rows)
    try:
        for item in items:
            task_id: object = item.task_id
            if isinstance(task_id, int) and not isinstance(task_id, bool) and task_id > 0:
                return task_id
    finally:
        items.close()  # type: ignore[attr-defined]
    return 1


async def run_import(
    args: argparse.Namespace,
    *,
    limits: Limits,
    client: ResultsClient,
    probe_client: ResultsClient,
    state: ImportState,
) -> int:
    path = state.source
    rows = Rows(path)
    failures = Path(args.failures) if args.failures else failures_path(path)
    if await anyio.Path(failures).exists() and await anyio.Path(failures).samefile(path):
        raise InvalidInputError("failures", "must not be the file being imported")
    # The whole file is read once before anything is sent: an undecodable or
    # malformed file stops here, with nothing created.
    state.total = total = rows.count()
    await probe(probe_client, _first_task_id(rows))
    options = BulkOptions(
        batch=args.batch,
        journal=None if state.journal is None else str(state.journal),
        concurrency=args.concurrency,
    )
    aborted: BulkAbortedError | None = None
    try:
        report = await import_rows(
            client,
            rows,
            total=total,
            options=options,
            limits=limits,
            show_progress=not args.quiet and not args.json,
            state=state,
        )
    except BulkAbortedError as exc:
        if isinstance(exc.cause, JournalError):
            # Another input, portal or webhook than the journal's: a usage error,
            # said as such (exits.describe), not as a stopped import.
            raise exc.cause from None
        aborted = exc
        report = exc.report
    counts = Counts.of(report, limits, unreadable=len(rows.unreadable), total=total)
    reasons = report.failures_by_reason()
    if report.failed or rows.unreadable:
        write_failures(failures, report.outcomes, rows.unreadable)
    else:
        await anyio.Path(failures).unlink(missing_ok=True)  # stale, from an earlier run
    if args.json:
        summary = summary_json(
            counts,
            reasons,
            file=str(path),
            total=total + len(rows.unreadable),
            journal=None if state.journal is None else str(state.journal),
            failures_file=str(failures) if report.failed or rows.unreadable else None,
        )
        if aborted is not None:
            summary["stopped"] = describe(aborted)[1]
        console.print_json(summary)
    else:
        _list_unreadable(path, rows.unreadable)
        console.out.print(summary_table(counts, reasons, f"import {path.name}"))
        if counts.created_earlier and state.journal is not None:
            console.out.print(
                escape(
                    f"{counts.created_earlier} rows were created by an earlier run of this "
                    f"import (journal {state.journal}) and were not sent again"
                ),
                soft_wrap=True,
            )
        if report.failed or rows.unreadable:
            console.out.print(
                escape(f"failed rows written to {failures}; fix them and import that file again"),
                soft_wrap=True,
            )
    if aborted is not None:
        raise aborted
    return SOME_FAILED if report.failed or rows.unreadable else 0


def write_demo_rows(path: Path, items: int, label: str) -> None:
    with path.open("w") as fh:
        for i in range(items):
            fh.write(json.dumps({"task_id": 1 + i % 200, "text": f"Result #{i} ({label})"}) + "\n")
