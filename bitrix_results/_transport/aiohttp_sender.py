"""The aiohttp sender: the only module of the library that imports the aiohttp client.

It moves bytes and nothing else: no URL forms, no auth, no redirects (every
request is sent with ``allow_redirects=False``), no decoding beyond the content
encoding. A failed exchange becomes a library error in one place,
:func:`transport_error`, chained to a text-only copy made by the one scrubber
(``scrub.py``), never to aiohttp's own exception (its attributes hold the URL).

Every answer is bounded (design §2.6): the body is read in pieces and reading
stops at ``max_body_bytes``, counted both on the wire and after inflating a
gzip or deflate body, which this module does itself, piece by piece, so a
small compressed body cannot inflate past the cap in memory.
"""

from __future__ import annotations

import errno
import ssl as _ssl
import urllib.request
import zlib
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from ..errors import (
    ConnectError,
    ConnectionLostError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
)
from .scrub import scrubbed_copy
from .wire import RawRequest, RawResponse

__all__ = ["DEFAULT_MAX_BODY_BYTES", "AiohttpSender", "transport_error"]

#: The largest answer read, raw or inflated: 32 MiB. A result page of 50 items
#: with long texts is well under 1 MiB, and a REST v2 batch of 50 such pages
#: stays far below this; anything larger is not an answer we asked for.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

# The encodings we can inflate piece by piece. Asked for explicitly, so aiohttp's
# default (which adds "br" when brotli is installed) never brings one we cannot.
_ACCEPT_ENCODING = "gzip, deflate"
_READ_SIZE = 64 * 1024

_Reason = Literal["refused", "dns", "tls", "timeout", "other"]

# aiohttp exception -> library error, ConnectError reason and message, most
# specific first: the first row whose type matches wins, so no row may follow
# one of its base classes (a unit test checks the order). The class says how
# far the request got (design §2.4): ConnectError never reached the portal; the
# others may have executed.
_ERRORS: tuple[tuple[type[BaseException], type[TransportError], _Reason, str], ...] = (
    (
        aiohttp.ClientConnectorCertificateError,
        ConnectError,
        "tls",
        "TLS handshake failed: {host}'s certificate was refused",
    ),
    (aiohttp.ClientSSLError, ConnectError, "tls", "TLS handshake failed with {host}"),
    (aiohttp.ClientConnectorDNSError, ConnectError, "dns", "name not resolved: {host}"),
    (aiohttp.ClientProxyConnectionError, ConnectError, "other", "could not reach the proxy"),
    (aiohttp.ClientConnectorError, ConnectError, "other", "could not connect to {host}"),
    (aiohttp.ConnectionTimeoutError, ConnectError, "timeout", "timed out connecting to {host}"),
    (aiohttp.ServerTimeoutError, RequestTimeoutError, "other", "no answer in time from {host}"),
    # The session's total timeout is a plain asyncio timeout.
    (TimeoutError, RequestTimeoutError, "other", "no answer in time from {host}"),
    (aiohttp.ServerDisconnectedError, ConnectionLostError, "other", "{host} closed the connection"),
    (
        aiohttp.ClientPayloadError,
        ConnectionLostError,
        "other",
        "the response from {host} was cut short",
    ),
    # The proxy refused the tunnel: the request never reached the portal.
    (aiohttp.ClientHttpProxyError, ConnectError, "other", "the proxy refused the tunnel"),
    (aiohttp.ClientResponseError, ConnectionLostError, "other", "a malformed response from {host}"),
    (aiohttp.ClientOSError, ConnectionLostError, "other", "the connection to {host} was lost"),
    (
        aiohttp.ClientError,
        ConnectionLostError,
        "other",
        "the exchange with {host} failed ({name})",
    ),
)


def transport_error(exc: BaseException, request: RawRequest) -> TransportError:
    """The library error for a failed exchange; its message names the host, never the URL."""
    host = urlsplit(request.url).hostname or "the portal"
    target: type[TransportError] = ConnectionLostError
    reason: _Reason = "other"
    message = "the exchange with {host} failed ({name})"
    for source, mapped, why, text in _ERRORS:
        if isinstance(exc, source):
            target, reason, message = mapped, why, text
            break
    if target is ConnectError and reason == "other" and _refused(exc):
        reason, message = "refused", "connection refused by {host}"
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            message = "connection refused by the proxy"
    text = message.format(host=host, name=type(exc).__name__)
    if target is ConnectError:
        return ConnectError(text, method=request.label, reason=reason)
    return target(text, method=request.label)


def _refused(exc: BaseException) -> bool:
    """Whether nothing listened on the port: ECONNREFUSED, however aiohttp wraps it."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError):
        return True
    code = getattr(os_error, "errno", None) or getattr(exc, "errno", None)
    return code == errno.ECONNREFUSED


def _password(url: str | None) -> str | None:
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


class _BodyTooLarge(Exception):
    """Raised inside the read loop; becomes ResponseTooLargeError with the host."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


class _Inflater:
    """Inflates a gzip or deflate body piece by piece, never past ``limit`` bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        # 16 + MAX_WBITS: a gzip header; MAX_WBITS: zlib; -MAX_WBITS: raw deflate
        # (some servers send "deflate" without the zlib header).
        wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._raw_fallback = encoding == "deflate"
        self._inflater = zlib.decompressobj(wbits)
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._started = False

    def feed(self, data: bytes) -> None:
        if not self._started and self._raw_fallback and data and (data[0] & 0x0F) != 8:
            # Not a zlib header (its low nibble is 8, "deflate"): raw deflate.
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._started = True
        self._inflate(data)

    def _inflate(self, data: bytes) -> None:
        try:
            while data:
                # At most one byte over the cap per step: enough to know it is over.
                out = self._inflater.decompress(data, self._limit - self._size + 1)
                self._size += len(out)
                if self._size > self._limit:
                    raise _BodyTooLarge("inflated")
                self._parts.append(out)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof:
                    return
        except zlib.error:
            raise _Undecodable from None

    def body(self) -> bytes:
        return b"".join(self._parts)


class _Undecodable(Exception):
    """The body claimed an encoding it does not have."""


class AiohttpSender:
    """Sends raw requests over one aiohttp session, created inside the running loop.

    ``timeout`` caps one HTTP exchange: a cloud portal cuts a request off after
    60 s (api-facts §1), so the default waits a little longer than that.
    ``max_body_bytes`` caps an answer, raw and inflated (default 32 MiB).
    ``trust_env`` reads proxies from ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``
    (default on, as in httpx); ``proxy`` names one explicitly and wins over the
    environment. ``ssl`` is an :class:`ssl.SSLContext` (a private CA), or
    ``False`` to skip certificate checks (only through the client option with
    the loud name, ``insecure_skip_tls_verify``). ``headers`` are sent with
    every request; the client refuses the names it sets itself.
    """

    def __init__(
        self,
        *,
        timeout: float = 65.0,
        connect_timeout: float = 10.0,
        max_connections: int = 32,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        trust_env: bool = True,
        proxy: str | None = None,
        ssl: _ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._proxy = proxy
        self._ssl = ssl
        self._headers = {**(headers or {}), "Accept-Encoding": _ACCEPT_ENCODING}
        # The environment's proxies, read once, and the answer for each origin:
        # aiohttp's own trust_env looks them up on every request, which costs
        # more than the rest of a request's client-side work.
        self._env_proxies = urllib.request.getproxies_environment() if trust_env else {}
        proxies = [proxy, *(url for name, url in self._env_proxies.items() if name != "no")]
        # A proxy's password travels in its URL: keep it out of errors too.
        self._own_secrets = tuple(p for p in map(_password, proxies) if p)
        self._proxy_of: dict[tuple[str, str], str | None] = {}
        # No environment to consult: every request takes the ``proxy`` option as is.
        self._fixed_proxy = proxy is not None or not self._env_proxies
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _proxy_for(self, url: str) -> str | None:
        """The proxy for ``url``: the ``proxy`` option, else the environment's (NO_PROXY kept)."""
        if self._fixed_proxy:
            return self._proxy
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        if origin not in self._proxy_of:
            if len(self._proxy_of) > 64:  # a few origins in practice; never unbounded
                self._proxy_of.clear()
            found = self._env_proxies.get(parts.scheme) or self._env_proxies.get("all")
            # NO_PROXY (and, on macOS and Windows, the system's exceptions).
            if found and urllib.request.proxy_bypass(parts.netloc):
                found = None
            self._proxy_of[origin] = found
        return self._proxy_of[origin]

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            # Created lazily so it binds to the loop that actually runs the calls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                timeout=self._timeout,
                headers=self._headers,
                # Inflated here, under the cap (_Inflater), not by aiohttp.
                auto_decompress=False,
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
                proxy=self._proxy if self._fixed_proxy else self._proxy_for(request.url),
            ) as resp:
                length = resp.content_length
                encoding = resp.headers.get("Content-Encoding")
                if (
                    length is not None
                    and length <= self._max_body
                    and (not encoding or not encoding.strip())
                ):
                    # The common case, without the _read coroutine: the parser
                    # stops at the declared length, under the cap.
                    body = await resp.read()
                else:
                    body = await self._read(resp, length, (encoding or "").strip().lower())
                # resp.headers is case-insensitive, as RawResponse asks.
                return RawResponse(resp.status, resp.headers, body)
        except _BodyTooLarge as exc:
            host = urlsplit(request.url).hostname or "the portal"
            what = "inflated " if exc.what == "inflated" else ""
            raise ResponseTooLargeError(
                f"the {what}answer from {host} is over {self._max_body} bytes "
                "(max_body_bytes); reading stopped there",
                method=request.label,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # OSError: a socket error aiohttp let through; ValueError: a URL or
            # header aiohttp refused (its text may quote the URL).
            failure: BaseException = exc
        # Raised outside the except block, so aiohttp's error is not even kept as
        # the new error's __context__: its attributes (the request URL) no
        # scrubbing of text can reach. The cause is a text-only, scrubbed copy.
        secrets = (*request.secrets, *self._own_secrets)
        raise transport_error(failure, request) from scrubbed_copy(failure, secrets)

    async def _read(self, resp: aiohttp.ClientResponse, length: int | None, encoding: str) -> bytes:
        """The body, read in pieces and never past the cap, raw or inflated.

        ``length`` is the declared Content-Length, if any; ``encoding`` the
        Content-Encoding, lower case. A body with a length and no encoding under
        the cap never comes here (``send`` reads it whole).
        """
        limit = self._max_body
        if length is not None and length > limit:
            raise _BodyTooLarge("raw")
        inflater = _Inflater(encoding, limit) if encoding in ("gzip", "x-gzip", "deflate") else None
        parts: list[bytes] = []
        size = 0
        try:
            async for piece in resp.content.iter_chunked(_READ_SIZE):
                size += len(piece)
                if size > limit:
                    raise _BodyTooLarge("raw")
                if inflater is not None:
                    inflater.feed(piece)
                else:
                    parts.append(piece)
        except _Undecodable:
            # Not the encoding it claims: what inflated so far is handed on, and
            # the codec refuses it as any body that is not JSON (DecodeError).
            return inflater.body() if inflater is not None else b""
        if inflater is not None:
            return inflater.body()
        return b"".join(parts)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
