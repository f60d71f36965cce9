"""``bitrix-results``: the command line, a thin shell over the public API.

The webhook comes from ``--webhook`` or ``BITRIX_WEBHOOK_URL`` and is never
printed: it holds the webhook's secret code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._scheduler import Limits
from ._scheduler.bound import ideal_finish_time
from .bulk import MAX_BATCH, BulkReport, Outcome
from .bulk import Progress as BulkProgress
from .client import ResultsClient
from .errors import BitrixError, InvalidInputError
from .models import NewResult

__all__ = ["main"]

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


def _limits(args: argparse.Namespace) -> Limits:
    limits = Limits.enterprise() if args.plan == "enterprise" else Limits.standard()
    return limits.scaled(args.scale) if args.scale != 1 else limits


def _client(args: argparse.Namespace) -> ResultsClient:
    url = args.webhook or os.environ.get("BITRIX_WEBHOOK_URL")
    if not url:
        raise InvalidInputError("webhook", "give --webhook or set BITRIX_WEBHOOK_URL")
    return ResultsClient.from_webhook(url, limits=_limits(args))


def _print_json(value: object) -> None:
    _out.print(msgspec.json.encode(value).decode(), soft_wrap=True)


# -- reading import files -----------------------------------------------------------


class _Rows:
    """Items read lazily from a JSONL or CSV file (``task_id,text[,key]``).

    Rows that cannot be read at all are kept aside with their line number and
    counted as failures; they are never silently dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable: list[tuple[int, str]] = []
        self.csv = path.suffix.lower() == ".csv"

    def count(self) -> int:
        return sum(1 for _ in self._raw())

    def _raw(self) -> Iterator[tuple[int, Any]]:
        with self.path.open(newline="", encoding="utf-8") as fh:
            if self.csv:
                reader = csv.DictReader(fh)
                missing = {"task_id", "text"} - set(reader.fieldnames or ())
                if missing:
                    raise InvalidInputError(
                        "file", f"CSV header must name task_id and text (missing {sorted(missing)})"
                    )
                for row in reader:
                    yield reader.line_num, row
            else:
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        yield number, line

    def __iter__(self) -> Iterator[NewResult]:
        for number, raw in self._raw():
            try:
                row = raw if self.csv else json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("a row must be an object with task_id and text")
            except ValueError as exc:
                self.unreadable.append((number, str(exc)))
                continue
            task_id = row.get("task_id")
            if isinstance(task_id, str) and task_id.strip().isdigit():
                task_id = int(task_id)
            key = row.get("key") or None
            yield NewResult(task_id, row.get("text"), str(key) if key is not None else None)  # type: ignore[arg-type]


# -- summaries ---------------------------------------------------------------------------


def _bound(report: BulkReport, limits: Limits) -> float:
    """The ideal time for the requests this import needed (SPEC §4)."""
    sent = sum(1 for o in report.outcomes if not isinstance(o.error, InvalidInputError))
    requests = math.ceil(sent / MAX_BATCH) if report.mode == "batch" else sent
    return ideal_finish_time(requests, limits)


def _summary(report: BulkReport, limits: Limits, unreadable: int, title: str) -> Table:
    bound = _bound(report, limits)
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("mode", report.mode)
    table.add_row("created", str(report.created))
    failures = report.failures_by_reason()
    if unreadable:
        failures["unreadable row"] = unreadable
    table.add_row(
        "failed",
        str(report.failed + unreadable)
        + (
            ""
            if not failures
            else "  (" + ", ".join(f"{k}: {v}" for k, v in failures.items()) + ")"
        ),
    )
    table.add_row("elapsed", f"{report.elapsed:.2f} s")
    table.add_row("rate", f"{report.rate:.1f} items/s")
    if bound > 0:
        table.add_row("bound", f"{bound:.2f} s  (ratio {report.elapsed / bound:.3f})")
    else:
        table.add_row("bound", "0 s: the whole import fits in the request burst")
    table.add_row("requests", str(report.requests))
    table.add_row("503 / 429 seen", f"{report.rate_limit_hits} / {report.operating_limit_hits}")
    retries = ", ".join(f"{k}: {v}" for k, v in report.retries.items())
    table.add_row(
        "retries", f"{sum(report.retries.values())}" + (f"  ({retries})" if retries else "")
    )
    return table


async def _import(
    client: ResultsClient,
    rows: _Rows,
    *,
    batch: bool,
    journal: str | None,
    concurrency: int | None,
    failures: Path | None,
    show_progress: bool,
) -> BulkReport:
    total = rows.count()
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f}/s  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=_err,
        disable=not show_progress,
    ) as bar:
        task = bar.add_task("import", total=total, rate=0.0, failed=0)

        def progress(p: BulkProgress) -> None:
            bar.update(task, completed=p.done, rate=p.rate, failed=p.failed)

        report = await client.bulk_add(
            rows, batch=batch, journal=journal, concurrency=concurrency, on_progress=progress
        )
    if failures is not None:
        _write_failures(failures, report.outcomes, rows.unreadable)
    return report


def _write_failures(
    path: Path, outcomes: Sequence[Outcome], unreadable: list[tuple[int, str]]
) -> None:
    """Failed items as JSONL the user can fix and import again."""
    with path.open("w", encoding="utf-8") as fh:
        for o in outcomes:
            if o.status == "failed":
                row = {"task_id": o.item.task_id, "text": o.item.text, "key": o.item.key}
                row["error"] = f"{type(o.error).__name__}: {o.error}"
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for line, reason in unreadable:
            fh.write(json.dumps({"line": line, "error": f"unreadable row: {reason}"}) + "\n")


# -- commands ------------------------------------------------------------------------


async def _cmd_add(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        _print_json(await client.add(args.task_id, args.text))
    return 0


async def _cmd_update(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        _print_json(await client.update(args.result_id, args.text))
    return 0


async def _cmd_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.delete(args.result_id)
    _err.print(f"deleted result {args.result_id}")
    return 0


async def _cmd_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.legacy:
            for legacy in await client.list_legacy(args.task_id):
                _print_json(legacy)
        else:
            async for result in client.iter_results(args.task_id, status=args.status):
                _print_json(result)
    return 0


async def _cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not await anyio.Path(path).is_file():
        raise InvalidInputError("file", f"no such file: {path}")
    rows = _Rows(path)
    failures = Path(args.failures) if args.failures else path.with_suffix(".failed.jsonl")
    limits = _limits(args)
    async with _client(args) as client:
        report = await _import(
            client,
            rows,
            batch=args.batch,
            journal=args.journal,
            concurrency=args.concurrency,
            failures=failures,
            show_progress=not args.quiet,
        )
    _out.print(_summary(report, limits, len(rows.unreadable), f"import {path.name}"))
    if report.failed or rows.unreadable:
        _out.print(f"failed rows written to {failures}; fix them and import that file again")
        return 1
    failures.unlink(missing_ok=True)
    return 0


async def _cmd_export(args: argparse.Namespace) -> int:
    words = args.tasks.replace(",", " ").split() if args.tasks else []
    if args.tasks_file:
        words += (await anyio.Path(args.tasks_file).read_text()).split()
    if not words:
        raise InvalidInputError("tasks", "give --tasks 1,2,3 or --tasks-file")
    if not all(w.isdigit() and int(w) > 0 for w in words):
        raise InvalidInputError("tasks", "task ids must be positive integers")
    ids = [int(w) for w in words]
    out: IO[str]
    with contextlib.ExitStack() as stack:
        out = (
            # Written line by line like stdout: a CLI's output stream.
            stack.enter_context(open(args.output, "w", newline="", encoding="utf-8"))  # noqa: ASYNC230
            if args.output
            else sys.stdout
        )
        writer = csv.writer(out) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(["task_id", "id", "status", "author_id", "created_at", "text"])
        errors = 0
        async with _client(args) as client:
            async for done in client.results_of_many(ids, api="v2" if args.legacy else "v3"):
                if done.error is not None:
                    errors += 1
                    _err.print(f"task {done.task_id}: {done.error}")
                    continue
                for r in done.results:
                    record = msgspec.to_builtins(r)
                    if writer is not None:
                        writer.writerow(
                            [
                                done.task_id,
                                record.get("id"),
                                record.get("status"),
                                record.get("authorId", record.get("createdBy")),
                                record.get("createdAt"),
                                record.get("text"),
                            ]
                        )
                    else:
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return 1 if errors else 0


async def _cmd_demo(args: argparse.Namespace) -> int:
    from .testing import FakePortal, PortalConfig, serve_portal

    limits = (Limits.enterprise() if args.plan == "enterprise" else Limits.standard()).scaled(
        args.scale
    )
    config = PortalConfig(plan=args.plan, scale=args.scale)
    _out.print(
        f"[bold]bitrix-results demo[/]: a fake {args.plan} portal on 127.0.0.1, every limit "
        f"compressed {args.scale:g}x (bucket {limits.burst} + {limits.drain_per_second:g}/s, "
        f"budget {limits.operating_limit:g} s per {limits.operating_window:g} s)"
    )
    async with serve_portal(FakePortal(config)) as running:
        async with ResultsClient.from_webhook(running.webhook_url, limits=limits) as client:
            first = await client.add(1, "Demo: first result")
            await client.update(first.id, "Demo: first result, edited")
            listed = await client.list(1)
            await client.delete(first.id)
            _out.print(f"add/update/list/delete on task 1: ok ({len(listed)} listed)")
            with tempfile.TemporaryDirectory() as tmp:
                for batch in (False, True):
                    label = "batches of 50" if batch else "one request per result"
                    path = Path(tmp) / f"results-{'batch' if batch else 'single'}.jsonl"
                    with path.open("w") as fh:
                        for i in range(args.items):
                            row = {"task_id": 1 + i % 200, "text": f"Result #{i} ({label})"}
                            fh.write(json.dumps(row) + "\n")
                    rows = _Rows(path)
                    report = await _import(
                        client,
                        rows,
                        batch=batch,
                        journal=None,
                        concurrency=None,
                        failures=None,
                        show_progress=not args.quiet,
                    )
                    _out.print(_summary(report, limits, 0, f"{args.items} results, {label}"))
        stats = running.portal.stats()
        _out.print(
            f"portal: {stats.requests} requests, {stats.rate_limited} x 503, "
            f"{stats.operating_limited} x 429, {stats.duplicates} duplicates"
        )
    return 0


async def _cmd_emulator(args: argparse.Namespace) -> int:
    from .testing import run_emulator

    await run_emulator(host=args.host, port=args.port, plan=args.plan, scale=args.scale)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitrix-results", description="Bitrix24 task results from the command line."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--webhook", help="webhook URL (default: $BITRIX_WEBHOOK_URL)")
    common.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    common.add_argument(
        "--scale", type=float, default=1.0, help="match a time-compressed fake portal"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("add", parents=[common], help="add a result to a task")
    p.add_argument("task_id", type=int)
    p.add_argument("text")
    p.set_defaults(run=_cmd_add)
    p = sub.add_parser("update", parents=[common], help="change a result's text")
    p.add_argument("result_id", type=int)
    p.add_argument("text")
    p.set_defaults(run=_cmd_update)
    p = sub.add_parser("delete", parents=[common], help="delete a result")
    p.add_argument("result_id", type=int)
    p.set_defaults(run=_cmd_delete)
    p = sub.add_parser("list", parents=[common], help="a task's results as JSONL")
    p.add_argument("task_id", type=int)
    p.add_argument("--status", choices=("open", "closed"))
    p.add_argument("--legacy", action="store_true", help="use the REST v2 method")
    p.set_defaults(run=_cmd_list)
    p = sub.add_parser("import", parents=[common], help="add results from JSONL or CSV")
    p.add_argument("file")
    p.add_argument("--journal", help="resumable journal file (SQLite)")
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--failures", help="where to write failed rows (default FILE.failed.jsonl)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_import)
    p = sub.add_parser("export", parents=[common], help="results of many tasks as JSONL/CSV")
    p.add_argument("--tasks", help="comma-separated task ids")
    p.add_argument("--tasks-file", help="a file of task ids, one per line")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--output", help="output file (default stdout)")
    p.add_argument("--legacy", action="store_true", help="use the REST v2 method")
    p.set_defaults(run=_cmd_export)
    p = sub.add_parser("demo", help="import into a built-in fake portal and show the pacing")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=float, default=100.0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_demo)
    p = sub.add_parser("emulator", help="serve a fake portal for manual testing")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8024)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=float, default=1.0)
    p.set_defaults(run=_cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = anyio.run(args.run, args)
    except BitrixError as exc:
        _err.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130
    return code
