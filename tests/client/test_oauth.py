"""OAuth: refresh only on ``expired_token``, one refresh however many calls fail
together, the rotated tokens handed to ``on_tokens`` (api-facts §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bitrix_results import (
    BitrixError,
    ExpiredTokenError,
    InvalidCredentialsError,
    OAuthError,
    OAuthTokens,
    ResultsClient,
)
from bitrix_results._transport import AiohttpSender
from bitrix_results._transport.scrub import ScrubbedError
from bitrix_results.errors import ConnectError, ConnectionLostError, RequestTimeoutError

from ._portal import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    NEW_ACCESS_TOKEN,
    NEW_REFRESH_TOKEN,
    OAUTH,
    REFRESH_TOKEN,
    TOKEN_URL,
    TOKEN_URL_PATTERN,
    WEBHOOK,
    MockPortal,
    fast_scheduler,
    item,
    ok,
    reply,
    v2_error,
)

ADD_URL = OAUTH.url("v3", "tasks.task.result.add")
CALLS = 20

# The token endpoint's answer to a refresh (api-facts §7).
TOKENS = {
    "access_token": NEW_ACCESS_TOKEN,
    "refresh_token": NEW_REFRESH_TOKEN,
    "expires": 1_800_003_600,
    "expires_in": 3600,
    "client_endpoint": "https://portal.example/rest/",
    "server_endpoint": "https://oauth.bitrix.info/rest/",
    "domain": "oauth.bitrix.info",
    "member_id": "a1b2c3",
    "scope": "task,tasks",
    "status": "L",
    "user_id": 1,
}
EXPIRED = v2_error("expired_token", "The access token provided has expired.")


class ExpiringPortal:
    """Refuses the old access token with 401 ``expired_token`` and accepts the new one.

    The first ``warm`` requests with the old token succeed (the token has not
    expired yet). The next ``together`` are held until all of them have
    arrived, so they really fail together.
    """

    def __init__(self, together: int, warm: int = 0) -> None:
        self.together = together
        self.warm = warm
        self.old = 0
        self.new = 0
        self.arrived = asyncio.Event()

    async def handle(self, url: URL, **kwargs: Any) -> Any:
        body = msgspec.json.decode(kwargs["data"])
        if body["auth"] == ACCESS_TOKEN and self.warm > 0:
            self.warm -= 1
            return reply(ok({"item": item(0, body["fields"]["taskId"])}))
        if body["auth"] == ACCESS_TOKEN:
            self.old += 1
            if self.old >= self.together:
                self.arrived.set()
            if self.old <= self.together:
                # Bounded: a scheduler that sends fewer at once must not hang the test.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 2.0)
            return reply(EXPIRED, status=401)
        assert body["auth"] == NEW_ACCESS_TOKEN
        self.new += 1
        return reply(ok({"item": item(self.new, body["fields"]["taskId"])}))


def token_requests(mock: MockPortal) -> list[Any]:
    return [s for s in mock.sent("GET") if s.url.startswith(TOKEN_URL)]


@pytest.mark.parametrize("callback_kind", ["sync", "async"])
async def test_concurrent_expiry_refreshes_once(mock: MockPortal, callback_kind: str) -> None:
    # Two calls first: the scheduler sends a method's calls one at a time until
    # replies have told it the method's cost (its operating budget, api-facts §2.2).
    portal = ExpiringPortal(together=CALLS, warm=2)
    mock.post(ADD_URL, callback=portal.handle, repeat=True)
    mock.get(TOKEN_URL_PATTERN, payload=TOKENS, repeat=True)
    received: list[OAuthTokens] = []

    if callback_kind == "sync":

        def on_tokens(tokens: OAuthTokens) -> None:
            received.append(tokens)

    else:

        async def on_tokens(tokens: OAuthTokens) -> None:  # type: ignore[misc]
            await asyncio.sleep(0)
            received.append(tokens)

    scheduler = fast_scheduler(concurrency=CALLS + 8)
    async with OAUTH.make(scheduler=scheduler, on_tokens=on_tokens) as client:
        await client.add(1, "Before expiry")
        await client.add(2, "Before expiry")
        results = await asyncio.gather(*(client.add(task, "Done") for task in range(1, CALLS + 1)))

        # Later calls use the new token at once.
        await client.add(99, "Later")

    assert sorted(r.task_id for r in results) == list(range(1, CALLS + 1))
    assert portal.old == CALLS
    assert portal.new == CALLS + 1

    # Exactly one refresh, to the token URL, with the documented parameters.
    [refresh] = token_requests(mock)
    assert refresh.params == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    # Every POST went to the portal, and each retry carried the new token.
    posts = mock.sent("POST")
    assert {s.url for s in posts} == {ADD_URL}
    assert sum(s.json["auth"] == NEW_ACCESS_TOKEN for s in posts) == CALLS + 1

    assert len(received) == 1
    assert received[0].access_token == NEW_ACCESS_TOKEN
    assert received[0].refresh_token == NEW_REFRESH_TOKEN
    assert received[0].user_id == 1
    assert client.statistics().retries.get("expired_token") == CALLS


async def test_rotated_refresh_token_is_used_next_time(mock: MockPortal) -> None:
    # Refresh tokens rotate: the second refresh must send the new one (api-facts §7).
    calls = {"n": 0}

    def portal(url: URL, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] in (1, 3):
            return reply(EXPIRED, status=401)
        return reply(ok({"item": item()}))

    mock.post(ADD_URL, callback=portal, repeat=True)
    mock.get(TOKEN_URL_PATTERN, payload=TOKENS)
    second = {**TOKENS, "access_token": "access-3", "refresh_token": "refresh-3"}
    mock.get(TOKEN_URL_PATTERN, payload=second)

    async with OAUTH.make() as client:
        await client.add(42, "Done")
        await client.add(42, "Again")

    refreshes = token_requests(mock)
    assert [r.params["refresh_token"] for r in refreshes] == [REFRESH_TOKEN, NEW_REFRESH_TOKEN]
    posts = mock.sent("POST")
    assert [p.json["auth"] for p in posts] == [
        ACCESS_TOKEN,
        NEW_ACCESS_TOKEN,
        NEW_ACCESS_TOKEN,
        "access-3",
    ]


async def test_refresh_refused_raises_oauth_error(mock: MockPortal) -> None:
    mock.post(ADD_URL, status=401, payload=EXPIRED, repeat=True)
    mock.get(
        TOKEN_URL_PATTERN,
        status=400,
        payload={"error": "invalid_grant", "error_description": "Refresh token has expired"},
        repeat=True,
    )
    received: list[OAuthTokens] = []

    async with OAUTH.make(on_tokens=received.append) as client:
        with pytest.raises(OAuthError) as info:
            await client.add(42, "Done")

    assert info.value.code == "invalid_grant"
    assert "Refresh token has expired" in str(info.value)
    assert len(token_requests(mock)) == 1
    assert len(mock.sent("POST")) == 1
    assert received == []


async def test_token_endpoint_html_raises_oauth_error(mock: MockPortal) -> None:
    mock.post(ADD_URL, status=401, payload=EXPIRED)
    mock.get(
        TOKEN_URL_PATTERN, status=502, body="<html>Bad Gateway</html>", content_type="text/html"
    )

    async with OAUTH.make() as client:
        with pytest.raises(OAuthError):
            await client.add(42, "Done")


async def test_no_refresh_on_other_auth_errors(mock: MockPortal) -> None:
    # Only expired_token triggers a refresh (api-facts §7); a wrong token is final.
    mock.post(ADD_URL, status=401, payload=v2_error("NO_AUTH_FOUND", "Wrong authorization data"))
    mock.get(TOKEN_URL_PATTERN, payload=TOKENS)

    async with OAUTH.make() as client:
        with pytest.raises(InvalidCredentialsError):
            await client.add(42, "Done")

    assert token_requests(mock) == []
    assert len(mock.sent("POST")) == 1


async def test_webhook_cannot_refresh(mock: MockPortal) -> None:
    url = WEBHOOK.url("v3", "tasks.task.result.add")
    mock.post(url, status=401, payload=EXPIRED, repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(ExpiredTokenError):
            await client.add(42, "Done")

    assert mock.sent("GET") == []
    assert len(mock.sent_to(url)) == 1


async def test_secrets_go_only_where_they_belong(mock: MockPortal) -> None:
    # client_secret and the refresh token go to the OAuth server only, never to
    # the portal, which may be self-hosted (api-facts §7).
    portal = ExpiringPortal(together=1)
    mock.post(ADD_URL, callback=portal.handle, repeat=True)
    mock.get(TOKEN_URL_PATTERN, payload=TOKENS)

    async with OAUTH.make() as client:
        await client.add(42, "Done")

    for sent in mock.sent("POST"):
        text = sent.raw.decode() if sent.raw else ""
        for secret in (CLIENT_SECRET, REFRESH_TOKEN, NEW_REFRESH_TOKEN):
            assert secret not in text
            assert secret not in sent.url
            assert secret not in str(sent.headers)
    assert [s.url.split("?")[0] for s in token_requests(mock)] == [TOKEN_URL]


async def test_oauth_client_repr_and_construction() -> None:
    client: ResultsClient = OAUTH.make()
    async with client:
        assert "portal.example" in repr(client)


# -- a failing token request: typed, and no secret in any text --------------------------
#
# The token request is a GET whose query carries client_secret and the refresh token
# (api-facts §7), and aiohttp puts the full URL in some of its messages (a connect timeout
# is "Connection timeout to host <url>"). Real sockets on 127.0.0.1 below: none of
# these tests uses the ``mock`` fixture.

# Characters a URL query percent-encodes, so the encoded forms are checked too.
LEAKY_SECRET = "s3cr3t/client+secret=value"
LEAKY_REFRESH = "refresh/token+old=value"
LEAKY_ACCESS = "access-token-leaky"


def _assert_secret_free(err: BaseException, logs: str, *secrets: str) -> None:
    import traceback
    from urllib.parse import unquote, unquote_plus

    texts = [str(err), repr(err), str(err.__cause__), repr(err.__cause__), logs]
    # Everything a logged traceback would print, the whole chain included.
    texts.append("".join(traceback.format_exception(err)))
    for text in texts:
        # Decoded, so a secret in any URL encoding is found (yarl keeps "/", encodes "+").
        for form in (text, unquote(text), unquote_plus(text)):
            for secret in secrets:
                assert secret not in form


def _oauth_auth(token_url: str) -> Any:
    from bitrix_results._transport import OAuthAuth
    from bitrix_results._transport.urls import parse_portal

    return OAuthAuth(
        parse_portal("https://portal.example"),
        access_token=LEAKY_ACCESS,
        refresh_token=LEAKY_REFRESH,
        client_id=CLIENT_ID,
        client_secret=LEAKY_SECRET,
        token_url=token_url,
    )


def _expired() -> ExpiredTokenError:
    return ExpiredTokenError("expired", code="expired_token", status=401)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _token_server(*, drop: bool) -> Any:
    """A token endpoint on 127.0.0.1 that drops the connection, or never answers."""
    stalled: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if drop:
            writer.close()
        else:
            stalled.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/oauth/token/"
    finally:
        for writer in stalled:
            writer.close()
        server.close()
        await server.wait_closed()


async def _refresh(auth: Any, timeout: float = 10.0) -> BaseException:
    sender = AiohttpSender(timeout=timeout)
    try:
        with pytest.raises(BitrixError) as info:
            await auth.refresh(sender, _expired())
    finally:
        await sender.aclose()
    return info.value


async def test_refresh_to_a_closed_port_is_a_secret_free_connect_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = _oauth_auth(f"http://127.0.0.1:{_closed_port()}/oauth/token/")
    err = await _refresh(auth)
    assert isinstance(err, ConnectError)
    assert err.reason == "refused"
    assert isinstance(err.__cause__, ScrubbedError)
    _assert_secret_free(err, caplog.text, LEAKY_SECRET, LEAKY_REFRESH, LEAKY_ACCESS)
    assert auth.generation == 0


async def test_refresh_dropped_by_the_token_endpoint_is_connection_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _token_server(drop=True) as url:
        err = await _refresh(_oauth_auth(url))
    assert isinstance(err, ConnectionLostError)
    _assert_secret_free(err, caplog.text, LEAKY_SECRET, LEAKY_REFRESH, LEAKY_ACCESS)


async def test_refresh_without_an_answer_is_a_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with _token_server(drop=False) as url:
        err = await _refresh(_oauth_auth(url), timeout=0.3)
    assert isinstance(err, RequestTimeoutError)
    _assert_secret_free(err, caplog.text, LEAKY_SECRET, LEAKY_REFRESH, LEAKY_ACCESS)


class _FailingSession:
    """An aiohttp session whose request raises what aiohttp raises, message built from the URL."""

    def __init__(self, make: Any) -> None:
        self.make = make

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        raise self.make(URL(url))
        yield  # pragma: no cover


def _failing_sender(make: Any) -> AiohttpSender:
    """The real aiohttp sender, its session replaced so a request fails at once."""
    sender = AiohttpSender()
    sender._session = _FailingSession(make)  # type: ignore[assignment]
    return sender


async def test_connect_timeout_message_with_the_url_is_scrubbed() -> None:
    # aiohttp 3.10+: ConnectionTimeoutError(f"Connection timeout to host {url}").
    def make(url: URL) -> BaseException:
        return aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")

    auth = _oauth_auth("http://127.0.0.1:9/oauth/token/")
    with pytest.raises(ConnectError) as info:
        await auth.refresh(_failing_sender(make), _expired())
    err = info.value
    cause = err.__cause__
    assert isinstance(cause, ScrubbedError)
    assert cause.type_name.endswith("ConnectionTimeoutError")
    # The chained error is kept, scrubbed: the host stays, the secrets do not.
    assert "Connection timeout to host http://127.0.0.1:9/oauth/token/" in str(cause)
    assert "***" in str(cause)
    assert CLIENT_ID in str(cause)
    _assert_secret_free(err, "", LEAKY_SECRET, LEAKY_REFRESH, LEAKY_ACCESS)


async def test_an_error_that_shows_the_url_from_an_attribute_is_chained_as_text() -> None:
    # ClientResponseError prints its request URL from an attribute, not from args.
    def make(url: URL) -> BaseException:
        info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
        return aiohttp.ClientResponseError(info, (), status=500, message="boom")

    auth = _oauth_auth("http://127.0.0.1:9/oauth/token/")
    with pytest.raises(ConnectionLostError) as info:
        await auth.refresh(_failing_sender(make), _expired())
    err = info.value
    assert isinstance(err.__cause__, ScrubbedError)
    assert "oauth/token/" in str(err.__cause__)
    assert err.__suppress_context__
    _assert_secret_free(err, "", LEAKY_SECRET, LEAKY_REFRESH, LEAKY_ACCESS)


@pytest.mark.parametrize("endpoint", ["closed", "drops"])
async def test_client_call_with_an_unreachable_token_endpoint(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: the call's expired token cannot be refreshed; a typed, clean error."""
    from bitrix_results import RetryPolicy
    from bitrix_results.testing import FakePortal, PortalConfig, serve_portal

    caplog.set_level(logging.DEBUG)
    portal = FakePortal(PortalConfig(scale=100))
    access, refresh = portal.issue_oauth_tokens()
    portal.expire_access_tokens()
    async with contextlib.AsyncExitStack() as stack:
        if endpoint == "closed":
            token_url = f"http://127.0.0.1:{_closed_port()}/oauth/token/"
        else:
            token_url = await stack.enter_async_context(_token_server(drop=True))
        running = await stack.enter_async_context(serve_portal(portal))
        client = ResultsClient.from_oauth(
            portal=running.base_url,
            access_token=access,
            refresh_token=refresh,
            client_id=portal.config.client_id,
            client_secret=portal.config.client_secret,
            token_url=token_url,
            retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
        )
        async with client:
            with pytest.raises(BitrixError) as info:
                await client.add(1, "Done")
    err = info.value
    # Nothing was sent ambiguously: the refresh's own error, after the retries.
    assert isinstance(err, ConnectError if endpoint == "closed" else ConnectionLostError)
    assert client.statistics().retries.get("expired_token") == 1
    _assert_secret_free(err, caplog.text, portal.config.client_secret, refresh, access)
    assert portal.results_of(1) == []
