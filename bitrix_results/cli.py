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
import re
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._bound import ideal_finish_time
from ._scheduler import Limits
from .bulk import ADD, MAX_BATCH, BulkOptions, BulkProgress, BulkReport, Outcome
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

# An integer as a CSV cell or a JSON string holds it: ASCII digits only ("²" is a
# digit to str.isdigit but not to int).
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
#: Unreadable rows listed on stderr one by one; the rest are only counted.
_MAX_LISTED = 20


class _Rows:
    """Items read lazily from a JSONL or CSV file (``task_id,text[,key]``).

    Both are read as UTF-8, with or without the byte-order mark Excel writes.
    Rows that cannot be read at all (not JSON, not an object, a CSV row with
    more or fewer fields than the header) are kept aside with their line number
    and counted as failures; they are never silently dropped or truncated. A
    file that is not UTF-8 text, or not CSV at all, is an error for the whole
    file, found by :meth:`count` before anything is sent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable: list[tuple[int, str]] = []
        self.csv = path.suffix.lower() == ".csv"

    def count(self) -> int:
        """The number of readable rows; reads the whole file, so it finds file errors."""
        return sum(1 for _, row in self._records() if not isinstance(row, str))

    def _records(self) -> Iterator[tuple[int, dict[str, Any] | str]]:
        """``(line, row)`` for every non-blank row; ``row`` is the reason if unreadable."""
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                yield from self._csv(fh) if self.csv else self._jsonl(fh)
        except UnicodeDecodeError:
            raise InvalidInputError(
                "file", f"{self.path} is not UTF-8 text ({_first_bad_byte(self.path)})"
            ) from None
        except OSError as exc:
            raise InvalidInputError("file", f"cannot read {self.path}: {_os_reason(exc)}") from None

    def _jsonl(self, fh: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield number, f"not JSON ({exc})"
                continue
            if isinstance(row, dict):
                yield number, row
            else:
                yield (
                    number,
                    f"a row must be a JSON object with task_id and text, got {type(row).__name__}",
                )

    def _csv(self, fh: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            names = [name.strip() for name in header or ()]
            missing = [name for name in ("task_id", "text") if name not in names]
            if missing:
                raise InvalidInputError(
                    "file", f"CSV header must name task_id and text (missing {missing})"
                )
            if len(set(names)) != len(names):
                raise InvalidInputError("file", f"CSV header names a column twice: {names}")
            while True:
                # A quoted field may span lines: a row starts after the previous one.
                number = reader.line_num + 1
                fields = next(reader, None)
                if fields is None:
                    return
                if not any(field.strip() for field in fields):
                    continue  # a blank line, or a row of empty cells
                if len(fields) != len(names):
                    yield (
                        number,
                        f"{len(fields)} fields where the header has {len(names)} "
                        f"({', '.join(names)})",
                    )
                    continue
                yield number, dict(zip(names, fields, strict=True))
        except csv.Error as exc:
            raise InvalidInputError(
                "file", f"{self.path} line {reader.line_num} is not valid CSV: {exc}"
            ) from None

    def __iter__(self) -> Iterator[NewResult]:
        self.unreadable = []
        for number, row in self._records():
            if isinstance(row, str):
                self.unreadable.append((number, row))
                continue
            task_id = row.get("task_id")
            if isinstance(task_id, str) and _INT.fullmatch(task_id):
                task_id = int(task_id)
            key = row.get("key")
            if key == "":
                key = None
            elif isinstance(key, int) and not isinstance(key, bool):
                key = str(key)
            # Wrong types go through as they are: the bulk checks name the field.
            yield NewResult(task_id, row.get("text"), key)  # type: ignore[arg-type]


def _first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8, as ``line N: byte 0xE9``."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: byte {raw[exc.start]:#04x}; save it as UTF-8"
    return "save it as UTF-8"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# -- summaries ---------------------------------------------------------------------------


def _bound(report: BulkReport, limits: Limits) -> float:
    """The ideal time for the requests this import needed (SPEC §4).

    Batch mode sends its first item alone (its answer gives the job a
    watermark), then batches of 50. The cost per add is what the scheduler
    learned from the portal's ``time.operating``; unknown, the budget is
    taken not to bind.
    """
    sent = sum(1 for o in report.outcomes if not isinstance(o.error, InvalidInputError))
    learned = [
        b.cost
        for (_, method), b in report.statistics.budgets.items()
        if method == ADD and b.cost is not None
    ]
    cost = max(learned) if learned else None
    if report.mode == "single" or sent <= 1:
        return ideal_finish_time(sent, limits, cost=cost)
    batches = 1 + math.ceil((sent - 1) / MAX_BATCH)
    return ideal_finish_time(batches, limits, cost=cost, units_per_request=MAX_BATCH)


def _summary(report: BulkReport, limits: Limits, unreadable: int, title: str) -> Table:
    bound = _bound(report, limits)
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("mode", report.mode)
    table.add_row("created", str(report.created))
    if report.created_earlier:
        # A resumed journal: these were created by an earlier run, not sent now.
        table.add_row("created earlier", f"{report.created_earlier} (from the journal)")
    if report.repaired:
        table.add_row("repaired", f"{report.repaired} doubles deleted")
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
        table.add_row("bound", "0 s: the whole import fits in the portal's burst and budget")
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
    total: int,
    options: BulkOptions,
    failures: Path | None,
    show_progress: bool,
) -> BulkReport:
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

        # The bar is the CLI's own progress: it replaces any callback in ``options``.
        with_bar = options.copy()
        with_bar["on_progress"] = progress
        report = await client.bulk_add(rows, **with_bar)
    if failures is not None:
        if report.failed:
            _write_failures(failures, report.outcomes)
        else:
            await anyio.Path(failures).unlink(missing_ok=True)  # stale, from an earlier run
    return report


def _failures_path(source: Path) -> Path:
    """``X.csv`` -> ``X.csv.failed.jsonl``: X.csv and X.jsonl do not overwrite each other."""
    return source.with_name(source.name + ".failed.jsonl")


def _write_failures(path: Path, outcomes: Sequence[Outcome]) -> None:
    """Failed items as JSONL the user can fix and import again.

    Each line is an importable row (``task_id``, ``text``, ``key``) plus an
    ``error`` field, which the importer ignores.
    """
    with path.open("w", encoding="utf-8") as fh:
        for o in outcomes:
            if o.status == "failed":
                row = {
                    "task_id": o.item.task_id,
                    "text": o.item.text,
                    "key": o.item.key,
                    "error": f"{type(o.error).__name__}: {o.error}",
                }
                fh.write(json.dumps(row, ensure_ascii=False, default=repr) + "\n")


def _list_unreadable(source: Path, unreadable: Sequence[tuple[int, str]]) -> None:
    """The rows that could not be read, on stderr: the first few, then a count."""
    for line, reason in unreadable[:_MAX_LISTED]:
        _err.print(escape(f"{source.name} line {line}: unreadable row: {reason}"), soft_wrap=True)
    if len(unreadable) > _MAX_LISTED:
        _err.print(f"... and {len(unreadable) - _MAX_LISTED} more unreadable rows")


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
    if not await anyio.Path(path).exists():
        raise InvalidInputError("file", f"no such file: {path}")
    if not await anyio.Path(path).is_file():
        raise InvalidInputError("file", f"not a file: {path}")
    rows = _Rows(path)
    failures = Path(args.failures) if args.failures else _failures_path(path)
    if await anyio.Path(failures).exists() and await anyio.Path(failures).samefile(path):
        raise InvalidInputError("failures", "must not be the file being imported")
    limits = _limits(args)
    # The whole file is read once before anything is sent: an undecodable or
    # malformed file stops here, with nothing created.
    total = rows.count()
    async with _client(args) as client:
        report = await _import(
            client,
            rows,
            total=total,
            options=BulkOptions(
                batch=args.batch, journal=args.journal, concurrency=args.concurrency
            ),
            failures=failures,
            show_progress=not args.quiet,
        )
    _list_unreadable(path, rows.unreadable)
    _out.print(_summary(report, limits, len(rows.unreadable), f"import {path.name}"))
    if report.failed:
        _out.print(
            escape(f"failed rows written to {failures}; fix them and import that file again"),
            soft_wrap=True,
        )
    if rows.unreadable:
        _out.print(
            escape(
                f"{len(rows.unreadable)} unreadable rows of {path.name} were not imported "
                "(listed on stderr); fix them and import them again"
            ),
            soft_wrap=True,
        )
    return 1 if report.failed or rows.unreadable else 0


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
                        total=rows.count(),
                        options=BulkOptions(batch=batch),
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


def _scale(text: str) -> float:
    """``--scale``: a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitrix-results", description="Bitrix24 task results from the command line."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--webhook", help="webhook URL (default: $BITRIX_WEBHOOK_URL)")
    common.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    common.add_argument(
        "--scale", type=_scale, default=1.0, help="match a time-compressed fake portal"
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
    p.add_argument("--concurrency", type=_positive_int)
    p.add_argument(
        "--failures",
        help="where to write failed rows (default FILE.failed.jsonl: data.csv.failed.jsonl)",
    )
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
    p.add_argument("--items", type=_positive_int, default=2000)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=_scale, default=100.0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_demo)
    p = sub.add_parser("emulator", help="serve a fake portal for manual testing")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8024)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=_scale, default=1.0)
    p.set_defaults(run=_cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status: 0 ok, 1 some items failed, 2 an error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        # argparse has printed the usage and an ``error: ...`` line (or the help).
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = anyio.run(args.run, args)
    except BitrixError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{_os_reason(exc)}{where}")
        return 2
    except sqlite3.Error as exc:
        # The journal is the only SQLite file the CLI opens.
        _error(f"journal: {exc}")
        return 2
    except ValueError as exc:
        # Bad input found below the CLI: a journal of another input, a number out of range.
        _error(str(exc) or type(exc).__name__)
        return 2
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130
    return code


def _error(message: str) -> None:
    _err.print("[red]error:[/] " + escape(message), soft_wrap=True)
