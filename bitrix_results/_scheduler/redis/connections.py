"""Connections: one Redis client per event loop, the factories that make them, closing.

A Redis client belongs to one event loop. The client given to the backend (or
made by ``from_url``) serves the first loop; other loops (a sync facade's
thread beside an async app) get their own, cloned from its connection settings.
Each loop's state is closed from its own loop: by ``aclose()``, or by the loop's
shutdown of async generators.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..budget import BudgetKey
from ..clock import Clock
from .common import MAX_LEASE, logger, quietly, running_loop
from .leases import Flight
from .lua import ADMIT, BUCKET, HEARTBEAT, SETTLE
from .wakeups import Wakeups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .backend import RedisBackend


class LoopState:
    """Everything this backend keeps per event loop: a Redis client belongs to one."""

    def __init__(self, client: Redis, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.admit = client.register_script(ADMIT)
        self.settle = client.register_script(SETTLE)
        self.heartbeat = client.register_script(HEARTBEAT)
        self.bucket = client.register_script(BUCKET)
        self.wakeups = Wakeups()
        #: state key name -> budget key (to route notifications).
        self.names: dict[str, BudgetKey] = {}
        self.flights: dict[str, Flight] = {}
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


def loop_state(backend: RedisBackend) -> LoopState:
    loop = asyncio.get_running_loop()
    state = backend._loops.get(loop)
    if state is None:
        with backend._lock:  # loops in other threads may ask at the same time
            return _new_state(backend, loop)
    return state


def _new_state(backend: RedisBackend, loop: asyncio.AbstractEventLoop) -> LoopState:
    state = backend._loops.get(loop)
    if state is None:
        if backend._closed:
            raise RuntimeError("RedisBackend: used after aclose()")
        if backend._given is not None:
            # The client passed in (or made by from_url) serves the first loop.
            state = LoopState(backend._given, owned=backend._owns_given)
            backend._given = None
        elif backend._factory is not None:
            state = LoopState(backend._factory(), owned=True)
        else:
            state = LoopState(_clone(backend._template), owned=True)
        backend._loops[loop] = state
        # An async generator parked on this loop: when the loop shuts down
        # (asyncio.run's shutdown_asyncgens), its finally closes this loop's
        # client, before the loop closes and would leave the sockets open.
        state.keeper = _keeper(state)
        state.starter = asyncio.ensure_future(_first_step(state.keeper))
    return state


async def close_all(backend: RedisBackend) -> None:
    """Close every loop's state: this loop's here, a running other loop's on it."""
    current = running_loop()
    for loop, state in list(backend._loops.items()):
        if loop is current:
            await _finish(state)
        elif loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_finish(state), loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), 5.0)
            except (TimeoutError, RuntimeError, OSError):
                logger.debug("redis backend: could not close a client of another loop")
        # A closed loop took its connections with it.
    backend._loops = weakref.WeakKeyDictionary()


def factory(url: str, cluster: bool) -> Callable[[], Redis]:
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


async def _keeper(state: LoopState) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await _close_state(state)


async def _first_step(keeper: AsyncIterator[None]) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await keeper.__anext__()


async def _finish(state: LoopState) -> None:
    """Close one loop's state from that loop (and retire its keeper)."""
    keeper: Any = state.keeper
    if keeper is not None:
        await quietly(keeper.aclose())
    await _close_state(state)


async def _close_state(state: LoopState) -> None:
    if state.closed:
        return
    state.closed = True
    for task in state.tasks():
        task.cancel()
    for task in state.tasks():
        await quietly(task)
    if state.pubsub is not None:
        await quietly(state.pubsub.aclose())
    if state.node_client is not None:
        await quietly(state.node_client.aclose())
    if state.owned:
        client: Any = state.client
        await quietly(client.aclose())
