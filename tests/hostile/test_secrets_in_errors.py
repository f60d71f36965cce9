"""Items 1-2 of issue 9 ("Secrets"): nothing reachable from a library error holds a secret.

Malformed responses make aiohttp raise errors whose text and attributes carry the
full request URL (the webhook code; for OAuth, the token endpoint's query with
client_secret and refresh_token). Server text (error messages quoting the request
path, a token endpoint echoing its query) is scrubbed where it enters an error.
Every test drives the real aiohttp transport against a local server.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

import msgspec
import pytest

from bitrix_results import (
    BitrixError,
    InvalidRequestError,
    OAuthError,
    PortalError,
    TransportError,
)
from bitrix_results._transport.scrub import ScrubbedError

from ._helpers import (
    ACCESS,
    CLIENT_SECRET,
    CODE,
    REFRESH,
    assert_logs_clean,
    assert_no_secret,
    oauth,
    webhook,
)
from .conftest import Received, ServeFactory, Server, response

# Heads aiohttp refuses to parse: each raises an error that quotes the request URL.
MALFORMED = {
    "header-line-over-8k": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "thousands-of-headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(3000))
    + b"\r\n",
    "garbage-status-line": b"HTTP/1.1 OOPS not a status\r\nContent-Length: 0\r\n\r\n",
    "not-http": b"\x16\x03\x01 garbage \xff\xfe\r\n\r\n",
}


def _answer(raw: bytes):  # type: ignore[no-untyped-def]
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_response_leaves_no_secret_in_the_error_chain(
    serve: ServeFactory, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(_answer(raw))
    async with webhook(server.origin) as client:
        with pytest.raises(TransportError) as info:
            await client.list(42)
    err = info.value
    # The request went out with the code in its path: there was something to leak.
    assert CODE in server.received[0].target
    assert_no_secret(err)
    # What logger.exception() and traceback.format_exc() print.
    logger = logging.getLogger("test.hostile")
    with caplog.at_level(logging.ERROR):
        try:
            raise err
        except BitrixError:
            logger.exception("the call failed")
            formatted = traceback.format_exc()
    assert "the call failed" in caplog.text
    assert CODE not in formatted
    assert_logs_clean(caplog)
    # The chain still tells what happened (it used to be cut: no cause at all),
    # as a text-only copy of aiohttp's error with the code scrubbed.
    assert "127.0.0.1" in str(err)
    cause = err.__cause__
    assert isinstance(cause, ScrubbedError)
    assert cause.type_name.startswith("aiohttp.")
    assert not vars(cause).keys() - {"type_name"}


async def test_a_malformed_token_endpoint_answer_leaks_no_client_secret(
    serve: ServeFactory,
) -> None:
    """The refresh GETs ?client_secret=...&refresh_token=...; aiohttp's error quotes it."""

    async def portal(request: Received, writer: asyncio.StreamWriter) -> None:
        body = msgspec.json.encode({"error": "expired_token", "error_description": "expired"})
        writer.write(response(401, body, reason="Unauthorized"))
        await writer.drain()

    token = await serve(_answer(MALFORMED["header-line-over-8k"]))
    site = await serve(portal)
    async with oauth(site.origin, f"{token.origin}/oauth/token/") as client:
        with pytest.raises(TransportError) as info:
            await client.list(42)
    assert CLIENT_SECRET in token.received[0].target
    assert_no_secret(info.value)


# -- server text ------------------------------------------------------------------------


def _error(status: int, body: object) -> object:
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, msgspec.json.encode(body), reason="Error"))
        await writer.drain()

    return handler


async def test_a_portal_error_quoting_the_request_path_is_scrubbed(serve: ServeFactory) -> None:
    path = f"/rest/api/7/{CODE}/tasks.task.result.list"
    server = await serve(
        _error(
            400,
            {
                "error": {
                    "code": "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION",
                    "message": f"Bad request to {path} (webhook {CODE})",
                    "validation": [{"field": f"url:{CODE}", "message": f"see {path}"}],
                }
            },
        )
    )
    async with webhook(server.origin) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.list(42)
    err = info.value
    assert_no_secret(err)
    # Scrubbed, not dropped: the user still reads what the portal said.
    assert "Bad request to /rest/api/7/***/tasks.task.result.list" in err.message
    assert err.validation[0].message == "see /rest/api/7/***/tasks.task.result.list"


async def test_a_v2_error_description_echoing_the_auth_token_is_scrubbed(
    serve: ServeFactory,
) -> None:
    site = await serve(
        _error(400, {"error": "ERROR_CORE", "error_description": f"auth={ACCESS} is odd"})
    )
    async with oauth(site.origin, "http://127.0.0.1:9/oauth/token/") as client:
        with pytest.raises(PortalError) as info:
            await client.call("tasks.task.get", {"taskId": 1}, api="v2")
    assert_no_secret(info.value)
    assert "is odd" in str(info.value)


async def test_a_token_endpoint_echoing_its_query_is_scrubbed(serve: ServeFactory) -> None:
    async def token(request: Received, writer: asyncio.StreamWriter) -> None:
        # Echoes the query it got, secrets included, in its error description.
        body = {"error": "invalid_grant", "error_description": f"refused {request.target}"}
        writer.write(response(400, msgspec.json.encode(body), reason="Bad Request"))
        await writer.drain()

    async def portal(request: Received, writer: asyncio.StreamWriter) -> None:
        body = msgspec.json.encode({"error": "expired_token", "error_description": "expired"})
        writer.write(response(401, body, reason="Unauthorized"))
        await writer.drain()

    endpoint: Server = await serve(token)
    site = await serve(portal)
    async with oauth(site.origin, f"{endpoint.origin}/oauth/token/") as client:
        with pytest.raises(OAuthError) as info:
            await client.list(42)
    err = info.value
    assert REFRESH in endpoint.received[0].target
    assert_no_secret(err)
    assert err.code == "invalid_grant"
    assert "client_secret=***" in err.message
    assert "/oauth/token/" in err.message
