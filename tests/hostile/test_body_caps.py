"""Item 4 of issue 9 ("Bounded everything"): no answer is read past ``max_body_bytes``.

Before, bodies were read whole: an endless chunked body grew without end, a
200 MB body was accepted, and a 1 MiB gzip body inflated to 1 GiB in memory (the
OAuth token endpoint's too). Now reading stops at the cap, raw or inflated, with
a typed error; for a write no key protects, an unknown outcome.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib

import msgspec
import pytest

from bitrix_results import OutcomeUnknownError, ResponseTooLargeError
from bitrix_results._options import DEFAULT_MAX_BODY_BYTES

from ._helpers import assert_no_secret, oauth, webhook
from .conftest import Received, ServeFactory, Server, response

MiB = 1024 * 1024
CAP = 1 * MiB
# A handler that writes "forever" stops here by itself, so a test always ends.
CEILING = 256 * MiB


def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB of zeros (no trailer: never reached).

    After a full flush the compressor's output for the same 1 MiB block repeats
    byte for byte, so the bomb is built from two compressed blocks, not 1 GiB.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    head = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    middle = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    return head + middle * 1023


def _endless_chunked(server: list[Server]):  # type: ignore[no-untyped-def]
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        await server[0].write(writer, (head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b'{"result": ' + b" " * (64 * 1024)
        piece = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while server[0].written < CEILING:
            await server[0].write(writer, piece)

    return handler


def _declared(size: int, server: list[Server]):  # type: ignore[no-untyped-def]
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        )
        await server[0].write(writer, head.encode())
        block = b" " * (256 * 1024)
        sent = 0
        while sent < size and server[0].written < CEILING:
            await server[0].write(writer, block)
            sent += len(block)

    return handler


def _gzip(body: bytes):  # type: ignore[no-untyped-def]
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, body, {"Content-Encoding": "gzip"}))
        await writer.drain()

    return handler


async def test_an_endless_chunked_body_stops_at_the_cap(serve: ServeFactory) -> None:
    holder: list[Server] = []
    holder.append(await serve(_endless_chunked(holder)))
    async with webhook(holder[0].origin, max_body_bytes=CAP) as client:
        with pytest.raises(ResponseTooLargeError, match="max_body_bytes") as info:
            await client.list(42)
    assert_no_secret(info.value)
    # Reading stopped near the cap: the server got no further than socket buffers allow.
    await asyncio.sleep(0.05)
    assert holder[0].written < CAP + 16 * MiB


async def test_a_200_mb_body_is_refused_by_default_without_reading_it(
    serve: ServeFactory,
) -> None:
    holder: list[Server] = []
    holder.append(await serve(_declared(200 * 1000 * 1000, holder)))
    async with webhook(holder[0].origin) as client:
        with pytest.raises(ResponseTooLargeError):
            await client.list(42)
    await asyncio.sleep(0.05)
    assert holder[0].written < DEFAULT_MAX_BODY_BYTES


async def test_a_gzip_bomb_stops_at_the_cap_in_bounded_memory(serve: ServeFactory) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1.1 * MiB
    server = await serve(_gzip(bomb))
    tracemalloc.start()
    try:
        async with webhook(server.origin, max_body_bytes=4 * MiB) as client:
            with pytest.raises(ResponseTooLargeError, match="inflated"):
                await client.list(42)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bomb itself (~1 MiB, read as it arrives) plus at most the cap inflated:
    # nowhere near the 1 GiB it inflates to.
    assert peak < 32 * MiB, peak


async def test_a_gzip_body_under_the_cap_is_inflated(serve: ServeFactory) -> None:
    body = msgspec.json.encode({"result": {"items": []}})
    server = await serve(_gzip(zlib.compress(body, wbits=16 + zlib.MAX_WBITS)))
    async with webhook(server.origin) as client:
        assert await client.list(42) == []
    # We asked only for what we can inflate under the cap.
    assert server.received[0].headers["accept-encoding"] == "gzip, deflate"


async def test_a_token_endpoint_gzip_bomb_stops_at_the_cap(serve: ServeFactory) -> None:
    async def portal(request: Received, writer: asyncio.StreamWriter) -> None:
        body = msgspec.json.encode({"error": "expired_token", "error_description": "expired"})
        writer.write(response(401, body, reason="Unauthorized"))
        await writer.drain()

    token = await serve(_gzip(gzip_bomb()))
    site = await serve(portal)
    tracemalloc.start()
    try:
        async with oauth(site.origin, f"{token.origin}/oauth/token/", max_body_bytes=CAP) as c:
            with pytest.raises(ResponseTooLargeError) as info:
                await c.list(42)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(token.received) == 1
    assert peak < 32 * MiB, peak
    assert_no_secret(info.value)


async def test_an_answer_over_the_cap_after_a_write_is_an_unknown_outcome(
    serve: ServeFactory,
) -> None:
    """The write may have run: a REST v2 write (no key) is not sent again."""
    holder: list[Server] = []
    holder.append(await serve(_declared(2 * CAP, holder)))
    async with webhook(holder[0].origin, attempts=3, max_body_bytes=CAP) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add_from_comment(5)
    assert isinstance(info.value.cause, ResponseTooLargeError)
    assert len(holder[0].received) == 1
