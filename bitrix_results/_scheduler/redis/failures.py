"""What happens when Redis does not answer: retry, fail closed or pace locally, hand back.

- Before a call is sent, a Redis error (connection refused, reset, timeout,
  cluster down) is retried with backoff for ``unavailable_wait`` seconds. Then
  the call raises `LimiterUnavailableError`, nothing sent (fail-closed, the
  default), or, with ``fallback_share``, this process paces itself on a local
  bucket with that share of the drain and burst until Redis answers again; a
  probe hands the calls back to Redis once it does.
- After the reply arrived, recording it is tried once: if Redis fails then,
  the error is logged (once per streak) and the reply returned.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import LimiterUnavailableError
from ..backends import MemoryBackend
from ..bucket import BucketConfig
from ..budget import Admission, BudgetKey, BudgetRules
from ..clock import Clock
from .common import FIRST_DELAY, MAX_DELAY, logger

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .connections import LoopState

T = TypeVar("T")


class Unavailable(Exception):
    """Redis did not answer in time (internal: becomes LimiterUnavailableError)."""

    def __init__(self, cause: BaseException, waited: float) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.waited = waited


async def call(
    backend: RedisBackend, state: LoopState, make: Callable[[], Awaitable[T]], *, patient: bool
) -> T:
    """One Redis operation: retried on connection errors while ``patient``."""
    from redis.exceptions import RedisError

    retryable = _retryable()
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + (backend._unavailable_wait if patient else 0.0)
    delay = FIRST_DELAY
    while True:
        try:
            async with asyncio.timeout(backend._command_timeout):
                if not state.ready:
                    await ready(state)
                return await make()
        except retryable as exc:
            failure: BaseException = exc
        except RedisError as exc:
            # Not a connection problem (permissions, out of memory, a
            # wrong key type): waiting will not help.
            raise Unavailable(exc, loop.time() - start) from exc
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Unavailable(failure, loop.time() - start) from failure
        # The last attempt comes at the deadline, so the whole wait is used.
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)


async def ready(state: LoopState) -> None:
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


def failed_after_reply(state: LoopState, what: str, exc: Unavailable) -> None:
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


def local_config(backend: RedisBackend, config: BucketConfig) -> BucketConfig:
    assert backend._share is not None
    return BucketConfig(
        capacity=max(1.0, math.floor(config.capacity * backend._share)),
        drain_per_second=config.drain_per_second * backend._share,
    )


def enter_fallback(backend: RedisBackend, state: LoopState, exc: Unavailable) -> MemoryBackend:
    """Redis is unreachable and the user chose to go on locally: do, until it is back."""
    if backend._fallback_backend is None:
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
            backend._share * 100 if backend._share is not None else 0,
        )
        # Waiters for Redis keys look again, now locally.
        state.wakeups.wake_all()
        if state.prober is None or state.prober.done():
            state.prober = asyncio.ensure_future(_probe(backend, state))
    return backend._fallback_backend


async def _probe(backend: RedisBackend, state: LoopState) -> None:
    """While in fallback: ask Redis every second whether it is back."""
    while state.fallback:
        await asyncio.sleep(MAX_DELAY)
        try:
            await call(backend, state, state.client.ping, patient=False)
        except Unavailable:
            continue
        state.fallback = False
        state.failing = False
        logger.warning("redis backend: Redis answers again; the shared limits are back")


def require_fallback(backend: RedisBackend) -> MemoryBackend:
    assert backend._fallback_backend is not None  # fallback is only entered with one
    return backend._fallback_backend


async def admit_locally(
    backend: RedisBackend,
    state: LoopState,
    ticket: str,
    keys: Sequence[tuple[BudgetKey, int]],
    rules: BudgetRules,
    clock: Clock,
    woken_by: BudgetKey | None,
) -> Admission:
    admission = await require_fallback(backend).admit(ticket, keys, rules, clock, woken_by=woken_by)
    if admission.admitted:
        state.local.add(ticket)
    return admission


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
