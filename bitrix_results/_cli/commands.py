"""The small commands (add, update, delete, list, export, demo, emulator) and the client."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
from rich.markup import escape

from .._options import ClientOptions
from .._scheduler import Limits, RetryPolicy
from ..bulk import BulkOptions, ResultsOfTask
from ..client import ResultsClient
from ..errors import InvalidInputError
from . import console
from .exits import SOME_FAILED
from .importing import import_rows, write_demo_rows
from .report import BOUND_EXPLAINED, Counts, summary_json, summary_table
from .rows import Rows

__all__ = ["PROBE_RETRY", "SHORT_RETRY", "client_of", "limits_of"]

#: One command's calls stop retrying a portal that does not answer after about
#: 10 s of failing (the default rides out minutes, right for a long-lived
#: service, wrong for someone waiting at a prompt). Waiting for the limits does
#: not count as failing, so a busy portal is still waited for.
SHORT_RETRY = RetryPolicy(max_elapsed=10.0, base_delay=0.25, max_delay=2.0)
#: The import's probe: three tries within a few seconds.
PROBE_RETRY = RetryPolicy(max_attempts=3, max_elapsed=5.0, base_delay=0.25, max_delay=1.0)


def limits_of(args: argparse.Namespace) -> Limits:
    limits = Limits.enterprise() if args.plan == "enterprise" else Limits.standard()
    return limits.scaled(args.scale) if args.scale != 1 else limits


def webhook_of(args: argparse.Namespace) -> str:
    url: str | None = args.webhook or os.environ.get("BITRIX_WEBHOOK_URL")
    if not url:
        raise InvalidInputError("webhook", "give --webhook or set BITRIX_WEBHOOK_URL")
    return url


def client_of(args: argparse.Namespace, retry: RetryPolicy | None = None) -> ResultsClient:
    options = ClientOptions(limits=limits_of(args), retry=retry)
    if args.timeout is not None:
        options["timeout"] = args.timeout
    return ResultsClient.from_webhook(webhook_of(args), **options)


async def cmd_add(args: argparse.Namespace) -> int:
    async with client_of(args, SHORT_RETRY) as client:
        console.print_json(await client.add(args.task_id, args.text))
    return 0


async def cmd_update(args: argparse.Namespace) -> int:
    async with client_of(args, SHORT_RETRY) as client:
        console.print_json(await client.update(args.result_id, args.text))
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    async with client_of(args, SHORT_RETRY) as client:
        await client.delete(args.result_id)
    if args.json:
        console.print_json({"deleted": args.result_id})
    else:
        console.err.print(f"deleted result {args.result_id}")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with client_of(args, SHORT_RETRY) as client:
        if args.legacy:
            for legacy in await client.list_legacy(args.task_id):
                console.print_json(legacy)
        else:
            async for result in client.iter_results(args.task_id, status=args.status):
                console.print_json(result)
    return 0


def _task_ids(words: list[str]) -> list[int]:
    if not words:
        raise InvalidInputError("tasks", "give --tasks 1,2,3 or --tasks-file")
    if not all(w.isdigit() and int(w) > 0 for w in words):
        raise InvalidInputError("tasks", "task ids must be positive integers")
    # Each task once, in the order first given: ``--tasks 42,43,42`` is 42 then 43.
    return list(dict.fromkeys(int(w) for w in words))


def _csv_row(task_id: int, record: dict[str, Any]) -> list[object]:
    return [
        task_id,
        record.get("id"),
        record.get("status"),
        record.get("authorId", record.get("createdBy")),
        record.get("createdAt"),
        record.get("text"),
    ]


async def _in_order(
    client: ResultsClient, ids: list[int], api: str
) -> AsyncIterator[ResultsOfTask]:
    """``results_of_many`` in the order the tasks were given (it yields them as they finish)."""
    waiting: dict[int, ResultsOfTask] = {}
    position = 0
    async for done in client.results_of_many(ids, api="v2" if api == "v2" else "v3"):
        waiting[done.task_id] = done
        while position < len(ids) and ids[position] in waiting:
            yield waiting.pop(ids[position])
            position += 1


async def cmd_export(args: argparse.Namespace) -> int:
    words = args.tasks.replace(",", " ").split() if args.tasks else []
    if args.tasks_file:
        words += (await anyio.Path(args.tasks_file).read_text()).split()
    ids = _task_ids(words)
    errors: dict[int, str] = {}
    exported = 0
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
            # ``task_id`` first, as ``import`` reads it: an export imports unchanged.
            writer.writerow(["task_id", "id", "status", "author_id", "created_at", "text"])
        async with client_of(args, SHORT_RETRY) as client:
            async for done in _in_order(client, ids, "v2" if args.legacy else "v3"):
                if done.error is not None:
                    errors[done.task_id] = str(done.error)
                    console.err.print(escape(f"task {done.task_id}: {done.error}"), soft_wrap=True)
                    continue
                for r in done.results:
                    record = msgspec.to_builtins(r)
                    exported += 1
                    if writer is not None:
                        writer.writerow(_csv_row(done.task_id, record))
                    else:
                        # ``taskId``, as the portal names it; ``import`` reads it too.
                        record.setdefault("taskId", done.task_id)
                        out.write(msgspec.json.encode(record).decode() + "\n")
    if args.json:
        summary = {
            "tasks": len(ids),
            "results": exported,
            "failed_tasks": len(errors),
            "errors": {str(k): v for k, v in errors.items()},
            "output": args.output,
        }
        # The results may be on stdout: then the summary goes to stderr.
        if args.output:
            console.print_json(summary)
        else:
            console.err.print(msgspec.json.encode(summary).decode(), soft_wrap=True, markup=False)
    return SOME_FAILED if errors else 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from ..testing import FakePortal, PortalConfig, serve_portal

    limits = (Limits.enterprise() if args.plan == "enterprise" else Limits.standard()).scaled(
        args.scale
    )
    config = PortalConfig(plan=args.plan, scale=args.scale)
    say = console.err.print if args.json else console.out.print
    say(
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
            say(f"add/update/list/delete on task 1: ok ({len(listed)} listed)")
            with tempfile.TemporaryDirectory() as tmp:
                for batch in (False, True):
                    label = "batches of 50" if batch else "one request per result"
                    path = Path(tmp) / f"results-{'batch' if batch else 'single'}.jsonl"
                    write_demo_rows(path, args.items, label)
                    rows = Rows(path)
                    report = await import_rows(
                        client,
                        rows,
                        total=rows.count(),
                        options=BulkOptions(batch=batch),
                        limits=limits,
                        show_progress=not args.quiet,
                    )
                    counts = Counts.of(report, limits)
                    reasons = report.failures_by_reason()
                    title = f"{args.items} results, {label}"
                    if args.json:
                        console.print_json(summary_json(counts, reasons, run=title))
                    else:
                        console.out.print(summary_table(counts, reasons, title))
        stats = running.portal.stats()
        if not args.json:
            console.out.print(
                f"portal: {stats.requests} requests, {stats.rate_limited} x 503, "
                f"{stats.operating_limited} x 429, {stats.duplicates} duplicates"
            )
            console.out.print(
                BOUND_EXPLAINED.format(
                    burst=limits.burst,
                    drain=limits.drain_per_second,
                    limit=limits.operating_limit,
                    window=limits.operating_window,
                ),
                markup=False,
            )
    return 0


async def cmd_emulator(args: argparse.Namespace) -> int:
    from ..testing import run_emulator

    await run_emulator(host=args.host, port=args.port, plan=args.plan, scale=args.scale)
    return 0
