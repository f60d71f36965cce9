"""One bucket and one budget per portal across processes and hosts, kept in Redis.

design §2.5: the leaky bucket is per portal and source address, shared by every
application on the host (api-facts §1), and the operating budget is per method
and credential (api-facts §2.2). Worker processes that each kept their own copy
would each believe they own the whole bucket. :class:`RedisBackend` keeps both
in Redis, and every decision is one Lua script (``_redis_lua.py``), so it is
atomic and costs one round trip:

- **bucket**: a hash per portal (and egress address), drained by the Redis
  server's ``TIME``: one clock for every host. A reservation queues even when
  the bucket is full and returns how long to wait, so callers are served in
  order at the drain rate and no process can jump the line.
- **budget**: a hash per (credential, method) and a hash of the calls in
  flight, decided by the same rules as ``budget.py`` (the scripts are a port,
  checked against it by a differential test), also on the server's clock.
- **wake-ups**: a refused caller queues its process's token on the key; the
  settle that changes it pops one token and publishes on that process's own
  channel, so one settle wakes one caller across all processes (as one
  process's ``backends.Waiters`` would), not one in every process. Nobody polls.
- **leases**: a call in flight is registered with a short lease (a tenth of
  the operating window, at most 10 s) that a heartbeat renews while it runs.
  A worker that dies stops renewing, and its calls stop counting within one
  lease, never more than one operating window.

Failure semantics (documented in docs/rate-limits.md):

- Before a call is sent, a Redis error (connection refused, reset, timeout,
  cluster down) is retried with backoff for ``unavailable_wait`` seconds. Then
  the call raises :class:`~bitrix_results.errors.LimiterUnavailableError`,
  nothing sent (fail-closed, the default), or, with ``fallback_share``, this
  process paces itself on a local bucket with that share of the drain and
  burst until Redis answers again.
- After the reply arrived, recording it (settle, 503/success bookkeeping) is
  tried once: if Redis fails then, the error is logged and the reply returned.
  The call's flight stops being renewed and expires with its lease.
- Reconnecting is the Redis client's: every retry takes a fresh connection.
  A bucket that disappears while this process was using it (a restart
  without persistence, an eviction, FLUSHALL) is recreated full, not empty,
  so the loss costs one burst's worth of waiting, not a new burst. Requests
  already queued when it was lost still go at their time: each process, the
  first time it meets the new bucket (its epoch changed), puts its queued
  reservations back in line, inside that same script.

Needs the optional extra: ``pip install bitrix_results[redis]``. ``redis`` is
imported only when a backend first talks to Redis, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import LimiterUnavailableError
from ._redis_lua import ADMIT, BUCKET, HEARTBEAT, SETTLE
from .backends import MemoryBackend
from .bucket import RATE_DECREASE, RATE_FLOOR, RATE_STEP, BucketConfig, Reservation
from .budget import Admission, BudgetKey, BudgetRules, Settlement
from .clock import Clock
from .stats import BucketStatistics, BudgetStatistics

if TYPE_CHECKING:
    from types import TracebackType

    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = ["RedisBackend"]

logger = logging.getLogger("bitrix_results")

T = TypeVar("T")

#: The longest lease of a call in flight; the default is a tenth of the window.
MAX_LEASE = 10.0
#: Backoff between attempts to reach Redis: doubling from the first, capped.
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


class _Unavailable(Exception):
    """Redis did not answer in time (internal: becomes LimiterUnavailableError)."""

    def __init__(self, cause: BaseException, waited: float) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.waited = waited


class _Wakeups:
    """Callers of one event loop waiting for budget keys to change.

    Like ``backends.Waiters`` (woken one at a time, in order), plus two things
    a shared budget needs:

    - memory: a notification that finds nobody waiting for its key is kept,
      so a caller refused just before it arrived does not sleep through it;
    - one clock per key: of the callers waiting for the same moment (a hold's
      end, a basket's reset), only the first sleeps until it; the rest wait to
      be woken one by one by the calls admitted then. Waking them all at that
      moment would send a round trip each to Redis, nearly all refused again.
    """

    __slots__ = ("clocks", "missed", "queues")

    def __init__(self) -> None:
        self.queues: dict[BudgetKey, deque[asyncio.Future[BudgetKey]]] = {}
        self.missed: set[BudgetKey] = set()
        #: key -> (the moment a waiter sleeps until, on the loop's clock; its token)
        self.clocks: dict[BudgetKey, tuple[float, object]] = {}

    def wake_one(self, key: BudgetKey) -> bool:
        queue = self.queues.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(key)
                return True
        return False

    def notify(self, key: BudgetKey) -> None:
        if not self.wake_one(key):
            self.missed.add(key)

    def wake_heads(self) -> None:
        """Let the first waiter of every key look again (a notification may be lost)."""
        for key in list(self.queues):
            self.wake_one(key)

    def wake_all(self) -> None:
        for key, queue in self.queues.items():
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(key)

    async def wait(
        self, keys: Sequence[BudgetKey], seconds: float, clock: Clock
    ) -> BudgetKey | None:
        for key in keys:
            if key in self.missed:
                self.missed.discard(key)
                return key
        if seconds <= 0:
            return None
        token = object()
        # Nothing to be woken by (no key): only the time can end the wait.
        timed = not keys
        if not math.isinf(seconds):
            until = clock.monotonic() + seconds
            for key in keys:
                kept = self.clocks.get(key)
                # A little slack: waiters refused together compute the same moment.
                if kept is None or kept[0] > until + 1e-3:
                    self.clocks[key] = (until, token)
                    timed = True
        woken: asyncio.Future[BudgetKey] = asyncio.get_running_loop().create_future()
        for key in keys:
            self.queues.setdefault(key, deque()).append(woken)
        timer = (
            asyncio.ensure_future(clock.sleep(seconds))
            if timed and not math.isinf(seconds)
            else None
        )
        cancelled = False
        try:
            if timer is None:
                await woken
            else:
                await asyncio.wait((woken, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True
            if woken.done() and not woken.cancelled():
                self.wake_one(woken.result())  # pass on a wake-up we will not use
            raise
        finally:
            if timer is not None:
                timer.cancel()
            for key in keys:
                kept = self.clocks.get(key)
                if kept is not None and kept[1] is token:
                    del self.clocks[key]
                    if cancelled:
                        # The others relied on our clock: one of them takes it over.
                        self.wake_one(key)
        if woken.done():
            return woken.result()
        woken.cancel()
        return None


class _Flight:
    """A call of this process in flight: what the heartbeat renews."""

    __slots__ = ("groups", "lease")

    def __init__(self, groups: dict[str, list[str]], lease: float) -> None:
        #: hash tag -> flights keys of that tag (one script call per slot).
        self.groups = groups
        self.lease = lease


class _Loop:
    """Everything this backend keeps per event loop: a Redis client belongs to one."""

    def __init__(self, client: Redis, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.admit = client.register_script(ADMIT)
        self.settle = client.register_script(SETTLE)
        self.heartbeat = client.register_script(HEARTBEAT)
        self.bucket = client.register_script(BUCKET)
        self.wakeups = _Wakeups()
        #: state key name -> budget key (to route notifications).
        self.names: dict[str, BudgetKey] = {}
        self.flights: dict[str, _Flight] = {}
        #: Tickets admitted by the local fallback: settled locally too.
        self.local: set[str] = set()
        self.fallback = False
        self.subscribed = asyncio.Event()
        self.listener: asyncio.Task[None] | None = None
        self.beater: asyncio.Task[None] | None = None
        self.prober: asyncio.Task[None] | None = None
        self.pubsub: Any = None
        #: On a cluster: the client of the node we subscribe on (ours to close).
        self.node_client: Any = None
        #: portal -> loop time until which this process expects the bucket to exist.
        self.bucket_alive: dict[str, float] = {}
        #: portal -> the bucket's epoch last seen (it changes when recreated).
        self.bucket_epoch: dict[str, str] = {}
        #: portal -> this loop's reservations waiting for their turn (not sent yet).
        self.queued: dict[str, int] = {}
        #: True while a streak of bookkeeping failures is being logged.
        self.failing = False
        #: The clock of the calls in flight (the heartbeat's, without server time).
        self.clock: Clock | None = None
        #: The lease last used: how long a dead process's flight can block a key.
        self.lease = MAX_LEASE
        self.keeper: AsyncIterator[None] | None = None
        self.starter: asyncio.Future[None] | None = None
        self.closed = False
        #: Whether the client is set up (a cluster client maps its slots first).
        self.ready = False
        self.setting_up = asyncio.Lock()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self.listener, self.beater, self.prober) if t is not None]


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
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = (
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
        factory = _factory(url, cluster)
        backend = cls(factory(), **options)
        backend._factory = factory
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
        """Stop this backend's tasks and close the clients it opened (not one you passed)."""
        self._closed = True
        current = _running_loop()
        for loop, state in list(self._loops.items()):
            if loop is current:
                await _finish(state)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_finish(state), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), 5.0)
                except (TimeoutError, RuntimeError, OSError):
                    logger.debug("redis backend: could not close a client of another loop")
            # A closed loop took its connections with it.
        self._loops = weakref.WeakKeyDictionary()

    # -- per loop -------------------------------------------------------------------

    def _state(self) -> _Loop:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            with self._lock:  # loops in other threads may ask at the same time
                return self._new_state(loop)
        return state

    def _new_state(self, loop: asyncio.AbstractEventLoop) -> _Loop:
        state = self._loops.get(loop)
        if state is None:
            if self._closed:
                raise RuntimeError("RedisBackend: used after aclose()")
            if self._given is not None:
                # The client passed in (or made by from_url) serves the first loop.
                state = _Loop(self._given, owned=self._owns_given)
                self._given = None
            elif self._factory is not None:
                state = _Loop(self._factory(), owned=True)
            else:
                state = _Loop(_clone(self._template), owned=True)
            self._loops[loop] = state
            # An async generator parked on this loop: when the loop shuts down
            # (asyncio.run's shutdown_asyncgens), its finally closes this loop's
            # client, before the loop closes and would leave the sockets open.
            state.keeper = _keeper(state)
            state.starter = asyncio.ensure_future(_first_step(state.keeper))
        return state

    # -- talking to Redis -------------------------------------------------------------

    async def _call(self, state: _Loop, make: Callable[[], Awaitable[T]], *, patient: bool) -> T:
        """One Redis operation: retried on connection errors while ``patient``."""
        from redis.exceptions import RedisError

        retryable = _retryable()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + (self._unavailable_wait if patient else 0.0)
        delay = _FIRST_DELAY
        while True:
            try:
                async with asyncio.timeout(self._command_timeout):
                    if not state.ready:
                        await _ready(state)
                    return await make()
            except retryable as exc:
                failure: BaseException = exc
            except RedisError as exc:
                # Not a connection problem (permissions, out of memory, a
                # wrong key type): waiting will not help.
                raise _Unavailable(exc, loop.time() - start) from exc
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _Unavailable(failure, loop.time() - start) from failure
            # The last attempt comes at the deadline, so the whole wait is used.
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_DELAY)

    def _now_arg(self, clock: Clock) -> str:
        return "" if self._server_time else repr(clock.time())

    def _failed_after_reply(self, state: _Loop, what: str, exc: _Unavailable) -> None:
        # The reply is returned whatever happens here: log (once per streak).
        if not state.failing:
            state.failing = True
            logger.warning(
                "redis backend: could not record %s (%s); the reply is returned, "
                "the call's lease expires on its own",
                what,
                type(exc.cause).__name__,
            )
        else:
            logger.debug("redis backend: could not record %s", what)

    # -- local fallback -------------------------------------------------------------

    def _local_config(self, config: BucketConfig) -> BucketConfig:
        assert self._share is not None
        return BucketConfig(
            capacity=max(1.0, math.floor(config.capacity * self._share)),
            drain_per_second=config.drain_per_second * self._share,
        )

    def _enter_fallback(self, state: _Loop, exc: _Unavailable) -> MemoryBackend:
        """Redis is unreachable and the user chose to go on locally: do, until it is back."""
        if self._fallback_backend is None:
            # Fail closed. The callers waiting for a change would wait for a
            # settle that cannot come: let them look again, and fail alike.
            state.wakeups.wake_all()
            raise LimiterUnavailableError(exc.cause, waited=exc.waited) from exc.cause
        if not state.fallback:
            state.fallback = True
            logger.warning(
                "redis backend: Redis unavailable (%s); pacing locally on %.0f%% of the "
                "limits until it answers again",
                type(exc.cause).__name__,
                self._share * 100 if self._share is not None else 0,
            )
            # Waiters for Redis keys look again, now locally.
            state.wakeups.wake_all()
            if state.prober is None or state.prober.done():
                state.prober = asyncio.ensure_future(self._probe(state))
        return self._fallback_backend

    async def _probe(self, state: _Loop) -> None:
        """While in fallback: ask Redis every second whether it is back."""
        while state.fallback:
            await asyncio.sleep(_MAX_DELAY)
            try:
                await self._call(state, state.client.ping, patient=False)
            except _Unavailable:
                continue
            state.fallback = False
            state.failing = False
            logger.warning("redis backend: Redis answers again; the shared limits are back")

    # -- bucket ---------------------------------------------------------------------

    def _bucket_key(self, portal: str) -> str:
        key = f"{self._prefix}:{{p:{portal}}}:bucket"
        return key if self._egress is None else f"{key}:{self._egress}"

    async def _bucket_op(
        self,
        state: _Loop,
        op: str,
        portal: str,
        config: BucketConfig,
        clock: Clock,
        *,
        ticket: float = 0.0,
        patient: bool,
    ) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        alive = state.bucket_alive.get(portal, -math.inf) > loop.time()
        args = [
            op,
            repr(float(config.capacity)),
            repr(float(config.drain_per_second)),
            self._now_arg(clock),
            repr(ticket),
            repr(RATE_DECREASE),
            repr(RATE_FLOOR),
            repr(RATE_STEP),
            "1" if alive else "0",
            self._token,
            state.bucket_epoch.get(portal, ""),
            str(state.queued.get(portal, 0)),
        ]
        raw = await self._call(
            state, lambda: state.bucket(keys=[self._bucket_key(portal)], args=args), patient=patient
        )
        reply = _text(raw).split("|")
        wait, level, rate, at = (float(value) for value in reply[:4])
        if reply[4] == "1":
            logger.warning(
                "redis backend: the bucket of %s was lost (eviction or restart); "
                "treating it as full",
                portal,
            )
        # The script keeps an idle bucket for level / rate + 60 s; a second's
        # margin for the clocks, then a missing key is no longer a surprise.
        state.bucket_alive[portal] = loop.time() + level / rate + 59.0
        # A recreated bucket has a new epoch: the script puts this process's
        # queued reservations back in line when it first meets it.
        state.bucket_epoch[portal] = reply[5]
        self._buckets[portal] = BucketStatistics(
            portal=portal,
            level=level,
            capacity=config.capacity,
            drain_per_second=rate,
            nominal_drain_per_second=config.drain_per_second,
        )
        return wait, at

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
        state = self._state()
        if not state.fallback:
            try:
                wait, at = await self._bucket_op(
                    state, "reserve", portal, config, clock, patient=True
                )
            except _Unavailable as exc:
                local = self._enter_fallback(state, exc)
            else:
                # The slot is ours already; we only wait for our turn to use it.
                if wait > 0:
                    queued = state.queued
                    queued[portal] = queued.get(portal, 0) + 1
                    try:
                        await clock.sleep(wait)
                    finally:
                        queued[portal] -= 1
                stats = self._buckets[portal]
                return Reservation(
                    waited=wait, reserved_at=at, drain_per_second=stats.drain_per_second
                )
        else:
            local = self._require_fallback()
        return await local.reserve(portal, self._local_config(config), clock)

    async def rate_limited(
        self, portal: str, config: BucketConfig, reservation: Reservation, clock: Clock
    ) -> None:
        state = self._state()
        if state.fallback:
            await self._require_fallback().rate_limited(
                portal, self._local_config(config), reservation, clock
            )
            return
        try:
            await self._bucket_op(
                state,
                "limited",
                portal,
                config,
                clock,
                ticket=reservation.reserved_at,
                patient=False,
            )
        except _Unavailable as exc:
            self._failed_after_reply(state, "a 503", exc)

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        last = self._buckets.get(portal)
        if last is not None and last.drain_per_second >= last.nominal_drain_per_second:
            # Already at full rate as far as we know: spare the round trip.
            return
        state = self._state()
        if state.fallback:
            return
        try:
            await self._bucket_op(state, "succeeded", portal, config, clock, patient=False)
        except _Unavailable as exc:
            self._failed_after_reply(state, "a success", exc)

    def bucket_statistics(self, portal: str) -> BucketStatistics | None:
        return self._buckets.get(portal)

    def _require_fallback(self) -> MemoryBackend:
        assert self._fallback_backend is not None  # fallback is only entered with one
        return self._fallback_backend

    # -- budget ---------------------------------------------------------------------

    def _budget_names(self, key: BudgetKey) -> tuple[str, str, str]:
        credential, method = key
        # One hash tag per credential: a batch's keys (one credential, several
        # methods) share a slot, so one script may touch them all on a cluster.
        base = f"{self._prefix}:{{c:{credential}}}"
        return f"{base}:budget:{method}", f"{base}:flights:{method}", f"{base}:waiters:{method}"

    def _lease_for(self, rules: BudgetRules) -> float:
        if self._lease is not None:
            return self._lease
        return min(MAX_LEASE, rules.window / 10)

    def _script_keys(self, state: _Loop, keys: Sequence[tuple[BudgetKey, int]]) -> list[str]:
        names: list[str] = []
        for key, _ in keys:
            budget, flights, waiters = self._budget_names(key)
            state.names[budget] = key
            names += (budget, flights, waiters)
        return names

    def _ttl_ms(self, rules: BudgetRules, lease: float) -> str:
        # Keep a key twice as long as the window: older state is all expired.
        return str(max(1, math.ceil((2 * rules.window + lease) * 1000)))

    def _learn_stats(
        self,
        keys: Sequence[tuple[BudgetKey, int]],
        reply: Sequence[str],
        offset: int,
        clock: Clock,
    ) -> float:
        """Keep the statistics in a script's reply (parsed when asked); return its ``now``."""
        server_now = float(reply[offset - 1])
        # Times in the reply are on the script's clock: shift them onto ours.
        shift = clock.time() - server_now if self._server_time else 0.0
        for i, (key, _) in enumerate(keys):
            start = offset + 7 * i
            self._budgets[key] = (tuple(reply[start : start + 7]), shift)
        return server_now

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        state = self._state()
        if state.fallback:
            return await self._admit_locally(state, ticket, keys, rules, clock, woken_by)
        lease = state.lease = self._lease_for(rules)
        names = self._script_keys(state, keys)
        args = [
            self._now_arg(clock),
            ticket,
            repr(lease),
            repr(rules.limit),
            repr(rules.window),
            self._ttl_ms(rules, lease),
            self._token,
            *(str(units) for _, units in keys),
        ]
        try:
            raw = await self._call(state, lambda: state.admit(keys=names, args=args), patient=True)
        except _Unavailable as exc:
            self._enter_fallback(state, exc)
            return await self._admit_locally(state, ticket, keys, rules, clock, woken_by)
        state.failing = False
        reply = _text(raw).split("|")
        server_now = self._learn_stats(keys, reply, 5, clock)
        wakeups = state.wakeups
        if reply[0] == "1":
            self._track(state, ticket, names, lease, clock)
            # There may be room for the next one too: let it look.
            for key, _ in keys:
                wakeups.wake_one(key)
            return Admission(admitted=True, retry_at=clock.time())
        retry = reply[1]
        retry_at = math.inf if not retry else float(retry) - server_now + clock.time()
        blocked = tuple(keys[int(i) - 1][0] for i in reply[3].split(",") if i)
        admission = Admission(
            admitted=False,
            retry_at=retry_at,
            on_change=reply[2] == "1",
            blocked_by=blocked,
        )
        if woken_by is not None and woken_by not in blocked:
            wakeups.wake_one(woken_by)
        return admission

    async def _admit_locally(
        self,
        state: _Loop,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        woken_by: BudgetKey | None,
    ) -> Admission:
        admission = await self._require_fallback().admit(
            ticket, keys, rules, clock, woken_by=woken_by
        )
        if admission.admitted:
            state.local.add(ticket)
        return admission

    async def wait_budget(
        self, admission: Admission, clock: Clock, *, attempt: int = 1
    ) -> BudgetKey | None:
        state = self._state()
        seconds = admission.retry_at - clock.time()
        if state.fallback:
            # Local waits look again at least every second, so the calls move
            # back to Redis soon after it answers.
            return await self._require_fallback().wait_budget(
                Admission(
                    False,
                    min(admission.retry_at, clock.time() + _MAX_DELAY),
                    admission.on_change,
                    admission.blocked_by,
                ),
                clock,
                attempt=attempt,
            )
        if admission.on_change and not state.subscribed.is_set():
            # First wait on this loop: subscribe to the wake-ups, then look again
            # (a change between the refusal and the subscription would be lost).
            self._listen(state)
            try:
                await asyncio.wait_for(state.subscribed.wait(), self._command_timeout)
            except TimeoutError:
                seconds = min(seconds, _MAX_DELAY)
            else:
                return None
        return await state.wakeups.wait(admission.blocked_by, seconds, clock)

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        state = self._state()
        if ticket in state.local:
            state.local.discard(ticket)
            await self._require_fallback().settle(ticket, keys, settlement, rules, clock)
            return
        state.flights.pop(ticket, None)
        lease = self._lease_for(rules)
        names = self._script_keys(state, keys)
        time = settlement.time
        args = [
            self._now_arg(clock),
            ticket,
            settlement.kind,
            "1" if settlement.replayed else "0",
            "1" if time is not None else "",
            *(
                _arg(value)
                for value in (
                    (None, None, None, None)
                    if time is None
                    else (time.operating, time.operating_reset_at, time.start, time.finish)
                )
            ),
            repr(rules.limit),
            repr(rules.window),
            self._ttl_ms(rules, lease),
            self._channel_prefix,
            self._token,
            *(str(units) for _, units in keys),
        ]
        try:
            # Once, not patiently: the reply is waiting to be returned.
            raw = await self._call(
                state, lambda: state.settle(keys=names, args=args), patient=False
            )
        except _Unavailable as exc:
            self._failed_after_reply(state, "a call's outcome", exc)
            # No waiter was popped: our own look again at once.
            for key, _ in keys:
                state.wakeups.wake_one(key)
        else:
            reply = _text(raw).split("|")
            self._learn_stats(keys, reply, 1, clock)
            # The script woke another process's waiter, or names ours to wake.
            for i in reply[-1].split(","):
                if i:
                    state.wakeups.notify(keys[int(i) - 1][0])

    def budget_statistics(self, key: BudgetKey) -> BudgetStatistics | None:
        seen = self._budgets.get(key)
        if seen is None:
            return None
        (tracked, total, reset_at, num, den, held, units), shift = seen
        cost = float(num) / float(den) if den and float(den) > 0 else None
        return BudgetStatistics(
            credential=key[0],
            method=key[1],
            operating=_opt(total),
            reset_at=None if not reset_at else float(reset_at) + shift,
            cost=cost,
            cost_bound=None if cost is None else cost * 1.5,
            held_until=None if not held else float(held) + shift,
            in_flight_units=int(float(units)),
            tracked=None if not tracked else tracked == "1",
        )

    # -- heartbeat and wake-ups -------------------------------------------------------

    def _track(
        self, state: _Loop, ticket: str, names: Sequence[str], lease: float, clock: Clock
    ) -> None:
        groups: dict[str, list[str]] = {}
        for flights in names[1::3]:
            groups.setdefault(_tag(flights), []).append(flights)
        state.flights[ticket] = _Flight(groups, lease)
        state.clock = clock
        if state.beater is None or state.beater.done():
            state.beater = asyncio.ensure_future(self._beat(state))

    async def _beat(self, state: _Loop) -> None:
        """Renew the leases of this loop's calls in flight, a third of a lease apart."""
        while state.flights:
            interval = min(flight.lease for flight in state.flights.values()) / 3
            await asyncio.sleep(interval)
            batches: dict[tuple[str, float], tuple[set[str], list[str]]] = {}
            for ticket, flight in list(state.flights.items()):
                for tag, keys in flight.groups.items():
                    names, tickets = batches.setdefault((tag, flight.lease), (set(), []))
                    names.update(keys)
                    tickets.append(ticket)
            for (_, lease), (names, tickets) in batches.items():
                await self._renew(state, sorted(names), lease, tickets)

    async def _renew(self, state: _Loop, keys: list[str], lease: float, tickets: list[str]) -> None:
        clock = state.clock
        now = "" if self._server_time or clock is None else repr(clock.time())
        args = [now, repr(lease), *tickets]
        try:
            await self._call(state, lambda: state.heartbeat(keys=keys, args=args), patient=False)
        except _Unavailable:
            logger.debug("redis backend: a heartbeat failed; retried next beat")

    def _listen(self, state: _Loop) -> None:
        if state.listener is None or state.listener.done():
            state.listener = asyncio.ensure_future(self._listener(state))

    async def _listener(self, state: _Loop) -> None:
        """Receive the wake-up notifications; on a gap, let every first waiter look again."""
        delay = _FIRST_DELAY
        while True:
            try:
                pubsub = state.pubsub = (await _pubsub_client(state)).pubsub()
                try:
                    await self._subscribe(pubsub)
                    state.subscribed.set()
                    delay = _FIRST_DELAY
                    # Anything published while we were not listening is lost.
                    state.wakeups.wake_heads()
                    await self._receive(state, pubsub)
                finally:
                    state.subscribed.clear()
                    state.pubsub = None
                    await _quietly(pubsub.aclose())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect
                logger.debug("redis backend: wake-up channel lost (%s)", type(exc).__name__)
                # Waiting for a notification that may never come: look again.
                state.wakeups.wake_heads()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(self._command_timeout):
            await pubsub.subscribe(self._channel)
            # Wait for the confirmation: only then are notifications delivered.
            while True:
                message = await pubsub.get_message(timeout=self._command_timeout)
                if message is not None and _text(message.get("type")) == "subscribe":
                    return

    async def _receive(self, state: _Loop, pubsub: PubSub) -> None:
        while True:
            # A waiter whose key's holder died is woken by no settle: look
            # again once a lease (the longest a dead process's flight counts).
            recheck = state.lease
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=recheck)
            if message is None:
                state.wakeups.wake_heads()
                continue
            key = state.names.get(_text(message.get("data")))
            if key is not None:
                state.wakeups.notify(key)


def _factory(url: str, cluster: bool) -> Callable[[], Redis]:
    def make() -> Redis:
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            client: Any = RedisCluster.from_url(url)
        else:
            from redis.asyncio import Redis

            client = Redis.from_url(url)
        return client  # type: ignore[no-any-return]

    return make


def _clone(template: Any) -> Redis:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    if isinstance(template, RedisCluster):
        nodes = [ClusterNode(node.host, node.port) for node in template.get_nodes()]
        clone: Any = RedisCluster(startup_nodes=nodes, **template.connection_kwargs)
        return clone  # type: ignore[no-any-return]
    pool = template.connection_pool
    return Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
    )


async def _pubsub_client(state: _Loop) -> Any:
    """The client to subscribe with: on a cluster, one node's own (PUBLISH reaches all)."""
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

    client: Any = state.client
    if not isinstance(client, RedisCluster):
        return client
    if state.node_client is not None:
        await _quietly(state.node_client.aclose())
    await client.initialize()
    node = client.get_random_node()
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    state.node_client = Redis(connection_pool=pool, auto_close_connection_pool=True)
    return state.node_client


async def _ready(state: _Loop) -> None:
    """Set a cluster client up once, before any command.

    redis-py's cluster client maps the slots on first use; many first commands
    at once each start that mapping and break each other's connections.
    """
    from redis.asyncio.cluster import RedisCluster

    async with state.setting_up:
        if not state.ready:
            client: Any = state.client
            if isinstance(client, RedisCluster):
                await client.initialize()
            state.ready = True


async def _keeper(state: _Loop) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await _close_state(state)


async def _first_step(keeper: AsyncIterator[None]) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await keeper.__anext__()


async def _finish(state: _Loop) -> None:
    """Close one loop's state from that loop (and retire its keeper)."""
    keeper: Any = state.keeper
    if keeper is not None:
        await _quietly(keeper.aclose())
    await _close_state(state)


async def _close_state(state: _Loop) -> None:
    if state.closed:
        return
    state.closed = True
    for task in state.tasks():
        task.cancel()
    for task in state.tasks():
        await _quietly(task)
    if state.pubsub is not None:
        await _quietly(state.pubsub.aclose())
    if state.node_client is not None:
        await _quietly(state.node_client.aclose())
    if state.owned:
        client: Any = state.client
        await _quietly(client.aclose())


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # Closing: a failure has nothing left to report.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await awaitable


def _retryable() -> tuple[type[BaseException], ...]:
    from redis import exceptions

    found: list[type[BaseException]] = [
        exceptions.ConnectionError,
        exceptions.TimeoutError,
        OSError,
        TimeoutError,
    ]
    # Cluster re-shaping (a node down, slots moving): transient, like a connection.
    for name in ("ClusterDownError", "TryAgainError", "MasterDownError", "ClusterError"):
        kind = getattr(exceptions, name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            found.append(kind)
    return tuple(found)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _tag(name: str) -> str:
    start = name.index("{")
    return name[start : name.index("}", start) + 1]


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _opt(text: str) -> float | None:
    return float(text) if text else None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
