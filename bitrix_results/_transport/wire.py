"""The HTTP seam: raw requests and responses, and the sender that exchanges them.

Everything above this seam (URL forms, auth placement, redirects, decoding) is
ours and is the same whatever carries the bytes; everything below it is one
:class:`HttpSender`. The library ships one for aiohttp (``aiohttp_sender.py``,
the only module that imports the aiohttp client) and one for tests
(:class:`bitrix_results.testing.MockSender`). It imports no HTTP client, so a
sender written elsewhere depends on nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from .scrub import scrub_text

__all__ = ["HttpSender", "RawRequest", "RawResponse"]


# msgspec Structs, not dataclasses: two are built per HTTP exchange, and a frozen
# Struct is built several times faster (gc=False: they hold no cycles).


class RawRequest(msgspec.Struct, frozen=True, gc=False):
    """One HTTP request, exactly as it goes on the wire.

    ``url`` is complete and already encoded, query included. ``label`` and
    ``secrets`` are not sent: ``label`` names the request in an error message
    (the REST method, or None), and ``secrets`` are the values a sender must
    keep out of every error it raises, because they travel in the URL or body
    (a webhook code, a token, a client secret).
    """

    method: str
    url: str
    headers: Mapping[str, str] = {}
    body: bytes = b""
    label: str | None = None
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # The URL may hold a webhook code or a token: show where, never what.
        return f"RawRequest({self.method!r}, {scrub_text(self.url, self.secrets)!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("method", self.method), ("url", scrub_text(self.url, self.secrets))]


class RawResponse(msgspec.Struct, frozen=True, gc=False):
    """One HTTP response: status, headers and the whole body.

    ``headers`` is either a case-insensitive mapping or has lower-case names:
    the transport looks names up in lower case.
    """

    status: int
    headers: Mapping[str, str] = {}
    body: bytes = b""


class HttpSender(Protocol):
    """Sends one :class:`RawRequest` and returns its :class:`RawResponse`.

    A sender follows no redirect and reads the whole body. When the exchange
    fails it raises a :class:`~bitrix_results.errors.TransportError` subclass
    that says how far the request got: ``ConnectError`` (never sent, safe to
    repeat), ``RequestTimeoutError`` or ``ConnectionLostError`` (sent, may have
    executed). Its errors carry none of ``request.secrets``.
    """

    async def send(self, request: RawRequest) -> RawResponse: ...

    async def aclose(self) -> None: ...
