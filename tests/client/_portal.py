"""Helpers for the client-layer tests: a mocked aiohttp transport, no network.

Every test here drives the public ``ResultsClient`` against ``aioresponses``,
which patches ``aiohttp.ClientSession._request``: nothing leaves the process, and
every request the client made is recorded with its URL, headers and body.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from aioresponses import CallbackResult, aioresponses

from bitrix_results import Limits, ResultsClient, RetryPolicy
from bitrix_results._scheduler import Scheduler

PORTAL = "https://portal.example"
WEBHOOK_URL = f"{PORTAL}/rest/1/abc123/"
ACCESS_TOKEN = "access-token-old"
REFRESH_TOKEN = "refresh-token-old"
NEW_ACCESS_TOKEN = "access-token-new"
NEW_REFRESH_TOKEN = "refresh-token-new"
CLIENT_ID = "app.client.id"
CLIENT_SECRET = "client-secret-value"
TOKEN_URL = "https://oauth.example/oauth/token/"
TOKEN_URL_PATTERN = re.compile(r"^https://oauth\.example/oauth/token/(\?.*)?$")

# Limits so large that pacing never makes a test wait; a short window keeps a 429
# hold (one basket, W / 10, when the reset is unknown) to a tenth of a second.
FAST_LIMITS = Limits(
    burst=10_000, drain_per_second=10_000.0, operating_limit=10_000.0, operating_window=1.0
)

# A realistic ``time`` block (facts §2.1), with a running total far below the budget.
TIME = {
    "start": 1_700_000_000.1,
    "finish": 1_700_000_000.2,
    "duration": 0.1,
    "processing": 0.05,
    "date_start": "2026-11-22T10:00:00+03:00",
    "date_finish": "2026-11-22T10:00:00+03:00",
    "operating": 0.05,
    "operating_reset_at": 1_700_000_600,
}


class CompatResponse(aiohttp.ClientResponse):
    """``ClientResponse`` that aioresponses 0.7.9 can build under aiohttp >= 3.14.

    aiohttp 3.14 added the required keyword ``stream_writer`` which aioresponses
    does not pass (pnuckowski/aioresponses#289); a response that was "already
    sent" only reads its ``output_size``.
    """

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class MockPortal(aioresponses):
    """aioresponses with the aiohttp 3.14 shim and helpers to read what was sent."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        if kwargs.get("response_class") is None:
            kwargs["response_class"] = CompatResponse
        super().add(url, method, *args, **kwargs)

    def sent(self, method: str | None = None) -> list[Sent]:
        """Every recorded request (optionally only one HTTP method), grouped by URL."""
        out = []
        for (verb, url), calls in self.requests.items():
            if method is not None and verb != method.upper():
                continue
            for call in calls:
                out.append(Sent.of(verb, str(url), call.kwargs))
        return out

    def sent_to(self, url: str) -> list[Sent]:
        return [s for s in self.sent() if s.url == url]


@dataclass
class Sent:
    """One request as the mock saw it."""

    method: str
    url: str
    headers: dict[str, str]
    raw: bytes | None
    params: Mapping[str, str] | None

    @classmethod
    def of(cls, method: str, url: str, kwargs: Mapping[str, Any]) -> Sent:
        data = kwargs.get("data")
        return cls(
            method=method,
            url=url,
            headers=dict(kwargs.get("headers") or {}),
            raw=data,
            params=kwargs.get("params"),
        )

    @property
    def json(self) -> Any:
        assert self.raw is not None, "the request had no body"
        return msgspec.json.decode(self.raw)


def reply(
    payload: object = None,
    *,
    status: int = 200,
    body: str | bytes | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> CallbackResult:
    """A response for a callback, built with the aiohttp 3.14 shim."""
    if body is None:
        body = msgspec.json.encode(payload)
    return CallbackResult(
        status=status,
        body=body,
        content_type=content_type,
        headers=headers,
        response_class=CompatResponse,
    )


def ok(result: object) -> dict[str, object]:
    """A success body: ``result`` plus the ``time`` block (facts §4.2)."""
    return {"result": result, "time": TIME}


def v3_error(code: str, message: str = "error", validation: list[Any] | None = None) -> dict:
    error: dict[str, object] = {"code": code, "message": message}
    if validation is not None:
        error["validation"] = validation
    return {"error": error}


def v2_error(code: str, description: str = "error") -> dict[str, str]:
    return {"error": code, "error_description": description}


def item(result_id: int = 7, task_id: int = 42, **overrides: object) -> dict[str, object]:
    """A REST 3.0 result item exactly as the docs describe it (facts §5.1)."""
    base: dict[str, object] = {
        "id": result_id,
        "taskId": task_id,
        "text": f"result {result_id}",
        "authorId": 1,
        "createdAt": "2026-11-22T10:00:00+03:00",
        "updatedAt": None,
        "status": "open",
        "fileIds": [],
        "rights": {"edit": True, "remove": False},
        "messageId": None,
    }
    base.update(overrides)
    return base


# -- auth modes ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthMode:
    """How one credential type addresses the portal (facts §4.1, §7)."""

    name: str
    make: Callable[..., ResultsClient]
    token: str | None

    def url(self, api: str, method: str) -> str:
        prefix = "/rest/api/" if api == "v3" else "/rest/"
        if self.token is None:
            return f"{PORTAL}{prefix}1/abc123/{method}"
        return f"{PORTAL}{prefix}{method}"

    def body(self, params: Mapping[str, object]) -> dict[str, object]:
        """The JSON body the portal should receive for ``params``."""
        if self.token is None:
            return dict(params)
        return {**params, "auth": self.token}


def fast_scheduler(*, concurrency: int = 16, max_attempts: int = 4) -> Scheduler:
    """A scheduler that never paces and retries without backoff sleeps.

    Backoff is full jitter (random); zeroing it keeps retry tests fast and
    deterministic. Each client gets its own so statistics are per test.
    """
    retry = RetryPolicy(max_attempts=max_attempts, base_delay=0.0, max_delay=0.0)
    return Scheduler(FAST_LIMITS, concurrency=concurrency, retry=retry)


def webhook_client(**options: Any) -> ResultsClient:
    options.setdefault("scheduler", fast_scheduler())
    return ResultsClient.from_webhook(options.pop("url", WEBHOOK_URL), **options)


def oauth_client(**options: Any) -> ResultsClient:
    options.setdefault("scheduler", fast_scheduler())
    options.setdefault("portal", PORTAL)
    options.setdefault("access_token", ACCESS_TOKEN)
    options.setdefault("refresh_token", REFRESH_TOKEN)
    options.setdefault("client_id", CLIENT_ID)
    options.setdefault("client_secret", CLIENT_SECRET)
    options.setdefault("token_url", TOKEN_URL)
    return ResultsClient.from_oauth(**options)


WEBHOOK = AuthMode("webhook", webhook_client, None)
OAUTH = AuthMode("oauth", oauth_client, ACCESS_TOKEN)
