"""Helpers shared by the hostile-server tests: clients, and a deep search for secrets."""

from __future__ import annotations

import logging
import traceback
from typing import Any
from urllib.parse import unquote, unquote_plus

import msgspec
import pytest

from bitrix_results import ResultsClient, RetryPolicy

from .conftest import ACCESS, CLIENT_SECRET, CODE, REFRESH, SECRETS

LIST = "tasks.task.result.list"
ADD = "tasks.task.result.add"


def webhook(origin: str, *, attempts: int = 1, **options: Any) -> ResultsClient:
    """A webhook client on the real aiohttp transport, retrying at most ``attempts`` times."""
    retry = RetryPolicy(max_attempts=attempts, base_delay=0.0, max_delay=0.0)
    options.setdefault("timeout", 10.0)
    # No environment proxy may catch a request meant for the local server.
    options.setdefault("trust_env", False)
    return ResultsClient.from_webhook(f"{origin}/rest/7/{CODE}/", retry=retry, **options)


def oauth(portal: str, token_url: str, *, attempts: int = 2, **options: Any) -> ResultsClient:
    retry = RetryPolicy(max_attempts=attempts, base_delay=0.0, max_delay=0.0)
    options.setdefault("timeout", 10.0)
    options.setdefault("trust_env", False)
    return ResultsClient.from_oauth(
        portal=portal,
        access_token=ACCESS,
        refresh_token=REFRESH,
        client_id="app.id",
        client_secret=CLIENT_SECRET,
        token_url=token_url,
        retry=retry,
        **options,
    )


def ok(result: object) -> bytes:
    return msgspec.json.encode({"result": result})


def item(result_id: int = 1, task_id: int = 42, text: str = "Done") -> dict[str, object]:
    return {
        "id": result_id,
        "taskId": task_id,
        "text": text,
        "authorId": 1,
        "createdAt": "2026-11-22T10:00:00+03:00",
        "updatedAt": "2026-11-22T10:00:00+03:00",
        "status": "open",
        "fileIds": [],
    }


def reachable_texts(exc: BaseException) -> list[str]:
    """Every text an exception makes reachable: the formatted chain, and each object in it.

    Walks ``__cause__`` and ``__context__`` (both, whatever is suppressed),
    ``__notes__``, ``args`` and attributes, one level into containers.
    """
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        try:
            texts.append(str(obj))
            texts.append(repr(obj))
        except Exception as broken:
            texts.append(type(broken).__name__)
        if isinstance(obj, BaseException):
            todo += [obj.__cause__, obj.__context__, *obj.args]
            todo += list(getattr(obj, "__notes__", []))
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            todo += list(attributes.values())
        if isinstance(obj, list | tuple | set | frozenset):
            todo += list(obj)
        if isinstance(obj, dict):
            todo += [*obj.keys(), *obj.values()]
    return texts


def assert_no_secret(exc: BaseException) -> None:
    for text in reachable_texts(exc):
        for form in (text, unquote(text), unquote_plus(text)):
            for secret in SECRETS:
                at = form.find(secret)
                assert at < 0, f"{secret!r} reachable: ...{form[max(0, at - 80) : at + 30]!r}"


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(message)s")
    for record in caplog.records:
        text = formatter.format(record)  # with exc_info: the whole traceback
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in a log record"


__all__ = [
    "ACCESS",
    "ADD",
    "CLIENT_SECRET",
    "CODE",
    "LIST",
    "REFRESH",
    "assert_logs_clean",
    "assert_no_secret",
    "item",
    "oauth",
    "ok",
    "webhook",
]
