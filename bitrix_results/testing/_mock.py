"""``MockSender``: the HTTP layer replaced by a function, for tests without sockets.

Give a client ``sender=MockSender(handler)`` and every request it would put on the
wire (REST calls and token refreshes alike) goes to ``handler`` instead: URL forms,
auth placement, redirects and decoding still run as in production. This module
imports only the wire types, so it knows nothing about REST methods or fields.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from bitrix_results._transport.wire import RawRequest, RawResponse

__all__ = ["Handler", "MockSender", "RawRequest", "RawResponse"]

#: Takes the request and returns the response, directly or as an awaitable. It may
#: raise a TransportError subclass to act out a network failure (ConnectError,
#: RequestTimeoutError, ConnectionLostError from ``bitrix_results``).
Handler = Callable[[RawRequest], RawResponse | Awaitable[RawResponse]]


class MockSender:
    """An :class:`~bitrix_results._transport.wire.HttpSender` that calls ``handler``.

    ::

        def handler(request: RawRequest) -> RawResponse:
            return RawResponse(200, {"content-type": "application/json"}, b'{"result": []}')

        client = ResultsClient.from_webhook(url, sender=MockSender(handler))

    The handler may be sync or async. Response header names may have any case.
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._handler = handler
        #: Set by ``aclose()`` (the client closes its sender when it is closed).
        self.closed = False

    async def send(self, request: RawRequest) -> RawResponse:
        if self.closed:
            raise RuntimeError("the client is closed")
        response = self._handler(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, RawResponse):
            raise TypeError(f"the handler must return a RawResponse, got {type(response).__name__}")
        # The transport looks header names up in lower case (RawResponse's contract).
        headers = {name.lower(): value for name, value in response.headers.items()}
        return RawResponse(response.status, headers, response.body)

    async def aclose(self) -> None:
        self.closed = True
