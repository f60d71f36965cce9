"""`RedisBackend`: the Backend protocol over state in Redis, coordinating the parts.

Every step is a round trip, so each ``*_now`` form declines and the scheduler
awaits the async one. The work is done by the sibling modules: ``connections``
(a client per event loop), ``buckets`` and ``budgets`` (the scripts' arguments
and replies), ``leases`` (the heartbeat), ``wakeups`` (waiting and pub/sub) and
``failures`` (retry, fail closed or local fallback). Their functions take the
backend and read its settings and caches (the ``_``-prefixed attributes set in
``__init__``): one set of state, owned here, rather than a copy per part.
"""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..backends import MemoryBackend
from ..bucket import BucketConfig, Reservation
from ..budget import Admission, BudgetKey, BudgetRules, Settlement
from ..clock import Clock
from ..stats import BucketStatistics, BudgetStatistics
from . import buckets, budgets, wakeups
from .connections import LoopState, close_all, factory, loop_state
from .failures import (
    Unavailable,
    admit_locally,
    enter_fallback,
    failed_after_reply,
    local_config,
    require_fallback,
)

if TYPE_CHECKING:
    from types import TracebackType

    from redis.asyncio import Redis

__all__ = ["RedisBackend"]


class RedisBackend:
    """Bucket and budget state in Redis, shared by every process that uses the same keys.

    Give it to a `Scheduler` (``Scheduler(limits, backend=...)``) and the
    scheduler to each client, in every worker. Needs Redis 5 or newer. The keys
    are ``{prefix}:{p:portal}:bucket`` (``:egress`` appended when given) and
    ``{prefix}:{c:credential}:budget:method``; the braces are Redis Cluster hash
    tags, so every script touches one slot.

    Args:
        redis: A ``redis.asyncio.Redis`` or ``RedisCluster`` client
            (``decode_responses`` either way); it stays yours to close. Or build
            one with `from_url`, which the backend owns and closes (``aclose()`` or
            ``async with``). A client belongs to one event loop: on other loops (a
            sync facade's thread beside an async app) the backend opens its own
            client with the same connection settings.
        prefix: Namespace of the keys (no braces).
        egress: This host's source address, when hosts leave by different
            addresses: the portal keeps one bucket per portal *and* source address
            (api-facts §1), so they may each use a whole one. Leave it None when
            all workers share an address (the safe default: one bucket for all).
        server_time: Decide on the Redis server's clock (the default: one clock
            for all hosts); False uses the scheduler's clock (tests on virtual time).
        lease: Seconds a call in flight counts if its process dies; a heartbeat
            renews it every third of it while the call runs. Default: a tenth of
            the operating window of the `Limits` in use, at most 10 s.
        unavailable_wait: Seconds a call keeps retrying an unreachable Redis before
            it gives up (backoff from 50 ms doubling to 1 s between attempts).
        command_timeout: The longest one Redis command may take (a hung server).
        fallback_share: None (the default) fails closed: a call that cannot reach
            Redis raises `LimiterUnavailableError` without being sent. A share in
            (0, 1] paces this process on a local bucket with that fraction of the
            drain and burst instead (give each of N workers at most 1/N) until
            Redis answers again; its budget is then learned from the portal's
            replies alone.

    Raises:
        ValueError: An argument is out of range (an empty prefix or one with
            braces, a lease or timeout that is not a positive number, a share
            outside (0, 1]).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "bitrix_results",
        egress: str | None = None,
        server_time: bool = True,
        lease: float | None = None,
        unavailable_wait: float = 10.0,
        command_timeout: float = 2.0,
        fallback_share: float | None = None,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix: must be non-empty and without braces, got {prefix!r}")
        if egress is not None and (not egress or "}" in egress):
            raise ValueError(f"egress: must be a non-empty address, got {egress!r}")
        if lease is not None and not (lease > 0 and math.isfinite(lease)):
            raise ValueError(f"lease: must be a positive number of seconds, got {lease!r}")
        if not (unavailable_wait >= 0 and math.isfinite(unavailable_wait)):
            raise ValueError(f"unavailable_wait: must be >= 0 seconds, got {unavailable_wait!r}")
        if not (command_timeout > 0 and math.isfinite(command_timeout)):
            raise ValueError(f"command_timeout: must be positive, got {command_timeout!r}")
        if fallback_share is not None and not 0 < fallback_share <= 1:
            raise ValueError(f"fallback_share: must be in (0, 1], got {fallback_share!r}")
        self._given: Redis | None = redis
        #: What other loops' clients are cloned from (connection settings only).
        self._template = redis
        self._owns_given = False
        self._factory: Callable[[], Redis] | None = None
        self._prefix = prefix
        self._egress = egress
        self._server_time = server_time
        self._lease = lease
        self._unavailable_wait = unavailable_wait
        self._command_timeout = command_timeout
        self._share = fallback_share
        self._fallback_backend = MemoryBackend() if fallback_share is not None else None
        # Names this process in the keys' waiter queues; its wake-ups come on
        # its own channel (a settle of its own wakes its waiter directly).
        self._token = uuid.uuid4().hex[:12]
        self._channel_prefix = f"{prefix}:wake:"
        self._channel = self._channel_prefix + self._token
        self._buckets: dict[str, BucketStatistics] = {}
        #: The last reply's statistics fields per key, and the shift onto our clock.
        self._budgets: dict[BudgetKey, tuple[tuple[str, ...], float]] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **options: Any) -> RedisBackend:
        """Build a backend with its own client(s) for ``url``, closed by `aclose`.

        Args:
            url: A Redis URL, ``redis://host:6379/0`` (``rediss://`` for TLS).
            cluster: Connect with ``RedisCluster`` (any node's address will do).
            **options: The other arguments of `RedisBackend` (``prefix``,
                ``egress``, ``fallback_share``...).

        Returns:
            A backend that owns its clients; close it with ``aclose()`` or
                ``async with``. Nothing connects until the first call.

        Raises:
            ValueError: The URL or an option is invalid.

        Example:
            ```python
            async with RedisBackend.from_url("redis://localhost:6379/0") as backend:
                scheduler = Scheduler(Limits.standard(), backend=backend)
                async with ResultsClient.from_webhook(url, scheduler=scheduler) as client:
                    ...
            ```
        """
        make = factory(url, cluster)
        backend = cls(make(), **options)
        backend._factory = make
        backend._owns_given = True
        return backend

    def __repr__(self) -> str:
        return (
            f"RedisBackend(prefix={self._prefix!r}, server_time={self._server_time!r}, "
            f"fallback_share={self._share!r})"
        )

    async def __aenter__(self) -> RedisBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await close_all(self)

    # Every step is a round trip: each ``_now`` form declines (Backend's "try
    # now, else await"), and the scheduler awaits the async form.
    def reserve_now(self, portal: str, config: BucketConfig) -> None:
        return None

    def succeeded_now(self, portal: str, config: BucketConfig) -> bool:
        return False

    def admit_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> None:
        return None

    def settle_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> bool:
        return False

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        state = loop_state(self)
        if not state.fallback:
            try:
                return await buckets.reserve(self, state, portal, config, clock)
            except Unavailable as exc:
                local = enter_fallback(self, state, exc)
        else:
            local = require_fallback(self)
        return await local.reserve(portal, local_config(self, config), clock)

    async def rate_limited(
        self, portal: str, config: BucketConfig, reservation: Reservation, clock: Clock
    ) -> None:
        state = loop_state(self)
        if state.fallback:
            await require_fallback(self).rate_limited(
                portal, local_config(self, config), reservation, clock
            )
            return
        try:
            await buckets.bucket_op(
                self,
                state,
                "limited",
                portal,
                config,
                clock,
                ticket=reservation.reserved_at,
                patient=False,
            )
        except Unavailable as exc:
            failed_after_reply(state, "a 503", exc)

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        last = self._buckets.get(portal)
        if last is not None and last.drain_per_second >= last.nominal_drain_per_second:
            # Already at full rate as far as we know: spare the round trip.
            return
        state = loop_state(self)
        if state.fallback:
            return
        try:
            await buckets.bucket_op(self, state, "succeeded", portal, config, clock, patient=False)
        except Unavailable as exc:
            failed_after_reply(state, "a success", exc)

    def bucket_statistics(self, portal: str) -> BucketStatistics | None:
        return self._buckets.get(portal)

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        state = loop_state(self)
        if not state.fallback:
            try:
                return await budgets.admit(self, state, ticket, keys, rules, clock, woken_by)
            except Unavailable as exc:
                enter_fallback(self, state, exc)
        return await admit_locally(self, state, ticket, keys, rules, clock, woken_by)

    async def wait_budget(
        self, admission: Admission, clock: Clock, *, attempt: int = 1
    ) -> BudgetKey | None:
        return await wakeups.wait_budget(self, loop_state(self), admission, clock, attempt)

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        state = loop_state(self)
        if ticket in state.local:
            state.local.discard(ticket)
            await require_fallback(self).settle(ticket, keys, settlement, rules, clock)
            return
        await budgets.settle(self, state, ticket, keys, settlement, rules, clock)

    def budget_statistics(self, key: BudgetKey) -> BudgetStatistics | None:
        return budgets.statistics(self, key)
