"""Helpers for the client-layer tests: a scripted portal behind ``MockSender``, no network.

Every test here drives the public ``ResultsClient`` through the library's own HTTP
seam: the client's sender is a :class:`~bitrix_results.testing.MockSender` whose
handler answers from the responses a test registered (``mock.post(url, ...)``), and
records every request with its URL, headers and body. URL forms, auth placement,
redirects and decoding run as in production; only aiohttp is left out (its error
mapping has its own tests, on real sockets, in ``test_aiohttp_sender.py``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
from yarl import URL

from bitrix_results import ConnectionLostError, Limits, ResultsClient, RetryPolicy
from bitrix_results._scheduler import Scheduler
from bitrix_results.testing import MockSender, RawRequest, RawResponse

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

# A realistic ``time`` block (api-facts §2.1), with a running total far below the budget.
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

#: What a callback returns: a response, directly or from a coroutine.
Callback = Callable[..., RawResponse | Awaitable[RawResponse]]

# The portals in use: the ``mock`` fixture enters one, and the client factories
# below give their clients its sender unless a test passes another.
_ACTIVE: list[MockPortal] = []


@dataclass
class _Route:
    method: str
    url: str | re.Pattern[str]
    response: RawResponse | None
    exception: BaseException | None
    callback: Callback | None
    repeat: bool

    def matches(self, method: str, url: str) -> bool:
        if method != self.method:
            return False
        if isinstance(self.url, re.Pattern):
            return self.url.match(url) is not None
        return self.url == url


@dataclass
class MockPortal:
    """Registered responses, answered in order, and the requests that asked for them.

    A response registered without ``repeat=True`` answers once. A request nothing
    matches fails like a refused exchange that may have been sent
    (``ConnectionLostError``), so a test that forgot a response sees a failure.
    """

    routes: list[_Route] = field(default_factory=list)
    #: Every request, grouped by (HTTP method, URL).
    requests: dict[tuple[str, str], list[Sent]] = field(default_factory=dict)

    def __enter__(self) -> MockPortal:
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)

    def sender(self) -> MockSender:
        """A sender answering from this portal (one per client: closing it closes only it)."""
        return MockSender(self._handle)

    def add(
        self,
        url: str | re.Pattern[str],
        method: str = "GET",
        *,
        status: int = 200,
        payload: object = None,
        body: str | bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        exception: BaseException | None = None,
        callback: Callback | None = None,
        repeat: bool = False,
    ) -> None:
        response = None
        if exception is None and callback is None:
            response = reply(
                payload, status=status, body=body, content_type=content_type, headers=headers
            )
        self.routes.append(_Route(method.upper(), url, response, exception, callback, repeat))

    def post(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "POST", **kwargs)

    def get(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "GET", **kwargs)

    async def _handle(self, request: RawRequest) -> RawResponse:
        sent = Sent.of(request)
        self.requests.setdefault((sent.method, sent.url), []).append(sent)
        for route in self.routes:
            if route.matches(sent.method, sent.url):
                break
        else:
            raise ConnectionLostError(f"no mocked response for {sent.method} {sent.url}")
        if not route.repeat:
            self.routes.remove(route)
        if route.exception is not None:
            raise route.exception
        if route.callback is not None:
            answer = route.callback(
                URL(sent.url), data=sent.raw, headers=sent.headers, params=sent.params
            )
            return await answer if inspect.isawaitable(answer) else answer
        assert route.response is not None
        return route.response

    def sent(self, method: str | None = None) -> list[Sent]:
        """Every recorded request (optionally only one HTTP method), grouped by URL."""
        out = []
        for (verb, _), calls in self.requests.items():
            if method is None or verb == method.upper():
                out.extend(calls)
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
    def of(cls, request: RawRequest) -> Sent:
        query = urlsplit(request.url).query
        return cls(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            raw=request.body or None,
            params=dict(parse_qsl(query)) if query else None,
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
    headers: Mapping[str, str] | None = None,
) -> RawResponse:
    """A response: ``payload`` as JSON, or ``body`` as given."""
    if body is None:
        body = b"" if payload is None else msgspec.json.encode(payload)
    elif isinstance(body, str):
        body = body.encode()
    return RawResponse(status, {"Content-Type": content_type, **(headers or {})}, body)


def ok(result: object) -> dict[str, object]:
    """A success body: ``result`` plus the ``time`` block (api-facts §4.2)."""
    return {"result": result, "time": TIME}


def v3_error(code: str, message: str = "error", validation: list[Any] | None = None) -> dict:
    error: dict[str, object] = {"code": code, "message": message}
    if validation is not None:
        error["validation"] = validation
    return {"error": error}


def v2_error(code: str, description: str = "error") -> dict[str, str]:
    return {"error": code, "error_description": description}


def item(result_id: int = 7, task_id: int = 42, **overrides: object) -> dict[str, object]:
    """A REST 3.0 result item exactly as the docs describe it (api-facts §5.1)."""
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
    """How one credential type addresses the portal (api-facts §4.1, §7)."""

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
    retry = RetryPolicy.no_backoff(max_attempts=max_attempts)
    return Scheduler(FAST_LIMITS, concurrency=concurrency, retry=retry)


def _with_sender(options: dict[str, Any]) -> None:
    if _ACTIVE and "sender" not in options:
        options["sender"] = _ACTIVE[-1].sender()


def webhook_client(**options: Any) -> ResultsClient:
    options.setdefault("scheduler", fast_scheduler())
    _with_sender(options)
    return ResultsClient.from_webhook(options.pop("url", WEBHOOK_URL), **options)


def oauth_client(**options: Any) -> ResultsClient:
    options.setdefault("scheduler", fast_scheduler())
    options.setdefault("portal", PORTAL)
    options.setdefault("access_token", ACCESS_TOKEN)
    options.setdefault("refresh_token", REFRESH_TOKEN)
    options.setdefault("client_id", CLIENT_ID)
    options.setdefault("client_secret", CLIENT_SECRET)
    options.setdefault("token_url", TOKEN_URL)
    _with_sender(options)
    return ResultsClient.from_oauth(**options)


WEBHOOK = AuthMode("webhook", webhook_client, None)
OAUTH = AuthMode("oauth", oauth_client, ACCESS_TOKEN)
