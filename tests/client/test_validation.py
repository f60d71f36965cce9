"""Bad input never reaches the wire (design §2.6): a clear error naming the field,
raised before any request, and nothing sent."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bitrix_results import InvalidInputError, Limits, ResultsClient

from ._portal import PORTAL, MockPortal, oauth_client, webhook_client

Call = Callable[[ResultsClient], Awaitable[Any]]


async def _drain(client: ResultsClient, *args: Any, **kwargs: Any) -> list[Any]:
    return [r async for r in client.iter_results(*args, **kwargs)]


CASES: list[tuple[str, Call, str]] = [
    # text
    ("add-empty-text", lambda c: c.add(42, ""), "text"),
    ("add-whitespace-text", lambda c: c.add(42, " \t\n "), "text"),
    ("add-int-text", lambda c: c.add(42, 123), "text"),  # type: ignore[arg-type]
    ("add-none-text", lambda c: c.add(42, None), "text"),  # type: ignore[arg-type]
    ("add-bytes-text", lambda c: c.add(42, b"Done"), "text"),  # type: ignore[arg-type]
    ("update-empty-text", lambda c: c.update(7, ""), "text"),
    ("chat-whitespace-text", lambda c: c.send_chat_message(42, "   "), "text"),
    ("chat-non-str-text", lambda c: c.send_chat_message(42, ["x"]), "text"),  # type: ignore[arg-type]
    # ids
    ("add-zero-task", lambda c: c.add(0, "Done"), "task_id"),
    ("add-negative-task", lambda c: c.add(-1, "Done"), "task_id"),
    ("add-bool-task", lambda c: c.add(True, "Done"), "task_id"),
    ("add-float-task", lambda c: c.add(42.0, "Done"), "task_id"),  # type: ignore[arg-type]
    ("add-str-task", lambda c: c.add("42", "Done"), "task_id"),  # type: ignore[arg-type]
    ("add-none-task", lambda c: c.add(None, "Done"), "task_id"),  # type: ignore[arg-type]
    ("chat-message-zero", lambda c: c.add_from_chat_message(0), "message_id"),
    ("chat-message-bool", lambda c: c.add_from_chat_message(True), "message_id"),
    ("update-zero-id", lambda c: c.update(0, "x"), "result_id"),
    ("update-str-id", lambda c: c.update("7", "x"), "result_id"),  # type: ignore[arg-type]
    ("delete-negative-id", lambda c: c.delete(-5), "result_id"),
    ("delete-float-id", lambda c: c.delete(7.5), "result_id"),  # type: ignore[arg-type]
    ("delete-bool-id", lambda c: c.delete(True), "result_id"),
    ("list-zero-task", lambda c: c.list(0), "task_id"),
    ("list-legacy-negative-task", lambda c: c.list_legacy(-42), "task_id"),
    ("list-legacy-str-task", lambda c: c.list_legacy("42"), "task_id"),  # type: ignore[arg-type]
    ("add-from-comment-zero", lambda c: c.add_from_comment(0), "comment_id"),
    ("add-from-comment-bool", lambda c: c.add_from_comment(True), "comment_id"),
    ("delete-from-comment-str", lambda c: c.delete_from_comment("1"), "comment_id"),  # type: ignore[arg-type]
    ("delete-from-comment-float", lambda c: c.delete_from_comment(1.0), "comment_id"),  # type: ignore[arg-type]
    ("chat-zero-task", lambda c: c.send_chat_message(0, "Hi"), "task_id"),
    # idempotency key (api-facts §4.1: 1-255 printable ASCII)
    ("key-empty", lambda c: c.add(42, "Done", idempotency_key=""), "idempotency_key"),
    ("key-too-long", lambda c: c.add(42, "Done", idempotency_key="k" * 256), "idempotency_key"),
    ("key-non-ascii", lambda c: c.add(42, "Done", idempotency_key="ключ"), "idempotency_key"),
    ("key-control", lambda c: c.add(42, "Done", idempotency_key="a\nb"), "idempotency_key"),
    # list options
    ("list-unknown-status", lambda c: c.list(42, status="done"), "status"),  # type: ignore[arg-type]
    ("list-status-case", lambda c: c.list(42, status="OPEN"), "status"),  # type: ignore[arg-type]
    ("list-zero-author", lambda c: c.list(42, author_id=0), "author_id"),
    ("list-bad-order-field", lambda c: c.list(42, order={"text": "ASC"}), "order"),  # type: ignore[dict-item]
    ("list-bad-order-direction", lambda c: c.list(42, order={"id": "asc"}), "order[id]"),  # type: ignore[dict-item]
    ("list-empty-order", lambda c: c.list(42, order={}), "order"),
    ("list-order-not-mapping", lambda c: c.list(42, order=[("id", "ASC")]), "order"),  # type: ignore[arg-type]
    ("list-zero-limit", lambda c: c.list(42, limit=0), "limit"),
    ("list-bool-limit", lambda c: c.list(42, limit=True), "limit"),
    ("list-negative-offset", lambda c: c.list(42, offset=-1), "offset"),
    # iter_results checks on the first step of the iteration
    ("iter-zero-task", lambda c: _drain(c, 0), "task_id"),
    ("iter-unknown-status", lambda c: _drain(c, 42, status="x"), "status"),
    ("iter-zero-page", lambda c: _drain(c, 42, page_size=0), "page_size"),
    ("iter-negative-after", lambda c: _drain(c, 42, after_id=-1), "after_id"),
    # call
    ("call-bad-method", lambda c: c.call("tasks task get"), "method"),
    ("call-empty-method", lambda c: c.call(""), "method"),
    ("call-path-method", lambda c: c.call("../1/abc/tasks.task.get"), "method"),
    ("call-query-method", lambda c: c.call("tasks.task.get?auth=x"), "method"),
    ("call-non-str-method", lambda c: c.call(123), "method"),  # type: ignore[arg-type]
    ("call-bad-api", lambda c: c.call("tasks.task.get", api="v4"), "api"),  # type: ignore[arg-type]
    ("call-bad-params", lambda c: c.call("tasks.task.get", [1, 2]), "params"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_refused_before_sending(mock: MockPortal, call: Call, field: str) -> None:
    async with webhook_client() as client:
        with pytest.raises(InvalidInputError) as info:
            await call(client)

    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert field in str(info.value)
    assert mock.requests == {}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://portal.example/1/abc123/", id="no-rest"),
        pytest.param("https://portal.example/rest/api/api/1/abc123/", id="api-twice"),
        pytest.param("https://portal.example/rest/v3/1/abc123/", id="other-prefix"),
        pytest.param("https://portal.example/rest/abc/abc123/", id="non-numeric-user"),
        pytest.param("https://portal.example/rest/0/abc123/", id="user-zero"),
        pytest.param("https://portal.example/rest/1/", id="no-code"),
        pytest.param("https://portal.example/rest/1/abc123/tasks.task.get", id="method-in-path"),
        pytest.param("http://portal.example/rest/1/abc123/", id="http-non-loopback"),
        pytest.param("https://portal.example/rest/1/abc123/?auth=x", id="query-string"),
        pytest.param("https://portal.example/rest/1/abc123/#frag", id="fragment"),
        pytest.param("https://user:pw@portal.example/rest/1/abc123/", id="userinfo"),
        pytest.param("ftp://portal.example/rest/1/abc123/", id="ftp"),
        pytest.param("portal.example/rest/1/abc123/", id="no-scheme"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
    ],
)
def test_bad_webhook_url(mock: MockPortal, url: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        webhook_client(url=url)
    assert isinstance(info.value, ValueError)
    assert info.value.field == "webhook_url"
    assert mock.requests == {}


@pytest.mark.parametrize("path", ["/rest/api/7/abc123/", "/rest/api/7/abc123"])
def test_the_rest_3_webhook_form_is_the_same_webhook(path: str) -> None:
    from bitrix_results._transport.urls import parse_webhook

    assert parse_webhook("https://portal.example" + path) == parse_webhook(
        "https://portal.example/rest/7/abc123/"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example/rest/1/abc123/",
        "https://portal.example/rest/1/abc123",
        "https://portal.bitrix24.com/rest/15/a_b-C9/",
        "http://127.0.0.1:8024/rest/1/abc123/",
        "http://localhost:8024/rest/1/abc123/",
        "http://[::1]:8024/rest/1/abc123/",
    ],
)
async def test_good_webhook_url(url: str) -> None:
    async with webhook_client(url=url) as client:
        assert client is not None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"access_token": ""}, "access_token", id="empty-access"),
        pytest.param({"refresh_token": "  "}, "refresh_token", id="blank-refresh"),
        pytest.param({"client_id": None}, "client_id", id="none-client-id"),
        pytest.param({"client_secret": ""}, "client_secret", id="empty-secret"),
        pytest.param({"portal": "http://portal.example"}, "portal", id="http-portal"),
        pytest.param({"portal": f"{PORTAL}/some/path"}, "portal", id="portal-path"),
        pytest.param({"portal": ""}, "portal", id="empty-portal"),
        pytest.param(
            {"token_url": "http://oauth.example/oauth/token/"}, "token_url", id="http-token"
        ),
    ],
)
def test_bad_oauth_options(mock: MockPortal, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        oauth_client(**options)
    assert info.value.field == field
    assert mock.requests == {}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda c: c.add("12a", "Done"),
            "task_id: must be a positive int, got '12a'",
            id="str-task-shows-the-value",
        ),
        pytest.param(
            lambda c: c.add("x" * 100, "Done"),
            f"task_id: must be a positive int, got '{'x' * 40}...'",
            id="long-str-is-cut-short",
        ),
        pytest.param(
            lambda c: c.add(14.0, "Done"),
            "task_id: must be a positive int, got float",
            id="other-types-by-name",
        ),
        pytest.param(
            lambda c: c.add(-3, "Done"), "task_id: must be a positive int, got -3", id="negative"
        ),
        pytest.param(
            lambda c: _drain(c, 42, after_id="7"),
            "after_id: must be an int >= 0, got '7'",
            id="non-negative-str",
        ),
        pytest.param(
            lambda c: _drain(c, 42, after_id=-1),
            "after_id: must be an int >= 0, got -1",
            id="non-negative-negative",
        ),
    ],
)
async def test_messages_name_the_field_and_show_the_value(
    mock: MockPortal, call: Call, message: str
) -> None:
    async with webhook_client() as client:
        with pytest.raises(InvalidInputError) as info:
            await call(client)
    assert str(info.value) == message
    assert mock.requests == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0, -1.0, True, "2"])
@pytest.mark.parametrize("field", ["drain_per_second", "operating_limit", "operating_window"])
def test_limits_refuse_non_finite_and_non_positive(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}: must be a positive finite number"):
        Limits(**{field: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0, -2.0, False, None])
def test_limits_scaled_refuses_non_finite_factors(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^factor: must be a positive finite number"):
        Limits.standard().scaled(bad)  # type: ignore[arg-type]


def test_limits_scaled_out_of_range_is_refused() -> None:
    # A factor that overflows a rate to inf is refused, not turned into an infinite bucket.
    with pytest.raises(ValueError, match="finite"):
        Limits.standard().scaled(1e308)
    assert Limits.standard().scaled(100).drain_per_second == 200.0
