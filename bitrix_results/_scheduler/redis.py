"""One bucket and one budget per portal across processes and hosts, kept in Redis.

SPEC §2.5: the leaky bucket is per portal and source address, shared by every
application on the host (facts §1), and the operating budget is per method and
credential (facts §2.2). Worker processes that each kept their own copy would
each believe they own the whole bucket. :class:`RedisBackend` keeps both in
Redis:

- **bucket**: a hash per portal, changed only by one Lua script, so a
  reservation is atomic. It drains by the Redis server's ``TIME`` (one clock for
  every host), adds one for the caller even when the bucket is full and returns
  how long the caller must wait: reservations queue in order, exactly paced, and
  no process can jump the line.
- **budget**: one JSON document per (credential, method), updated with
  optimistic transactions (``WATCH``/``MULTI``) by the same pure functions the
  memory backend uses (``budget.py``). A call in flight holds a lease, so a
  crashed worker's calls stop counting after ``lease`` seconds.

Needs the optional extra: ``pip install bitrix_results[redis]``. ``redis`` is
imported only when a transaction runs, never at import time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .backends import RECHECK_AFTER, Waiters
from .bucket import RATE_DECREASE, RATE_FLOOR, RATE_STEP, BucketConfig, Reservation
from .budget import (
    Admission,
    BudgetKey,
    BudgetRules,
    KeyState,
    Settlement,
    settle,
    statistics_of,
    try_admit,
)
from .clock import Clock
from .per_loop import PerLoop
from .stats import BucketStatistics, BudgetStatistics

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBackend"]

# KEYS[1]: the portal's bucket hash.
# ARGV: op (reserve | limited | succeeded), capacity, nominal drain per second,
#       now ("" = the Redis server's TIME), ticket (limited only),
#       decrease factor, floor factor, step.
# Returns {wait, level, effective drain, time used} as strings (Lua numbers
# would be truncated to integers in the reply).
_BUCKET_LUA = """
local op = ARGV[1]
local capacity = tonumber(ARGV[2])
local nominal = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local s = redis.call('HMGET', KEYS[1], 'level', 'last', 'factor', 'decreased_at')
local level = tonumber(s[1]) or 0
local last = tonumber(s[2]) or now
local factor = tonumber(s[3]) or 1
local decreased_at = tonumber(s[4]) or -1
-- A clock that steps back (another host's, with client time) must not refill.
local t = math.max(now, last)
local rate = nominal * factor
level = math.max(0, level - (t - last) * rate)
local wait = 0
if op == 'reserve' then
  -- Queue even when full: the caller sends when the level has drained back
  -- to capacity - 1, so reservations are served in order at the drain rate.
  level = level + 1
  wait = math.max(0, (level - capacity) / rate) + (t - now)
elseif op == 'limited' then
  -- 503: the portal is at least full.
  level = math.max(level, capacity)
  if tonumber(ARGV[5]) >= decreased_at then
    factor = math.max(tonumber(ARGV[7]), factor * tonumber(ARGV[6]))
    decreased_at = t
  end
elseif op == 'succeeded' then
  factor = math.min(1, factor + tonumber(ARGV[8]))
end
rate = nominal * factor
redis.call('HSET', KEYS[1], 'level', tostring(level), 'last', tostring(t),
           'factor', tostring(factor), 'decreased_at', tostring(decreased_at))
-- Forget an idle bucket once it has drained (and a minute more).
redis.call('PEXPIRE', KEYS[1], math.ceil((level / rate + 60) * 1000))
return {tostring(wait), tostring(level), tostring(rate), tostring(t)}
"""

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(KeyState)

#: Optimistic transactions retried this often before giving up (contention).
_MAX_CONFLICTS = 100


class _Local:
    """What one process keeps beside Redis, per event loop."""

    __slots__ = ("lock", "waiters")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiters = Waiters()


class RedisBackend:
    """Bucket and budget state in Redis, shared by every process that uses the same keys.

    ``redis``: a ``redis.asyncio.Redis`` client (``decode_responses`` either way).
    ``prefix``: namespace of the keys (``{prefix}:bucket:{portal}``,
    ``{prefix}:budget:{{credential}}:{method}``). Needs Redis 5 or newer (a
    script that reads ``TIME`` and then writes).
    ``server_time``: drain the bucket by the Redis server's clock (the default:
    one clock for all hosts); False uses the scheduler's clock (tests with
    virtual time).
    ``lease``: seconds an admitted call counts as in flight if its process dies
    before settling it; must exceed the longest time from admission to reply
    (bucket queue plus the portal's 60 s request timeout, facts §1).
    ``poll_interval``: how soon a caller waiting for another process's call to
    settle first re-reads the budget; it backs off to a second while refused.
    Calls of this process wake their waiters at once.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "bitrix_results",
        server_time: bool = True,
        lease: float = 300.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not prefix:
            raise ValueError("prefix: must not be empty")
        if not lease > 0:
            raise ValueError(f"lease: must be positive, got {lease!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval: must be positive, got {poll_interval!r}")
        self._redis = redis
        self._prefix = prefix
        self._server_time = server_time
        self._lease = lease
        self._poll = poll_interval
        self._script = redis.register_script(_BUCKET_LUA)
        self._buckets: dict[str, BucketStatistics] = {}
        self._budgets: dict[BudgetKey, KeyState] = {}
        # This process's waiters and lock, per event loop (both belong to one).
        self._local: PerLoop[_Local] = PerLoop(_Local)

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self._prefix!r}, server_time={self._server_time!r})"

    def _waiters(self) -> Waiters:
        return self._local.get().waiters

    # -- bucket -------------------------------------------------------------------

    def _bucket_key(self, portal: str) -> str:
        return f"{self._prefix}:bucket:{portal}"

    async def _bucket_op(
        self,
        op: str,
        portal: str,
        config: BucketConfig,
        clock: Clock,
        ticket: float = 0.0,
    ) -> tuple[float, float]:
        now = "" if self._server_time else repr(clock.time())
        reply: list[Any] = await self._script(
            keys=[self._bucket_key(portal)],
            args=[
                op,
                repr(float(config.capacity)),
                repr(float(config.drain_per_second)),
                now,
                repr(ticket),
                repr(RATE_DECREASE),
                repr(RATE_FLOOR),
                repr(RATE_STEP),
            ],
        )
        wait, level, rate, at = (float(_text(value)) for value in reply)
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

    async def reserve(self, portal: str, config: BucketConfig, clock: Clock) -> Reservation:
        wait, at = await self._bucket_op("reserve", portal, config, clock)
        # The slot is ours already; we only wait for our turn to use it.
        await clock.sleep(wait)
        stats = self._buckets[portal]
        return Reservation(waited=wait, reserved_at=at, drain_per_second=stats.drain_per_second)

    async def rate_limited(
        self, portal: str, config: BucketConfig, reservation: Reservation, clock: Clock
    ) -> None:
        await self._bucket_op("limited", portal, config, clock, reservation.reserved_at)

    def succeeded_now(self, portal: str, config: BucketConfig) -> bool:
        return False

    async def succeeded(self, portal: str, config: BucketConfig, clock: Clock) -> None:
        last = self._buckets.get(portal)
        if last is not None and last.drain_per_second >= last.nominal_drain_per_second:
            # Already at full rate as far as we know: spare the round trip.
            return
        await self._bucket_op("succeeded", portal, config, clock)

    def bucket_statistics(self, portal: str) -> BucketStatistics | None:
        return self._buckets.get(portal)

    # -- budget -------------------------------------------------------------------

    def _budget_key(self, key: BudgetKey) -> str:
        credential, method = key
        # The braces are a Redis Cluster hash tag: one credential's keys share a
        # slot, so a batch's transaction over several of them stays legal.
        return f"{self._prefix}:budget:{{{credential}}}:{method}"

    async def _transact(
        self,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        change: Any,
    ) -> Any:
        """Read the keys' states, apply ``change(states)``, write them back atomically."""
        from redis.exceptions import WatchError  # lazy: redis is an optional extra

        names = [self._budget_key(key) for key, _ in keys]
        # Keep a key twice as long as the window: older state is all expired.
        ttl_ms = max(1, math.ceil((2 * rules.window + self._lease) * 1000))
        # One transaction at a time per process: our own calls would otherwise
        # abort each other's WATCH on a hot key; only other processes can now.
        async with self._local.get().lock, self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_CONFLICTS):
                try:
                    await pipe.watch(*names)
                    raw: list[Any] = await pipe.mget(names)
                    states = {
                        key: KeyState() if value is None else _DECODER.decode(value)
                        for (key, _), value in zip(keys, raw, strict=True)
                    }
                    result = change(states)
                    writes = [
                        (name, encoded)
                        for name, value, state in zip(names, raw, states.values(), strict=True)
                        if (encoded := _ENCODER.encode(state)) != _bytes(value)
                    ]
                    if not writes:
                        # Most refusals change nothing: write nothing, so many
                        # waiters polling one key do not abort each other.
                        await pipe.reset()  # type: ignore[no-untyped-call]
                    else:
                        pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
                        for name, encoded in writes:
                            pipe.set(name, encoded, px=ttl_ms)
                        await pipe.execute()
                except WatchError:
                    # Another process changed a key between our read and write.
                    continue
                self._budgets.update(states)
                return result
        raise RuntimeError(f"budget keys {names!r}: too much contention, gave up")

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

    async def admit(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        rules: BudgetRules,
        clock: Clock,
        *,
        woken_by: BudgetKey | None = None,
    ) -> Admission:
        now = clock.time()
        admission: Admission = await self._transact(
            keys,
            rules,
            lambda states: try_admit(states, ticket, keys, rules, now, lease=self._lease),
        )
        waiters = self._waiters()
        if admission.admitted:
            waiters.wake_first(keys)
        else:
            waiters.handed_on(admission, woken_by)
        return admission

    async def wait_budget(
        self, admission: Admission, clock: Clock, *, attempt: int = 1
    ) -> BudgetKey | None:
        seconds = admission.retry_at - clock.time()
        if admission.on_change:
            # Our own process's replies wake us at once; another process's do
            # not, so also poll, backing off while refusals repeat.
            backoff = self._poll * 2.0 ** min(attempt - 1, 16)
            seconds = min(seconds, backoff, RECHECK_AFTER)
        return await self._waiters().wait(admission.blocked_by, seconds, clock)

    def settle_now(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> bool:
        return False

    async def settle(
        self,
        ticket: str,
        keys: Sequence[tuple[BudgetKey, int]],
        settlement: Settlement,
        rules: BudgetRules,
        clock: Clock,
    ) -> None:
        now = clock.time()
        await self._transact(
            keys, rules, lambda states: settle(states, ticket, keys, settlement, rules, now)
        )
        self._waiters().wake_first(keys)

    def budget_statistics(self, key: BudgetKey) -> BudgetStatistics | None:
        state = self._budgets.get(key)
        return None if state is None else statistics_of(key, state)


def _bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
