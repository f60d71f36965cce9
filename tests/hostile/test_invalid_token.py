"""Item 7 (issue 10): a 401 ``invalid_token`` refreshes once, single-flight, then gives up.

A local portal refuses tokens it does not know with ``invalid_token``; a local
token endpoint hands out a new pair. Real aiohttp transport.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from bitrix_results import InvalidCredentialsError

from ._helpers import ACCESS, REFRESH, oauth, ok, webhook
from .conftest import NEW_ACCESS, NEW_REFRESH, Received, ServeFactory, Server, response

INVALID = msgspec.json.encode(
    {"error": "invalid_token", "error_description": "The access token provided is invalid."}
)


def _portal(good: set[str]):  # type: ignore[no-untyped-def]
    """Answers a list for a token in ``good``, invalid_token for any other."""

    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        token = msgspec.json.decode(request.body).get("auth")
        if token in good:
            writer.write(response(200, ok({"items": []})))
        else:
            writer.write(response(401, INVALID, reason="Unauthorized"))
        await writer.drain()

    return handler


async def _token_endpoint(request: Received, writer: asyncio.StreamWriter) -> None:
    query = parse_qs(urlsplit(request.target).query)
    assert query["refresh_token"] in ([REFRESH], [NEW_REFRESH])
    # Slow enough that concurrent calls all wait on the one refresh in flight.
    await asyncio.sleep(0.05)
    body = {
        "access_token": NEW_ACCESS,
        "refresh_token": NEW_REFRESH,
        "expires_in": 3600,
        "scope": "task",
        "domain": "portal",
        "member_id": "m",
        "user_id": 1,
    }
    writer.write(response(200, msgspec.json.encode(body)))
    await writer.drain()


async def test_invalid_token_is_refreshed_once_and_the_call_repeated(
    serve: ServeFactory,
) -> None:
    token: Server = await serve(_token_endpoint)
    site = await serve(_portal({NEW_ACCESS}))
    async with oauth(site.origin, f"{token.origin}/oauth/token/", attempts=5) as client:
        assert await client.list(42) == []
    assert len(token.received) == 1
    sent = [msgspec.json.decode(r.body)["auth"] for r in site.received]
    assert sent == [ACCESS, NEW_ACCESS]


async def test_concurrent_calls_share_one_refresh(serve: ServeFactory) -> None:
    token: Server = await serve(_token_endpoint)
    site = await serve(_portal({NEW_ACCESS}))
    async with oauth(site.origin, f"{token.origin}/oauth/token/", attempts=5) as client:
        lists = await asyncio.gather(*(client.list(t) for t in range(1, 9)))
    assert lists == [[]] * 8
    assert len(token.received) == 1


async def test_a_refreshed_token_refused_again_is_the_typed_error(serve: ServeFactory) -> None:
    """Before: no refresh at all. Now one, and then the error stands: no refresh loop."""
    token: Server = await serve(_token_endpoint)
    site = await serve(_portal(set()))  # knows no token at all
    async with oauth(site.origin, f"{token.origin}/oauth/token/", attempts=10) as client:
        with pytest.raises(InvalidCredentialsError) as info:
            await client.list(42)
        assert info.value.code == "invalid_token"
        # A later call does not refresh again: the credentials are simply bad.
        with pytest.raises(InvalidCredentialsError):
            await client.list(43)
    assert len(token.received) == 1
    assert len(site.received) == 3


async def test_a_webhook_answered_invalid_token_does_not_refresh(serve: ServeFactory) -> None:
    site = await serve(_portal(set()))
    async with webhook(site.origin, attempts=5) as client:
        with pytest.raises(InvalidCredentialsError):
            await client.list(42)
    assert len(site.received) == 1
