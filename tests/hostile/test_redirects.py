"""Item 3 of issue 9: redirects carry credentials only where the user allows.

A domain-change redirect is re-posted with the body, so the webhook code (or the
OAuth token) goes along: only to the same host or an allow-listed one, never from
https to http (loopback included), and a malformed Location is a typed error.
Real aiohttp transport, local servers on 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from bitrix_results import RedirectRefusedError

from ._helpers import CODE, LIST, assert_no_secret, item, ok, webhook
from .conftest import Received, ServeFactory, response


def _redirect(location: str):  # type: ignore[no-untyped-def]
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(response(307, b"", {"Location": location}, reason="Temporary Redirect"))
        await writer.drain()

    return handler


async def _portal(request: Received, writer: asyncio.StreamWriter) -> None:
    writer.write(response(200, ok({"items": [item()]})))
    await writer.drain()


def _path(method: str = LIST) -> str:
    return f"/rest/api/7/{CODE}/{method}"


async def test_a_redirect_to_another_loopback_host_is_refused(serve: ServeFactory) -> None:
    """Before: any loopback host counted as the same portal and got the code."""
    other = await serve(_portal, host="127.0.0.2")
    first = await serve(_redirect(other.origin + _path()))
    async with webhook(first.origin) as client:
        with pytest.raises(RedirectRefusedError, match="another host") as info:
            await client.list(42)
    assert other.received == []
    assert_no_secret(info.value)


async def test_an_allow_listed_host_is_followed(serve: ServeFactory) -> None:
    other = await serve(_portal, host="127.0.0.2")
    first = await serve(_redirect(other.origin + _path()))
    async with webhook(first.origin, follow_redirects_to="127.0.0.2") as client:
        [listed] = await client.list(42)
    assert listed.id == 1
    [moved] = other.received
    # Re-posted, body and all.
    assert moved.method == "POST"
    assert moved.body == first.received[0].body


async def test_https_to_http_is_refused_even_on_one_loopback_host(
    serve: ServeFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """Before: between loopback hosts a redirect went from https to http, code in clear."""
    plain = await serve(_portal)
    secure = await serve(_redirect(plain.origin + _path()), tls=server_tls)
    async with webhook(secure.origin, ssl=client_tls) as client:
        with pytest.raises(RedirectRefusedError, match="https to http"):
            await client.list(42)
    assert len(secure.received) == 1
    assert plain.received == []


async def test_https_to_http_is_refused_even_when_allow_listed(
    serve: ServeFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    plain = await serve(_portal, host="127.0.0.2")
    secure = await serve(_redirect(plain.origin + _path()), tls=server_tls)
    options = {"ssl": client_tls, "follow_redirects_to": "127.0.0.2"}
    async with webhook(secure.origin, **options) as client:
        with pytest.raises(RedirectRefusedError):
            await client.list(42)
    assert plain.received == []


@pytest.mark.parametrize(
    "location", ["http://[::1/", "https://[zz::1]/x", "http://127.0.0.1:99999/x", "http://"]
)
async def test_a_malformed_location_is_a_typed_error(serve: ServeFactory, location: str) -> None:
    """Before: ``http://[::1/`` raised a raw ValueError out of urlsplit."""
    first = await serve(_redirect(location))
    async with webhook(first.origin) as client:
        with pytest.raises(RedirectRefusedError) as info:
            await client.list(42)
    assert_no_secret(info.value)
