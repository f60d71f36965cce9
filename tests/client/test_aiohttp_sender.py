"""The aiohttp sender: aiohttp's failures mapped to library errors in one table, scrubbed.

The mapping is checked two ways: each aiohttp exception through the sender (its
session made to raise it), and the failures that matter on real sockets on
127.0.0.1 (refused, no answer, a dropped connection, a response that is not HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import traceback
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bitrix_results import (
    ConnectError,
    ConnectionLostError,
    RequestTimeoutError,
    ResultsClient,
    RetryPolicy,
    TransportError,
)
from bitrix_results._transport import AiohttpSender, RawRequest
from bitrix_results._transport.aiohttp_sender import _ERRORS
from bitrix_results._transport.scrub import ScrubbedError

CODE = "SECRETCODE123"
TOKEN = "tok/en+with=chars"
SECRETS = (CODE, TOKEN)


def test_no_row_is_shadowed_by_an_earlier_one() -> None:
    # The first matching row wins: a row after one of its base classes never would.
    for i, (later, *_) in enumerate(_ERRORS):
        for earlier, *_ in _ERRORS[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} after {earlier.__name__}"


class _FailingSession:
    """An aiohttp session whose request raises what ``make`` builds from the URL."""

    def __init__(self, make: Callable[[URL], BaseException]) -> None:
        self.make = make

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[Any]:
        raise self.make(URL(url))
        yield  # pragma: no cover


def _failing(make: Callable[[URL], BaseException]) -> AiohttpSender:
    sender = AiohttpSender()
    sender._session = _FailingSession(make)  # type: ignore[assignment]
    return sender


def _request(host: str = "portal.example") -> RawRequest:
    url = f"https://{host}/rest/api/1/{CODE}/batch?auth=tok%2Fen%2Bwith%3Dchars"
    return RawRequest("POST", url, {}, b"[]", "batch", SECRETS)


def _refused(url: URL) -> BaseException:
    key = types.SimpleNamespace(host=url.host, port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))  # type: ignore[arg-type]


def _cause_is(err: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``err`` chains to a scrubbed copy of an error of type ``kind``."""
    cause = err.__cause__
    name = f"{kind.__module__}.{kind.__qualname__}"
    return isinstance(cause, ScrubbedError) and cause.type_name == name


def _texts(err: BaseException) -> list[str]:
    return [str(err), repr(err), "".join(traceback.format_exception(err))]


def _assert_secret_free(err: BaseException) -> None:
    from urllib.parse import unquote, unquote_plus

    for text in _texts(err):
        for form in (text, unquote(text), unquote_plus(text)):
            for secret in SECRETS:
                assert secret not in form


@pytest.mark.parametrize(
    ("make", "cls"),
    [
        pytest.param(_refused, ConnectError, id="refused"),
        pytest.param(
            lambda u: aiohttp.ConnectionTimeoutError(f"Connection timeout to host {u}"),
            ConnectError,
            id="connect-timeout",
        ),
        pytest.param(lambda u: TimeoutError(), RequestTimeoutError, id="total-timeout"),
        pytest.param(
            lambda u: aiohttp.SocketTimeoutError(f"Timeout on reading data from {u}"),
            RequestTimeoutError,
            id="socket-timeout",
        ),
        pytest.param(
            lambda u: aiohttp.ServerDisconnectedError(), ConnectionLostError, id="disconnected"
        ),
        pytest.param(
            lambda u: aiohttp.ClientOSError(104, "Connection reset by peer"),
            ConnectionLostError,
            id="reset",
        ),
        pytest.param(
            lambda u: aiohttp.ClientPayloadError("Response payload is not completed"),
            ConnectionLostError,
            id="payload",
        ),
        pytest.param(
            lambda u: aiohttp.ClientConnectionError("closed"),
            ConnectionLostError,
            id="other-client-error",
        ),
    ],
)
async def test_each_failure_maps_to_its_error(
    make: Callable[[URL], BaseException], cls: type[TransportError]
) -> None:
    with pytest.raises(TransportError) as info:
        await _failing(make).send(_request())
    err = info.value
    assert type(err) is cls
    assert err.method == "batch"
    assert "portal.example" in str(err)
    # Chained to a text-only copy of aiohttp's error, never to the error itself.
    assert _cause_is(err, type(make(URL("https://x"))))
    _assert_secret_free(err)


async def test_a_url_in_the_message_is_scrubbed_and_the_host_kept() -> None:
    # aiohttp words a connect timeout "Connection timeout to host <full URL>".
    def make(url: URL) -> BaseException:
        return aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")

    with pytest.raises(ConnectError) as info:
        await _failing(make).send(_request())
    cause = info.value.__cause__
    assert _cause_is(info.value, aiohttp.ConnectionTimeoutError)
    assert "https://portal.example/rest/api/1/***/batch" in str(cause)
    _assert_secret_free(info.value)


async def test_an_error_that_shows_the_url_from_an_attribute_is_chained_as_text() -> None:
    """BUG (fixed): REST errors were cleaned with a plain replace on ``args`` only.

    ``ClientResponseError`` prints its request URL (webhook code, and a v3 batch's
    token in the query) from an attribute, so the old scrubber let it through.
    Now the cause is a scrubbed text copy: the URL shows with ``***``.
    """

    def make(url: URL) -> BaseException:
        info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
        return aiohttp.ClientResponseError(info, (), status=400, message="bad")

    with pytest.raises(ConnectionLostError) as info:
        await _failing(make).send(_request())
    assert _cause_is(info.value, aiohttp.ClientResponseError)
    assert "/rest/api/1/***/batch" in str(info.value.__cause__)
    assert info.value.__suppress_context__
    _assert_secret_free(info.value)


# -- real sockets on 127.0.0.1 ----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _server(answer: bytes | None, *, close: bool) -> AsyncIterator[str]:
    """A one-trick HTTP server: reads a request, then writes ``answer`` and/or closes."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            with contextlib.suppress(Exception):
                await writer.drain()
        if close:
            writer.close()
        else:
            held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/rest/1/{CODE}/"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def _client(url: str, *, timeout: float = 5.0) -> ResultsClient:
    retry = RetryPolicy.no_backoff(max_attempts=2)
    return ResultsClient.from_webhook(url, retry=retry, timeout=timeout)


async def _fail(url: str, *, timeout: float = 5.0) -> BaseException:
    async with _client(url, timeout=timeout) as client:
        with pytest.raises(TransportError) as info:
            await client.list(1)  # a read: retried, then its own error
    return info.value


async def test_connection_refused_is_a_connect_error() -> None:
    err = await _fail(f"http://127.0.0.1:{_closed_port()}/rest/1/{CODE}/")
    assert isinstance(err, ConnectError)
    assert _cause_is(err, aiohttp.ClientConnectorError)
    assert err.method == "tasks.task.result.list"
    _assert_secret_free(err)


async def test_no_answer_in_time_is_a_request_timeout() -> None:
    async with _server(None, close=False) as url:
        err = await _fail(url, timeout=0.3)
    assert isinstance(err, RequestTimeoutError)
    _assert_secret_free(err)


async def test_a_dropped_connection_is_connection_lost() -> None:
    async with _server(None, close=True) as url:
        err = await _fail(url)
    assert isinstance(err, ConnectionLostError)
    assert _cause_is(err, aiohttp.ServerDisconnectedError)
    _assert_secret_free(err)


async def test_a_response_that_is_not_http_is_connection_lost() -> None:
    async with _server(b"this is not HTTP at all\r\n\r\n", close=True) as url:
        err = await _fail(url)
    assert isinstance(err, ConnectionLostError)
    _assert_secret_free(err)


async def test_a_body_cut_short_is_connection_lost() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    async with _server(head + b'{"result": ', close=True) as url:
        err = await _fail(url)
    assert isinstance(err, ConnectionLostError)
    assert _cause_is(err, aiohttp.ClientPayloadError)
    _assert_secret_free(err)


async def test_a_closed_sender_refuses() -> None:
    sender = AiohttpSender()
    await sender.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send(_request())
