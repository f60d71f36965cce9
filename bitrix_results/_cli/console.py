"""Where the command line writes: stdout for results, stderr for messages and logs.

Neither stream is wrapped when it is not a terminal: a log line or an error
message piped to a file stays one line whatever its length. ``-v`` routes the
library's ``bitrix_results.*`` loggers to stderr through the same console, so
log lines appear above the progress bar instead of tearing it.
"""

from __future__ import annotations

import logging
import sys

import msgspec
from rich.console import Console
from rich.markup import escape

__all__ = ["configure_logging", "err", "error", "out", "print_json"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits with status 1 here; ``main`` ends quietly with its own status
        # (the reader left, as ``| head`` does: not an error of ours).
        self.quiet = True
        raise BrokenPipeError


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # Not a terminal: no wrapping at rich's default 80 columns (soft_wrap), and a
    # width wide enough that tables are not squeezed either.
    return _Console(stderr=stderr, highlight=False, soft_wrap=not tty, width=None if tty else 200)


out = _console(stderr=False)
err = _console(stderr=True)


def print_json(value: object) -> None:
    """One JSON document on one line of stdout."""
    out.print(msgspec.json.encode(value).decode(), soft_wrap=True, markup=False)


def error(message: str) -> None:
    err.print("[red]error:[/] " + escape(message), soft_wrap=True)


class _ConsoleHandler(logging.Handler):
    """Log records as plain lines on the stderr console (above a live progress bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must not kill the command
            self.handleError(record)
            return
        err.print(text, soft_wrap=True, markup=False, highlight=False)


def configure_logging(verbosity: int) -> None:
    """``-v``: the library's INFO records on stderr; ``-vv``: DEBUG too."""
    if verbosity <= 0:
        return
    handler = _ConsoleHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logger = logging.getLogger("bitrix_results")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
