"""Item 6 (issue 9, "fail fast"): ConnectError says why, in ``reason`` and in words.

Real sockets: a closed port (refused), a name that does not resolve (dns; the
resolver is replaced so nothing leaves the machine), a plain-TCP server spoken to
with https (tls), a self-signed certificate (tls).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiohttp
import pytest

from bitrix_results import ConnectError, ResultsClient, RetryPolicy
from bitrix_results._transport import AiohttpSender

from ._helpers import CODE, assert_no_secret, webhook
from .conftest import Received, ServeFactory


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _connect_error(client: ResultsClient) -> ConnectError:
    async with client:
        with pytest.raises(ConnectError) as info:
            await client.list(42)
    assert_no_secret(info.value)
    return info.value


async def test_refused() -> None:
    err = await _connect_error(webhook(f"http://127.0.0.1:{_closed_port()}"))
    assert err.reason == "refused"
    assert "connection refused" in str(err)


class _NoSuchName(aiohttp.abc.AbstractResolver):
    """A resolver that answers "no such name" at once, as a resolver does for ``.invalid``."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> Any:
        raise OSError(socket.EAI_NONAME, f"Name or service not known: {host}")

    async def close(self) -> None:
        return None


class _OfflineSender(AiohttpSender):
    """The real sender with its resolver replaced: no DNS query leaves the machine."""

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=_NoSuchName())
            )
        return self._session


async def test_dns() -> None:
    client = ResultsClient.from_webhook(
        f"https://nonexistent.invalid/rest/7/{CODE}/",
        sender=_OfflineSender(),
        retry=RetryPolicy(max_attempts=1),
    )
    err = await _connect_error(client)
    assert err.reason == "dns"
    assert "name not resolved" in str(err)
    assert "nonexistent.invalid" in str(err)


async def test_tls_against_a_plain_tcp_server() -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # What a plain HTTP server does with a TLS hello: 400, and close.
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        err = await _connect_error(webhook(f"https://127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()
    assert err.reason == "tls"
    assert "TLS handshake failed" in str(err)


async def test_tls_with_a_certificate_nobody_trusts(
    serve: ServeFactory, server_tls: ssl.SSLContext
) -> None:
    async def never(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await serve(never, tls=server_tls)
    err = await _connect_error(webhook(server.origin))
    assert err.reason == "tls"
    assert "certificate" in str(err)
    assert server.received == []
