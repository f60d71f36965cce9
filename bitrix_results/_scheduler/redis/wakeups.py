"""Wake-ups: callers of this process waiting for budget keys, and the pub/sub that wakes them.

A refused caller queues its process's token on the key; the settle that
changes it pops one token and publishes on that process's own channel, so one
settle wakes one caller across all processes. Nobody polls.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..budget import Admission, BudgetKey
from ..clock import Clock
from .common import FIRST_DELAY, MAX_DELAY, logger, quietly, text
from .failures import require_fallback

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from .backend import RedisBackend
    from .connections import LoopState


class Wakeups:
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


def listen(backend: RedisBackend, state: LoopState) -> None:
    if state.listener is None or state.listener.done():
        state.listener = asyncio.ensure_future(_listener(backend, state))


async def _listener(backend: RedisBackend, state: LoopState) -> None:
    """Receive the wake-up notifications; on a gap, let every first waiter look again."""
    delay = FIRST_DELAY
    while True:
        try:
            pubsub = state.pubsub = (await _pubsub_client(state)).pubsub()
            try:
                await _subscribe(backend, pubsub)
                state.subscribed.set()
                delay = FIRST_DELAY
                # Anything published while we were not listening is lost.
                state.wakeups.wake_heads()
                await _receive(state, pubsub)
            finally:
                state.subscribed.clear()
                state.pubsub = None
                await quietly(pubsub.aclose())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: reconnect
            logger.debug("redis backend: wake-up channel lost (%s)", type(exc).__name__)
            # Waiting for a notification that may never come: look again.
            state.wakeups.wake_heads()
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


async def _subscribe(backend: RedisBackend, pubsub: PubSub) -> None:
    async with asyncio.timeout(backend._command_timeout):
        await pubsub.subscribe(backend._channel)
        # Wait for the confirmation: only then are notifications delivered.
        while True:
            message = await pubsub.get_message(timeout=backend._command_timeout)
            if message is not None and text(message.get("type")) == "subscribe":
                return


async def _receive(state: LoopState, pubsub: PubSub) -> None:
    while True:
        # A waiter whose key's holder died is woken by no settle: look
        # again once a lease (the longest a dead process's flight counts).
        recheck = state.lease
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=recheck)
        if message is None:
            state.wakeups.wake_heads()
            continue
        key = state.names.get(text(message.get("data")))
        if key is not None:
            state.wakeups.notify(key)


async def _pubsub_client(state: LoopState) -> Any:
    """The client to subscribe with: on a cluster, one node's own (PUBLISH reaches all)."""
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

    client: Any = state.client
    if not isinstance(client, RedisCluster):
        return client
    if state.node_client is not None:
        await quietly(state.node_client.aclose())
    await client.initialize()
    node = client.get_random_node()
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    state.node_client = Redis(connection_pool=pool, auto_close_connection_pool=True)
    return state.node_client


async def wait_budget(
    backend: RedisBackend, state: LoopState, admission: Admission, clock: Clock, attempt: int
) -> BudgetKey | None:
    """Wait until a refused call may look again: woken by a settle, or its time."""
    seconds = admission.retry_at - clock.time()
    if state.fallback:
        # Local waits look again at least every second, so the calls move
        # back to Redis soon after it answers.
        return await require_fallback(backend).wait_budget(
            Admission(
                False,
                min(admission.retry_at, clock.time() + MAX_DELAY),
                admission.on_change,
                admission.blocked_by,
            ),
            clock,
            attempt=attempt,
        )
    if admission.on_change and not state.subscribed.is_set():
        # First wait on this loop: subscribe to the wake-ups, then look again
        # (a change between the refusal and the subscription would be lost).
        listen(backend, state)
        try:
            await asyncio.wait_for(state.subscribed.wait(), backend._command_timeout)
        except TimeoutError:
            seconds = min(seconds, MAX_DELAY)
        else:
            return None
    return await state.wakeups.wait(admission.blocked_by, seconds, clock)
