"""Issue 9, "no raw exceptions" and "refused before the wire" (design §2.6).

Every case here was either accepted and sent, or failed with a raw Python
exception (UnicodeEncodeError, TypeError, RecursionError, ValueError), before.
Refusals are checked against the mocked transport (nothing is recorded); what a
hostile server sends is served for real by aiohttp on 127.0.0.1.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from aiohttp import web

from bitrix_results import (
    DecodeError,
    InvalidInputError,
    NewResult,
    OAuthError,
    ResultsClient,
)

from ._portal import MockPortal, fast_scheduler, item, oauth_client, ok, webhook_client

Call = Callable[[ResultsClient], Awaitable[Any]]


async def _drain(client: ResultsClient, *args: Any, **kwargs: Any) -> list[Any]:
    return [r async for r in client.iter_results(*args, **kwargs)]


BIG = 2**63
REFUSED: list[tuple[str, Call, str]] = [
    # a lone surrogate: before, UnicodeEncodeError from the encoder
    ("add-surrogate", lambda c: c.add(42, "Done \ud800"), "text"),
    ("update-surrogate", lambda c: c.update(7, "\udc80"), "text"),
    ("chat-surrogate", lambda c: c.send_chat_message(42, "hi \udfff"), "text"),
    # text that shows nothing: before, sent
    ("add-nul", lambda c: c.add(42, "\x00"), "text"),
    ("add-controls", lambda c: c.add(42, "\x01\x02\x1b"), "text"),
    ("add-zero-width", lambda c: c.add(42, "\u200b\u200d"), "text"),
    ("add-bom", lambda c: c.add(42, "\ufeff"), "text"),
    ("update-invisible", lambda c: c.update(7, " \u2060\x00 "), "text"),
    ("chat-bom", lambda c: c.send_chat_message(42, "\ufeff\n"), "text"),
    # ids of 2**63 and above: before, sent
    ("add-task-2**63", lambda c: c.add(BIG, "Done"), "task_id"),
    ("add-task-2**64", lambda c: c.add(2**64, "Done"), "task_id"),
    ("chat-message-2**63", lambda c: c.add_from_chat_message(BIG), "message_id"),
    ("update-2**63", lambda c: c.update(BIG, "x"), "result_id"),
    ("delete-2**64", lambda c: c.delete(2**64), "result_id"),
    ("list-task-2**63", lambda c: c.list(BIG), "task_id"),
    ("list-author-2**63", lambda c: c.list(42, author_id=BIG), "author_id"),
    ("list-limit-2**63", lambda c: c.list(42, limit=BIG), "limit"),
    ("list-offset-2**63", lambda c: c.list(42, offset=BIG), "offset"),
    ("iter-after-2**63", lambda c: _drain(c, 42, after_id=BIG), "after_id"),
    ("iter-author-2**63", lambda c: _drain(c, 42, author_id=BIG), "author_id"),
    ("iter-page-2**63", lambda c: _drain(c, 42, page_size=BIG), "page_size"),
    ("legacy-task-2**63", lambda c: c.list_legacy(BIG), "task_id"),
    ("from-comment-2**63", lambda c: c.add_from_comment(BIG), "comment_id"),
    ("delete-comment-2**64", lambda c: c.delete_from_comment(2**64), "comment_id"),
    ("chat-task-2**63", lambda c: c.send_chat_message(BIG, "hi"), "task_id"),
    # call(): the method name and params
    ("call-trailing-newline", lambda c: c.call("tasks.task.get\n"), "method"),
    ("call-trailing-crlf", lambda c: c.call("tasks.task.get\r\n"), "method"),
    ("call-nan", lambda c: c.call("tasks.task.get", {"id": math.nan}), "params"),
    ("call-inf", lambda c: c.call("tasks.task.update", {"f": {"x": [math.inf]}}), "params"),
    ("call-object", lambda c: c.call("tasks.task.get", {"id": object()}), "params"),
    ("call-surrogate", lambda c: c.call("tasks.task.get", {"q": "\ud800"}), "params"),
    ("call-v2-object", lambda c: c.call("tasks.task.get", {"x": {1j}}, api="v2"), "params"),
    ("call-tuple-key", lambda c: c.call("tasks.task.get", {"f": {(1, 2): 3}}), "params"),
]


@pytest.mark.parametrize(("call", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_refused_before_the_wire(mock: MockPortal, call: Call, field: str) -> None:
    async with webhook_client() as client:
        with pytest.raises(InvalidInputError) as info:
            await call(client)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert mock.requests == {}


async def test_call_params_name_the_path_inside_params(mock: MockPortal) -> None:
    async with webhook_client() as client:
        with pytest.raises(InvalidInputError) as info:
            await client.call("tasks.task.update", {"fields": {"marks": [1.5, math.nan]}})
    assert str(info.value) == "params: must hold finite numbers, got nan at ['fields']['marks'][1]"
    assert mock.requests == {}


# -- constructors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://portal.example:99999/rest/1/abc123/", id="port-99999"),
        pytest.param("https://portal.example:-1/rest/1/abc123/", id="port-negative"),
        pytest.param("https://portal.example:abc/rest/1/abc123/", id="port-abc"),
        pytest.param("http://[::1/rest/1/abc123/", id="broken-ipv6"),
        pytest.param("http://anything.localhost/rest/1/abc123/", id="http-sub-localhost"),
    ],
)
def test_bad_webhook_url_refused_at_construction(mock: MockPortal, url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        webhook_client(url=url)
    assert info.value.field == "webhook_url"
    assert "abc123" not in str(info.value)
    # No chained urlsplit error either (it would print in a traceback).
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert mock.requests == {}


@pytest.mark.parametrize(
    "portal",
    [
        pytest.param("https://portal.example?tenant=2", id="query"),
        pytest.param("https://portal.example/#x", id="fragment"),
        pytest.param("ftp://portal.example", id="ftp-scheme"),
        pytest.param("mailto:admin@portal.example", id="mailto-scheme"),
        pytest.param("https://portal.example:99999", id="bad-port"),
        pytest.param("http://portal.localhost", id="http-sub-localhost"),
    ],
)
def test_bad_oauth_portal_refused_at_construction(mock: MockPortal, portal: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        oauth_client(portal=portal)
    assert info.value.field == "portal"
    assert mock.requests == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("concurrency", 2**63), ("headroom", 2**63), ("page_size", 2**63)],
    ids=lambda v: v if isinstance(v, str) else "2**63",
)
def test_option_counts_of_2_63_are_refused(field: str, value: int) -> None:
    # concurrency=0 and timeout='x' are refused by check_options already
    # (tests/client/test_options.py, BAD_VALUES); the upper bound is new.
    options: dict[str, Any] = {field: value}
    if field != "page_size":
        options["scheduler"] = None
    with pytest.raises(InvalidInputError) as info:
        ResultsClient.from_webhook("https://portal.example/rest/1/abc123/", **options)
    assert info.value.field == field


# -- what a hostile server sends, served for real ------------------------------------

DEEP = 100_000


def _deep(value: bytes = b"") -> bytes:
    return b"[" * DEEP + value + b"]" * DEEP


def _deep_body() -> bytes:
    return b'{"result":' + _deep() + b"}"


DEEP_BODIES = {
    "deep-result": _deep_body(),
    # A malformed time block sends the body through a second, looser decode.
    "bad-time-then-deep-result": b'{"time":"soon","result":' + _deep() + b"}",
    "deep-time": b'{"result":{"items":[]},"time":{"operating":' + _deep(b"1") + b"}}",
    "deep-error": b'{"error":' + _deep() + b"}",
}


@asynccontextmanager
async def _serve(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 answering every request with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _body(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.list(42), id="list"),
        pytest.param(lambda c: c.call("tasks.task.get", {"id": 1}, api="v2"), id="call-v2-read"),
        pytest.param(lambda c: c.list_legacy(42), id="list-legacy"),
    ],
)
@pytest.mark.parametrize("shape", DEEP_BODIES)
async def test_json_nested_100k_deep_is_a_decode_error(call: Call, shape: str) -> None:
    # Before: RecursionError out of msgspec, through the scheduler, to the user.
    body = DEEP_BODIES[shape]

    async def handler(request: web.Request) -> web.Response:
        return await _body(body)

    async with (
        _serve(handler) as origin,
        ResultsClient.from_webhook(
            f"{origin}/rest/1/abc123/", scheduler=fast_scheduler(max_attempts=1)
        ) as client,
    ):
        with pytest.raises(DecodeError) as info:
            await call(client)
    assert info.value.status == 200


async def test_json_nested_100k_deep_from_the_token_endpoint_is_an_oauth_error() -> None:
    body = _deep_body()

    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/oauth/"):
            return await _body(body)
        return web.json_response({"error": "expired_token"}, status=401)

    async with (
        _serve(handler) as origin,
        oauth_client(
            portal=origin, token_url=f"{origin}/oauth/token/", scheduler=fast_scheduler()
        ) as client,
    ):
        with pytest.raises(OAuthError):
            await client.list(42)


async def test_a_server_sent_id_of_2_64_decodes_and_is_refused_as_input() -> None:
    # The models keep a too-large id as a Python int (no OverflowError); sending it
    # back to the portal is refused before the wire.
    huge = 2**64
    sent: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        sent.append(request.path)
        return web.Response(
            body=msgspec.json.encode(ok({"items": [item(result_id=huge)]})),
            content_type="application/json",
        )

    async with (
        _serve(handler) as origin,
        ResultsClient.from_webhook(
            f"{origin}/rest/1/abc123/", scheduler=fast_scheduler()
        ) as client,
    ):
        [result] = await client.list(42)
        assert result.id == huge
        with pytest.raises(InvalidInputError) as info:
            await client.update(result.id, "x")
        assert info.value.field == "result_id"
        with pytest.raises(InvalidInputError):
            await _drain(client, 42, after_id=result.id)
    assert sent == ["/rest/api/1/abc123/tasks.task.result.list"]


async def test_bulk_add_fails_only_the_item_with_a_lone_surrogate(make_fake_portal: Any) -> None:
    running = make_fake_portal()
    items = [
        NewResult(1, "first"),
        NewResult(2, "bad \ud800 text"),
        NewResult(3, "\u200b\ufeff"),
        NewResult(4, "last"),
    ]
    async with ResultsClient.from_webhook(running.webhook_url) as client:
        report = await client.bulk_add(items)
    assert [o.status for o in report.outcomes] == ["created", "failed", "failed", "created"]
    for failed in (report.outcomes[1], report.outcomes[2]):
        assert isinstance(failed.error, InvalidInputError)
        assert failed.error.field == "text"
    assert sorted(r.text for r in running.portal.ledger.created) == ["first", "last"]
