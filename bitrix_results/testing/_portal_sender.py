"""The fake portal in-process: :class:`FakePortal` behind a :class:`MockSender`.

Client code runs against the real fake portal (limits, idempotency, faults, the
ledger) with no socket and no server thread: each request the client sends
becomes a :class:`PortalRequest`, and the :class:`PortalResponse` becomes the
reply. Actions that need a connection are acted out as a sender would report
them: a dropped connection is a ``ConnectionLostError``, an answer slower than
``timeout`` a ``RequestTimeoutError``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from bitrix_results._transport.wire import RawRequest, RawResponse
from bitrix_results.errors import ConnectionLostError, RequestTimeoutError

from ._addresses import PortalAddresses
from ._mock import MockSender
from .portal import Action, FakePortal, PortalRequest

__all__ = ["PortalSender"]


class PortalSender(MockSender, PortalAddresses):
    """A sender whose every request is answered by a `FakePortal`, in-process.

    Args:
        portal: The fake portal that answers.
        base_url: Only shapes `webhook_url` and the other URLs: the portal answers
            whatever host the client addresses.
        client: The source address the portal buckets by.
        timeout: Seconds after which a slow answer becomes ``RequestTimeoutError``
            (None: wait for any answer).

    Example:
        ```python
        sender = PortalSender(FakePortal(PortalConfig(scale=100)))
        async with ResultsClient.from_webhook(sender.webhook_url, sender=sender) as client:
            await client.add(1, "Done")
        ```
    """

    def __init__(
        self,
        portal: FakePortal,
        *,
        base_url: str = "https://fake.bitrix24.test",
        client: str = "127.0.0.1",
        timeout: float | None = None,
    ) -> None:
        super().__init__(self._answer)
        #: The fake portal that answers.
        self.portal: FakePortal = portal
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._timeout = timeout

    @property
    def base_url(self) -> str:
        """The origin of `webhook_url` and the other URLs, no trailing slash."""
        return self._base_url

    async def _answer(self, request: RawRequest) -> RawResponse:
        parts = urlsplit(request.url)
        answer = self.portal.handle(
            PortalRequest(
                method=request.method,
                path=parts.path,
                query=parts.query,
                headers=dict(request.headers),
                body=request.body,
                client=self._client,
                base_url=f"{parts.scheme}://{parts.netloc}",
            )
        )
        delay = answer.delay
        if self._timeout is not None and delay >= self._timeout:
            await asyncio.sleep(self._timeout)
            raise RequestTimeoutError("no answer in time (in-process)", method=request.label)
        if delay > 0:
            await asyncio.sleep(delay)
        if answer.action is Action.DROP_AFTER:
            # The call ran and is in the ledger; the client gets no answer at all.
            raise ConnectionLostError("connection dropped (in-process)", method=request.label)
        return RawResponse(answer.status, answer.headers, answer.body)
