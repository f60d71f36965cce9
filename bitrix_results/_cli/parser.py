"""The command line's options and sub-commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import commands
from .exits import EPILOG

__all__ = ["build_parser"]

Command = Callable[[argparse.Namespace], Awaitable[int]]


def _scale(text: str) -> float:
    """``--scale``: a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _version() -> str:
    try:
        return version("bitrix_results")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from .. import __version__

        return __version__


def build_parser(cmd_import: Command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitrix-results",
        description="Bitrix24 task results from the command line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Shared by every sub-command, so ``bitrix-results import -v FILE`` works.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log retries, waits for the limits and reconciliation on stderr (-vv: more)",
    )
    shared.add_argument("--json", action="store_true", help="machine-readable output")
    common = argparse.ArgumentParser(add_help=False, parents=[shared])
    common.add_argument("--webhook", help="webhook URL (default: $BITRIX_WEBHOOK_URL)")
    common.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    common.add_argument(
        "--scale", type=_scale, default=1.0, help="match a time-compressed fake portal"
    )
    common.add_argument(
        "--timeout", type=_seconds, help="seconds to wait for one HTTP answer (default 65)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Command, help: str, parent: argparse.ArgumentParser) -> Any:
        p = sub.add_parser(
            name,
            parents=[parent],
            help=help,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(run=run)
        return p

    p = command("add", commands.cmd_add, "add a result to a task", common)
    p.add_argument("task_id", type=int)
    p.add_argument("text")
    p = command("update", commands.cmd_update, "change a result's text", common)
    p.add_argument("result_id", type=int)
    p.add_argument("text")
    p = command("delete", commands.cmd_delete, "delete a result", common)
    p.add_argument("result_id", type=int)
    p = command("list", commands.cmd_list, "a task's results as JSONL", common)
    p.add_argument("task_id", type=int)
    p.add_argument("--status", choices=("open", "closed"))
    p.add_argument("--legacy", action="store_true", help="use the REST v2 method")
    p = command("import", cmd_import, "add results from JSONL or CSV", common)
    p.add_argument("file")
    journal = p.add_mutually_exclusive_group()
    journal.add_argument(
        "--journal",
        help="the journal that makes a rerun safe (default FILE.journal beside the input)",
    )
    journal.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no journal: running the import again sends every row again",
    )
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--concurrency", type=_positive_int)
    p.add_argument(
        "--failures",
        help="where to write failed rows (default FILE.failed.jsonl: data.csv.failed.jsonl)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = command("export", commands.cmd_export, "results of many tasks as JSONL/CSV", common)
    p.add_argument("--tasks", help="comma-separated task ids")
    p.add_argument("--tasks-file", help="a file of task ids, one per line")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--output", help="output file (default stdout)")
    p.add_argument("--legacy", action="store_true", help="use the REST v2 method")
    p = command(
        "demo", commands.cmd_demo, "import into a built-in fake portal and show the pacing", shared
    )
    p.add_argument("--items", type=_positive_int, default=2000)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=_scale, default=100.0)
    p.add_argument("--quiet", action="store_true")
    p = command("emulator", commands.cmd_emulator, "serve a fake portal for manual testing", shared)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8024)
    p.add_argument("--plan", choices=("standard", "enterprise"), default="standard")
    p.add_argument("--scale", type=_scale, default=1.0)
    return parser
