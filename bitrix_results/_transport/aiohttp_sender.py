"""The aiohttp sender: the only module of the library that imports the aiohttp client.

It moves bytes and nothing else: no URL forms, no auth, no redirects (every
request is sent with ``allow_redirects=False``), no decoding. A failed exchange
becomes a library error in one place, :func:`transport_error`, and what it
chains to is first cleaned by the one scrubber (``scrub.py``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from ..errors import ConnectError, ConnectionLostError, RequestTimeoutError, TransportError
from .scrub import scrubbed
from .wire import RawRequest, RawResponse

__all__ = ["AiohttpSender", "transport_error"]

# aiohttp exception -> library error and message, most specific first: the first
# row whose type matches wins, so no row may follow one of its base classes (a
# unit test checks the order). The class says how far the request got (design
# §2.4): ConnectError never reached the portal; the others may have executed.
_ERRORS: tuple[tuple[type[BaseException], type[TransportError], str], ...] = (
    (aiohttp.ClientConnectorCertificateError, ConnectError, "{host}'s certificate was refused"),
    (aiohttp.ClientSSLError, ConnectError, "the TLS handshake with {host} failed"),
    *(
        # aiohttp >= 3.11 tells a failed name lookup apart.
        ((dns, ConnectError, "could not resolve {host}"),)
        if (dns := getattr(aiohttp, "ClientConnectorDNSError", None)) is not None
        else ()
    ),
    (aiohttp.ClientConnectorError, ConnectError, "could not connect to {host}"),
    (aiohttp.ConnectionTimeoutError, ConnectError, "timed out connecting to {host}"),
    (aiohttp.ServerTimeoutError, RequestTimeoutError, "no answer in time from {host}"),
    # The session's total timeout is a plain asyncio timeout.
    (TimeoutError, RequestTimeoutError, "no answer in time from {host}"),
    (aiohttp.ServerDisconnectedError, ConnectionLostError, "{host} closed the connection"),
    (aiohttp.ClientPayloadError, ConnectionLostError, "the response from {host} was cut short"),
    (aiohttp.ClientResponseError, ConnectionLostError, "a malformed response from {host}"),
    (aiohttp.ClientOSError, ConnectionLostError, "the connection to {host} was lost"),
    (aiohttp.ClientError, ConnectionLostError, "the exchange with {host} failed ({name})"),
)


def transport_error(exc: BaseException, request: RawRequest) -> TransportError:
    """The library error for a failed exchange; its message names the host, never the URL."""
    host = urlsplit(request.url).hostname or "the portal"
    target: type[TransportError] = ConnectionLostError
    message = "the exchange with {host} failed ({name})"
    for source, mapped, text in _ERRORS:
        if isinstance(exc, source):
            target, message = mapped, text
            break
    return target(message.format(host=host, name=type(exc).__name__), method=request.label)


class AiohttpSender:
    """Sends raw requests over one aiohttp session, created inside the running loop.

    ``timeout`` caps one HTTP exchange: a cloud portal cuts a request off after
    60 s (api-facts §1), so the default waits a little longer than that.
    """

    def __init__(
        self,
        *,
        timeout: float = 65.0,
        connect_timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            # Created lazily so it binds to the loop that actually runs the calls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
            )
        return self._session

    async def send(self, request: RawRequest) -> RawResponse:
        session = self._session or self._get_session()
        try:
            async with session.request(
                request.method,
                request.url,
                data=request.body or None,
                headers=request.headers,
                allow_redirects=False,
            ) as resp:
                # resp.headers is case-insensitive, as RawResponse asks.
                return RawResponse(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure: BaseException = exc
        # Raised outside the except block, so the unscrubbed error is not even kept
        # as the new error's __context__; one whose text cannot be cleaned (some
        # build it from attributes, such as a request URL) is not chained at all.
        raise transport_error(failure, request) from scrubbed(failure, request.secrets)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
