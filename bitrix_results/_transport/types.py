"""What the scheduler hands the transport, and what comes back.

A :class:`Call` is one logical REST call: everything the scheduler needs to pace
and retry it (its budget keys and retry class) and everything the transport
needs to put it on the wire. Nothing below the client knows more about a REST
method than this.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec

from ..errors import ExpiredTokenError
from ..models import ResponseTime

__all__ = ["Api", "Call", "Reply", "RetryClass", "Transport"]

Api = Literal["v2", "v3"]


class RetryClass(enum.Enum):
    """How safe it is to send a call again when its outcome is unknown (design §2.4).

    Every call may be retried when the portal refused it before executing
    (503 rate limit, 429 operating limit, 401 expired token, connect failure).
    After a timeout, a dropped connection or a 5xx only some may be sent again:
    """

    #: Reads change nothing: always safe to repeat.
    READ = "read"
    #: REST 3.0 writes carrying an Idempotency-Key: the portal replays instead of
    #: executing twice, so repeating with the same key is safe.
    KEYED_WRITE = "keyed_write"
    #: Writes no key protects (REST v2, batches): never repeated blindly; the
    #: caller gets OutcomeUnknownError and must reconcile.
    UNKEYED_WRITE = "unkeyed_write"


@dataclass(frozen=True, slots=True)
class Call:
    """One logical REST call, the same object across all its retries."""

    #: The REST method, e.g. ``tasks.task.result.add``, or ``batch``.
    method: str
    api: Api
    #: The JSON body; a REST 3.0 batch sends a list of ``{method, query}``.
    params: Mapping[str, object] | Sequence[object]
    #: How safe a resend is after an unclear failure (``retry=`` is the RetryPolicy).
    retry_class: RetryClass
    #: Sent as the ``Idempotency-Key`` header; generated once per logical call so
    #: every retry carries the same key (api-facts §4.1).
    idempotency_key: str | None = None
    #: Operating-budget keys this call is charged to, with units: a single call is
    #: ``((method, 1),)``; a batch of n adds is ``(("batch", 1), (add, n))`` because
    #: the portal may bill either (api-facts §2.2, "Batch and operating").
    budget: tuple[tuple[str, int], ...] = ()

    def budget_keys(self) -> tuple[tuple[str, int], ...]:
        return self.budget or ((self.method, 1),)


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response: the raw ``result`` and the decoded ``time`` block."""

    status: int
    result: msgspec.Raw
    time: ResponseTime | None
    #: True when the portal replayed a stored response for our Idempotency-Key.
    replayed: bool = False


class Transport(Protocol):
    """Sends one call and returns its reply or raises a typed error (errors.py)."""

    #: The bucket key: the portal's host. The leaky bucket is per portal and
    #: source address (api-facts §1), so every credential on one portal shares it.
    @property
    def portal(self) -> str: ...

    #: A non-secret fingerprint of the credential: the operating budget is per
    #: method *and* application or webhook (api-facts §2.2).
    @property
    def credential(self) -> str: ...

    async def send(self, call: Call) -> Reply: ...

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        """Refresh an expired OAuth token (one refresh in flight), or re-raise."""
        ...

    async def aclose(self) -> None: ...
