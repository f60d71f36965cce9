"""``main``: parse, run one command, and turn what ended it into a message and a status."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..errors import BitrixError, InvalidInputError
from . import console
from .commands import PROBE_RETRY, client_of, limits_of
from .exits import INTERRUPTED, describe
from .importing import ImportState, default_journal, run_import
from .parser import build_parser

__all__ = ["BROKEN_PIPE", "main"]

#: ``bitrix-results list 5 | head``: the reader left; the shell's status for SIGPIPE.
BROKEN_PIPE = 141


class _Run:
    """One invocation: its words (for the resume hint) and the import's state, if any."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.state: ImportState | None = None

    async def cmd_import(self, args: argparse.Namespace) -> int:
        path = Path(args.file)
        if not await anyio.Path(path).exists():
            raise InvalidInputError("file", f"no such file: {path}")
        if not await anyio.Path(path).is_file():
            raise InvalidInputError("file", f"not a file: {path}")
        journal: Path | None
        if args.no_journal:
            journal = None
        elif args.journal:
            journal = Path(args.journal)
        else:
            journal = default_journal(path)
        self.state = state = ImportState(argv=self.argv, source=path, journal=journal)
        async with client_of(args) as client, client_of(args, PROBE_RETRY) as probe_client:
            return await run_import(
                args, limits=limits_of(args), client=client, probe_client=probe_client, state=state
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (docs/cli.md, ``--help``)."""
    words = list(sys.argv[1:] if argv is None else argv)
    run = _Run(words)
    try:
        args = build_parser(run.cmd_import).parse_args(words)
    except SystemExit as exc:
        # argparse has printed the usage and an ``error: ...`` line (or the help).
        return exc.code if isinstance(exc.code, int) else 2
    console.configure_logging(args.verbose)
    try:
        try:
            code: int = anyio.run(args.run, args)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE
    except (BitrixError, OSError, sqlite3.Error, ValueError) as exc:
        code, message = describe(exc)
        console.error(message)
        if getattr(args, "json", False):
            _json_error(message, code)
        return code
    except KeyboardInterrupt:
        state = run.state
        message = state.interrupted() if state is not None else "interrupted"
        console.err.print(message, soft_wrap=True, markup=False)
        return INTERRUPTED
    return code


def _json_error(message: str, code: int) -> None:
    try:
        console.print_json({"error": message, "status": code})
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush must not fail loudly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
