"""Exit statuses, and what each error the command can meet says to its user.

Scripts branch on the status, so each kind of failure has its own number
(documented in ``--help`` and docs/cli.md):

====  =========================================================================
0     everything asked was done
1     the command ran, but some rows (or tasks of an export) failed
2     usage: a bad option or argument, a missing/unreadable/invalid input file,
      a journal of another input
3     authentication: the portal refused the webhook (wrong or revoked code,
      missing scope)
4     the portal could not be reached (refused, name not resolved, TLS,
      timed out)
5     any other error: the portal refused the request, or failed
130   interrupted (Ctrl-C); an import says how to resume
====  =========================================================================
"""

from __future__ import annotations

import socket
import sqlite3
import ssl

from ..errors import (
    AuthError,
    BitrixError,
    BulkAbortedError,
    ConnectError,
    JournalError,
    OAuthError,
    OutcomeUnknownError,
    RedirectRefusedError,
    TransportError,
)
from .rows import os_reason

__all__ = [
    "AUTH",
    "EPILOG",
    "ERROR",
    "INTERRUPTED",
    "OK",
    "SOME_FAILED",
    "UNREACHABLE",
    "USAGE",
    "describe",
]

OK = 0
SOME_FAILED = 1
USAGE = 2
AUTH = 3
UNREACHABLE = 4
ERROR = 5
INTERRUPTED = 130

EPILOG = """\
exit status:
  0    everything asked was done
  1    some rows (or tasks of an export) failed; the rest was done
  2    usage: a bad option, an input file missing, unreadable or invalid
  3    authentication: the portal refused the webhook (wrong or revoked code,
       or no 'task' scope)
  4    the portal could not be reached (connection refused, name not resolved,
       TLS handshake failed, no answer in time)
  5    another error: the portal refused the request or failed
  130  interrupted (Ctrl-C); an import prints how to resume it

The webhook comes from --webhook or $BITRIX_WEBHOOK_URL and is never printed.
"""


def _root(exc: BaseException) -> BaseException:
    """The error that decides the status: a bulk abort and an unknown outcome wrap one."""
    while isinstance(exc, BulkAbortedError | OutcomeUnknownError):
        exc = exc.cause
    return exc


_JOURNAL_HINT = " (--journal PATH puts the journal elsewhere; --no-journal keeps none)"

_REASONS = {
    "refused": "connection refused",
    "dns": "name not resolved",
    "tls": "TLS handshake failed",
    "timeout": "timed out",
}


def _cause_in_words(exc: TransportError) -> str | None:
    """Why a connection failed: ``ConnectError.reason``, else read off the OS error."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in _REASONS:
        return _REASONS[reason]
    seen: BaseException | None = exc.__cause__
    for _ in range(8):  # a chain, never a loop
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return _REASONS["refused"]
        if isinstance(seen, socket.gaierror):
            return _REASONS["dns"]
        if isinstance(seen, ssl.SSLError):
            return _REASONS["tls"]
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an error that ended the command."""
    root = _root(exc)
    if isinstance(root, AuthError | OAuthError):
        return AUTH, (
            f"authentication failed: {root}; check the webhook code (is it revoked?) "
            "and that the webhook has the 'task' scope"
        )
    if isinstance(root, TransportError) and not isinstance(root, RedirectRefusedError):
        cause = _cause_in_words(root)
        message = str(root) if cause is None or cause in str(root) else f"{root} ({cause})"
        if isinstance(root, ConnectError):
            return UNREACHABLE, f"cannot reach the portal: {message}"
        return UNREACHABLE, f"the portal did not answer: {message}"
    if isinstance(root, ValueError):
        # InvalidInputError (also a ValueError) and bad input found below the CLI:
        # a journal of another input, a number out of range.
        message = str(root) or type(root).__name__
        if isinstance(root, JournalError) and root.field is not None:
            # Written for another input, portal or webhook: never trusted for this one.
            message += (
                "; run it with the file, portal and webhook it was written for, or, to "
                "import anew, delete the journal or give --journal with another path"
            )
        elif message.startswith("journal:") and "--journal" not in message:
            message += _JOURNAL_HINT
        return USAGE, message
    if isinstance(exc, BitrixError):
        return ERROR, str(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return USAGE, f"{os_reason(exc)}{where}"
    if isinstance(exc, sqlite3.Error):
        # The journal is the only SQLite file the CLI opens.
        return USAGE, f"journal: {exc}{_JOURNAL_HINT}"
    raise exc
