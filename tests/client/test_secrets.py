"""Secrets stay secret (design §2.7): webhook codes, access and refresh tokens and
client secrets never appear in logs, reprs, exception messages or their causes."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Iterator

import pytest

from bitrix_results import (
    AccessDeniedError,
    ConnectionLostError,
    DecodeError,
    InvalidInputError,
    OAuthError,
    OAuthTokens,
    OutcomeUnknownError,
    RedirectRefusedError,
    ResultsClient,
)
from bitrix_results.sync import ResultsClient as SyncClient

from ._portal import (
    PORTAL,
    TOKEN_URL_PATTERN,
    MockPortal,
    item,
    oauth_client,
    ok,
    v2_error,
    v3_error,
    webhook_client,
)

CODE = "SECRETCODE123"
ACCESS = "ACCESSSECRET456"
REFRESH = "REFRESHSECRET789"
CLIENT_SECRET = "CLIENTSECRET000"
NEW_ACCESS = "NEWACCESSSECRET111"
NEW_REFRESH = "NEWREFRESHSECRET222"
SECRETS = (CODE, ACCESS, REFRESH, CLIENT_SECRET, NEW_ACCESS, NEW_REFRESH)

WEBHOOK_URL = f"{PORTAL}/rest/7/{CODE}/"


def v3(method: str) -> str:
    return f"{PORTAL}/rest/api/7/{CODE}/{method}"


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything an exception shows: str, repr, the formatted chain, every cause."""
    yield "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(vars(current)) if hasattr(current, "__dict__") else ""
        current = current.__cause__ or current.__context__


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        at = text.find(secret)
        # Show only the neighbourhood of a leak, not a whole traceback.
        assert at < 0, f"{secret!r} leaked in {where}: ...{text[max(0, at - 60) : at + 40]!r}..."


def assert_exception_clean(exc: BaseException) -> None:
    for text in exception_texts(exc):
        assert_clean(text, f"{type(exc).__name__}")


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert_clean(formatter.format(record), f"log record {record.name}")
        assert_clean(repr(record.args), f"log args {record.name}")


def assert_reprs_clean(client: ResultsClient) -> None:
    transport = client._transport
    auth = transport.auth  # type: ignore[attr-defined]
    for name, obj in (
        ("client", client),
        ("scheduler", client.scheduler),
        ("statistics", client.statistics()),
        ("transport", transport),
        ("auth", auth),
        ("endpoint", auth.endpoint),
    ):
        assert_clean(repr(obj), f"repr({name})")
        assert_clean(str(obj), f"str({name})")


async def test_webhook_secrets(mock: MockPortal, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mock.post(v3("tasks.task.result.add"), payload=ok({"item": item()}))
    mock.post(
        v3("tasks.task.result.delete"),
        status=403,
        payload=v3_error("BITRIX_REST_V3_EXCEPTION_ACCESSDENIEDEXCEPTION", "Access denied"),
    )
    mock.post(v3("tasks.task.result.list"), status=503, body="<html>x</html>", repeat=True)
    mock.post(
        v3("tasks.task.result.update"),
        status=500,
        payload=v2_error("INTERNAL_SERVER_ERROR"),
        repeat=True,
    )
    mock.post(
        v3("tasks.task.chat.message.send"),
        status=302,
        headers={
            "Location": f"https://evil.example/rest/api/7/{CODE}/tasks.task.chat.message.send"
        },
    )
    mock.post(
        v3("tasks.task.result.addfromchatmessage"),
        exception=ConnectionLostError("the connection to portal.example was lost"),
        repeat=True,
    )
    errors: list[BaseException] = []

    async with webhook_client(url=WEBHOOK_URL) as client:
        await client.add(42, "Done")
        failing: list[tuple[Callable[[], Awaitable[object]], type[Exception]]] = [
            (lambda: client.delete(7), AccessDeniedError),
            (lambda: client.list(42), DecodeError),
            (lambda: client.update(7, "x"), OutcomeUnknownError),
            (lambda: client.send_chat_message(42, "x"), RedirectRefusedError),
            (lambda: client.add_from_chat_message(5), OutcomeUnknownError),
            (lambda: client.add(0, "x"), InvalidInputError),
            (lambda: client.call("not a method"), InvalidInputError),
        ]
        for call, expected in failing:
            with pytest.raises(expected) as info:
                await call()
            errors.append(info.value)
        assert_reprs_clean(client)

    with pytest.raises(InvalidInputError) as bad_url:
        webhook_client(url=f"http://portal.example/rest/7/{CODE}/")
    errors.append(bad_url.value)
    with pytest.raises(InvalidInputError) as bad_query:
        webhook_client(url=f"{WEBHOOK_URL}?x={CODE}")
    errors.append(bad_query.value)

    for exc in errors:
        assert_exception_clean(exc)
    assert (
        mock.sent_to(f"https://evil.example/rest/api/7/{CODE}/tasks.task.chat.message.send") == []
    )
    assert_logs_clean(caplog)
    assert caplog.records, "expected the client to log something at DEBUG"


async def test_oauth_secrets(mock: MockPortal, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    add = f"{PORTAL}/rest/api/tasks.task.result.add"
    expired = v2_error("expired_token", "The access token provided has expired.")
    mock.post(add, status=401, payload=expired)
    mock.post(add, payload=ok({"item": item()}))
    mock.get(TOKEN_URL_PATTERN, payload={"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH})
    received: list[OAuthTokens] = []
    options = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "client_secret": CLIENT_SECRET,
    }

    async with oauth_client(on_tokens=received.append, **options) as client:
        await client.add(42, "Done")
        assert_reprs_clean(client)
    [tokens] = received
    assert tokens.access_token == NEW_ACCESS
    assert_clean(repr(tokens), "repr(OAuthTokens)")
    assert_clean(str(tokens), "str(OAuthTokens)")

    # A refused refresh.
    mock.post(add, status=401, payload=expired)
    mock.get(
        TOKEN_URL_PATTERN,
        status=400,
        payload={"error": "invalid_grant", "error_description": "The refresh token is invalid"},
    )
    async with oauth_client(**options) as client:
        with pytest.raises(OAuthError) as refused:
            await client.add(42, "Done")
    assert_exception_clean(refused.value)

    # A token endpoint that echoes the request back in a non-JSON page.
    mock.post(add, status=401, payload=expired)
    mock.get(TOKEN_URL_PATTERN, status=500, body=f"<html>bad request {CLIENT_SECRET}</html>")
    async with oauth_client(**options) as client:
        with pytest.raises(OAuthError) as broken:
            await client.add(42, "Done")
    assert_exception_clean(broken.value)

    # Construction errors must not echo what they refused.
    with pytest.raises(InvalidInputError) as bad_portal:
        oauth_client(portal=f"http://portal.example/{ACCESS}", **options)
    assert_exception_clean(bad_portal.value)

    assert_logs_clean(caplog)


def test_sync_client_repr() -> None:
    with SyncClient.from_webhook(WEBHOOK_URL) as client:
        assert_clean(repr(client), "repr(sync client)")
        assert "portal.example" in repr(client)
