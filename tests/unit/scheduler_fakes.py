"""Fakes for the scheduler's unit tests: a scripted transport and a tiny portal model.

Nothing here touches the network: replies are ``Reply`` objects with chosen
``ResponseTime`` blocks, errors are the library's typed errors, and time is
the virtual loop's (``bitrix_results.testing.virtual_time``).

``PortalModel`` is written from the facts file, independently of the client
and of the fake portal package: a leaky bucket (api-facts §1) and ten-basket
operating budgets (api-facts §2.2).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from bitrix_results._scheduler.limits import Limits
from bitrix_results._transport.types import Call, Reply, RetryClass
from bitrix_results.errors import (
    ExpiredTokenError,
    OperatingLimitError,
    RateLimitError,
)
from bitrix_results.models import ResponseTime

ADD = "tasks.task.result.add"
LIST = "tasks.task.result.list"

Handler = Callable[[Call, int], Awaitable[Reply]]
Outcome = Reply | BaseException | Callable[[], Awaitable[Reply]]


def now() -> float:
    return asyncio.get_running_loop().time()


def make_call(
    method: str = ADD,
    retry: RetryClass = RetryClass.READ,
    *,
    budget: tuple[tuple[str, int], ...] = (),
    key: str | None = None,
) -> Call:
    return Call(
        method=method,
        api="v3",
        params={"fields": {"taskId": 1, "text": "x"}},
        retry_class=retry,
        idempotency_key=key,
        budget=budget,
    )


def batch_call(size: int = 50) -> Call:
    """A REST 3.0 batch of ``size`` adds: one request, charged to batch and to add."""
    return Call(
        method="batch",
        api="v3",
        params=[{"method": ADD, "query": {}}] * size,
        retry_class=RetryClass.KEYED_WRITE,
        idempotency_key="k",
        budget=(("batch", 1), (ADD, size)),
    )


def ok(
    operating: float | None = None,
    reset_at: float | None = None,
    *,
    start: float | None = None,
    replayed: bool = False,
    no_time: bool = False,
) -> Reply:
    time = (
        None
        if no_time
        else ResponseTime(start=start, operating=operating, operating_reset_at=reset_at)
    )
    return Reply(status=200, result=msgspec.Raw(b"null"), time=time, replayed=replayed)


def rate_limit() -> RateLimitError:
    return RateLimitError("Too many requests", code="QUERY_LIMIT_EXCEEDED", status=503)


def operating_limit() -> OperatingLimitError:
    return OperatingLimitError(
        "Method is blocked due to operation time limit", code="OPERATION_TIME_LIMIT", status=429
    )


def expired() -> ExpiredTokenError:
    return ExpiredTokenError(
        "The access token provided has expired", code="expired_token", status=401
    )


class FakeTransport:
    """Implements the ``Transport`` protocol; ``handler(call, n)`` answers the n-th send."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        portal: str = "portal.example",
        credential: str = "cred-1",
    ) -> None:
        self._handler = handler or _always_ok
        self._portal = portal
        self._credential = credential
        self.sent: list[tuple[float, Call]] = []
        self.refreshed: list[ExpiredTokenError] = []

    @property
    def portal(self) -> str:
        return self._portal

    @property
    def credential(self) -> str:
        return self._credential

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.sent]

    async def send(self, call: Call) -> Reply:
        n = len(self.sent)
        self.sent.append((now(), call))
        return await self._handler(call, n)

    async def refresh_auth(self, error: ExpiredTokenError) -> None:
        self.refreshed.append(error)

    async def aclose(self) -> None:
        pass


async def _always_ok(call: Call, n: int) -> Reply:
    return ok(no_time=True)


def script(*outcomes: Outcome) -> Handler:
    """Answer send n with ``outcomes[n]`` (the last one repeats): a Reply or an error."""

    async def handler(call: Call, n: int) -> Reply:
        outcome = outcomes[min(n, len(outcomes) - 1)]
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, Reply):
            return outcome
        return await outcome()

    return handler


@dataclass
class _Basket:
    opened: float
    total: float


@dataclass
class PortalModel:
    """The portal's two limits, enforced on virtual time (api-facts §1, §2.2).

    ``cost`` is charged per unit of the billed key: ``billed="nested"`` charges a
    batch's commands to the nested method, ``"batch"`` charges the whole batch's
    cost to ``batch`` (api-facts §2.2: unresolved, so tests try both). ``latency`` is
    split evenly before and after execution. ``neighbour`` requests per second
    of another tenant behind our address (api-facts §1) keep the bucket fuller.
    """

    limits: Limits
    cost: float = 0.0
    jitter: float = 0.0
    latency: float = 0.0
    report: bool = True
    billed: str = "nested"
    neighbour: float = 0.0
    epoch: float = 1_800_000_000.0
    seed: int = 7
    level: float = 0.0
    updated: float = 0.0
    executed: int = 0
    refused_503: int = 0
    refused_429: int = 0
    baskets: dict[str, deque[_Basket]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _drain(self, at: float) -> None:
        elapsed = at - self.updated
        if elapsed > 0:
            self.updated = at
            net = (self.neighbour - self.limits.drain_per_second) * elapsed
            self.level = min(float(self.limits.burst), max(0.0, self.level + net))

    def _live(self, method: str, at: float) -> deque[_Basket]:
        baskets = self.baskets.setdefault(method, deque())
        while baskets and baskets[0].opened + self.limits.operating_window <= at:
            baskets.popleft()
        return baskets

    def total(self, method: str, at: float) -> float:
        return sum(b.total for b in self._live(method, at))

    def _charges(self, call: Call) -> Sequence[tuple[str, float]]:
        if call.method == "batch" and call.budget:
            units = dict(call.budget)
            commands = sum(u for m, u in call.budget if m != "batch")
            if self.billed == "batch":
                return [("batch", self.cost * commands)]
            return [(m, self.cost * u) for m, u in units.items() if m != "batch"]
        return [(call.method, self.cost)]

    async def send(self, call: Call) -> Reply:
        if self.latency:
            await asyncio.sleep(self.latency / 2)
        at = now()
        self._drain(at)
        if self.level + 1 > self.limits.burst + 1e-9:
            self.refused_503 += 1
            raise rate_limit()
        charges = self._charges(call)
        for method, _ in charges:
            if self.total(method, at) > self.limits.operating_limit + 1e-9:
                self.refused_429 += 1
                raise operating_limit()
        self.level += 1
        self.executed += 1
        reading: tuple[float, float] | None = None
        for method, amount in charges:
            baskets = self._live(method, at)
            if not baskets or at >= baskets[-1].opened + self.limits.operating_window / 10:
                baskets.append(_Basket(opened=at, total=0.0))
            spread = 1 + self.jitter * (2 * self._rng.random() - 1)
            baskets[-1].total += amount * spread
            reading = (self.total(method, at), baskets[0].opened + self.limits.operating_window)
        if self.latency:
            await asyncio.sleep(self.latency / 2)
        if not self.report or reading is None:
            return ok(no_time=True)
        operating, reset = reading
        return ok(operating, self.epoch + reset, start=self.epoch + at)

    def transport(self, **kwargs: str) -> FakeTransport:
        async def handler(call: Call, n: int) -> Reply:
            return await self.send(call)

        return FakeTransport(handler, **kwargs)
