"""The shared bucket: one hash per portal (and egress address), drained on the server's clock.

A reservation queues even when the bucket is full and returns how long to
wait, so callers are served in order at the drain rate and no process can jump
the line. A bucket lost while in use is recreated full, and this process's
queued reservations go back in line (``lua.BUCKET``).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from ..bucket import RATE_DECREASE, RATE_FLOOR, RATE_STEP, BucketConfig, Reservation
from ..clock import Clock
from ..stats import BucketStatistics
from .common import logger, now_arg, text
from .failures import call

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .connections import LoopState


def bucket_key(backend: RedisBackend, portal: str) -> str:
    key = f"{backend._prefix}:{{p:{portal}}}:bucket"
    return key if backend._egress is None else f"{key}:{backend._egress}"


async def bucket_op(
    backend: RedisBackend,
    state: LoopState,
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
        now_arg(backend._server_time, clock),
        repr(ticket),
        repr(RATE_DECREASE),
        repr(RATE_FLOOR),
        repr(RATE_STEP),
        "1" if alive else "0",
        backend._token,
        state.bucket_epoch.get(portal, ""),
        str(state.queued.get(portal, 0)),
    ]
    raw = await call(
        backend,
        state,
        lambda: state.bucket(keys=[bucket_key(backend, portal)], args=args),
        patient=patient,
    )
    reply = text(raw).split("|")
    wait, level, rate, at = (float(value) for value in reply[:4])
    if reply[4] == "1":
        logger.warning(
            "redis backend: the bucket of %s was lost (eviction or restart); treating it as full",
            portal,
        )
    # The script keeps an idle bucket for level / rate + 60 s; a second's
    # margin for the clocks, then a missing key is no longer a surprise.
    state.bucket_alive[portal] = loop.time() + level / rate + 59.0
    # A recreated bucket has a new epoch: the script puts this process's
    # queued reservations back in line when it first meets it.
    state.bucket_epoch[portal] = reply[5]
    backend._buckets[portal] = BucketStatistics(
        portal=portal,
        level=level,
        capacity=config.capacity,
        drain_per_second=rate,
        nominal_drain_per_second=config.drain_per_second,
    )
    return wait, at


async def reserve(
    backend: RedisBackend, state: LoopState, portal: str, config: BucketConfig, clock: Clock
) -> Reservation:
    """Reserve a slot in Redis, then wait for its turn (raises Unavailable)."""
    wait, at = await bucket_op(backend, state, "reserve", portal, config, clock, patient=True)
    # The slot is ours already; we only wait for our turn to use it.
    if wait > 0:
        queued = state.queued
        queued[portal] = queued.get(portal, 0) + 1
        try:
            await clock.sleep(wait)
        finally:
            queued[portal] -= 1
    stats = backend._buckets[portal]
    return Reservation(waited=wait, reserved_at=at, drain_per_second=stats.drain_per_second)
