"""Which exit status and message each error that ends a command gets (no I/O)."""

from __future__ import annotations

import socket
import sqlite3

import pytest

from bitrix_results import BulkReport
from bitrix_results._cli.exits import AUTH, ERROR, UNREACHABLE, USAGE, describe
from bitrix_results._scheduler import SchedulerStatistics
from bitrix_results.errors import (
    AccessDeniedError,
    BulkAbortedError,
    ConnectError,
    InvalidCredentialsError,
    InvalidInputError,
    JournalError,
    OutcomeUnknownError,
    RequestTimeoutError,
)


def _report() -> BulkReport:
    return BulkReport(
        outcomes=[],
        created=0,
        failed=0,
        elapsed=0.0,
        mode="batch",
        statistics=SchedulerStatistics(),
        job_id="job",
    )


def _connect(cause: BaseException) -> ConnectError:
    error = ConnectError("could not connect to the portal", method="tasks.task.result.add")
    error.__cause__ = cause
    return error


def _refused() -> ConnectError:
    return _connect(ConnectionRefusedError(111, "Connection refused"))


def _auth() -> InvalidCredentialsError:
    return InvalidCredentialsError("Wrong authorization data", code="NO_AUTH_FOUND", status=401)


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (_refused(), UNREACHABLE, "cannot reach the portal: "),
        (BulkAbortedError(_report(), _refused()), UNREACHABLE, "connection refused"),
        (OutcomeUnknownError("tasks.task.result.add", _refused()), UNREACHABLE, "refused"),
        (_connect(socket.gaierror(-2, "Name or service not known")), UNREACHABLE, "not resolved"),
        (RequestTimeoutError("no answer in time"), UNREACHABLE, "no answer in time"),
        (_auth(), AUTH, "authentication failed: NO_AUTH_FOUND"),
        (BulkAbortedError(_report(), _auth()), AUTH, "'task' scope"),
        (InvalidInputError("task_id", "must be a positive int"), USAGE, "task_id: must be"),
        (ValueError("journal: x belongs to job 'a'"), USAGE, "--no-journal"),
        (JournalError("j.db", "was written for another portal", field="portal"), USAGE, "anew"),
        (JournalError("j.db", "is a directory, not a journal file"), USAGE, "--no-journal"),
        (sqlite3.OperationalError("unable to open database file"), USAGE, "journal: unable"),
        (FileNotFoundError(2, "No such file or directory", "x.csv"), USAGE, "x.csv"),
        (
            AccessDeniedError("Access denied", code="ACCESS_DENIED", status=403),
            ERROR,
            "ACCESS_DENIED",
        ),
    ],
)
def test_each_error_gets_its_status(error: BaseException, status: int, words: str) -> None:
    code, message = describe(error)
    assert code == status
    assert words in message


def test_anything_else_is_not_swallowed() -> None:
    with pytest.raises(RuntimeError):
        describe(RuntimeError("a bug"))
