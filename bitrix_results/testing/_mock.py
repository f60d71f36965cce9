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
    """An HTTP sender that calls ``handler`` instead of the network.

    Pass it as ``sender=`` to `ResultsClient.from_webhook` or ``from_oauth``: URL
    forms, auth placement, redirects and decoding still run as in production.

    Args:
        handler: Takes a `RawRequest` and returns a `RawResponse`, sync or async.
            It may raise ``ConnectError``, ``RequestTimeoutError`` or
            ``ConnectionLostError`` to act out a network failure. Response header
            names may have any case.

    Raises:
        TypeError: ``handler`` is not callable. (When it is called, a handler that
            returns something other than a `RawResponse` raises ``TypeError`` too.)

    Example:
        ```python
        def handler(request: RawRequest) -> RawResponse:
            return RawResponse(200, {"content-type": "application/json"}, b'{"result": []}')

        client = ResultsClient.from_webhook(url, sender=MockSender(handler))
        ```
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._handler = handler
        #: Set by ``aclose()`` (the client closes its sender when it is closed).
        self.closed: bool = False

    async def send(self, request: RawRequest) -> RawResponse:
        """Answer one request through the handler (the client calls this).

        Args:
            request: The request the client would put on the wire.

        Returns:
            The handler's response, its header names in lower case.

        Raises:
            RuntimeError: The sender was closed.
            TypeError: The handler returned something other than a `RawResponse`.
        """
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
        """Mark the sender closed; the client calls it when it is closed."""
        self.closed = True
