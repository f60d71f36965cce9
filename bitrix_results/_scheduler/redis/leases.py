"""Leases: a call in flight counts for a short lease that a heartbeat renews while it runs.

A lease is a tenth of the operating window, at most 10 s. A worker that dies
stops renewing, and its calls stop counting within one lease, never more than
one operating window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..budget import BudgetRules
from ..clock import Clock
from .common import MAX_LEASE, logger, tag
from .failures import Unavailable, call

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .connections import LoopState


class Flight:
    """A call of this process in flight: what the heartbeat renews."""

    __slots__ = ("groups", "lease")

    def __init__(self, groups: dict[str, list[str]], lease: float) -> None:
        #: hash tag -> flights keys of that tag (one script call per slot).
        self.groups = groups
        self.lease = lease


def lease_for(backend: RedisBackend, rules: BudgetRules) -> float:
    if backend._lease is not None:
        return backend._lease
    return min(MAX_LEASE, rules.window / 10)


def track(
    backend: RedisBackend,
    state: LoopState,
    ticket: str,
    names: Sequence[str],
    lease: float,
    clock: Clock,
) -> None:
    groups: dict[str, list[str]] = {}
    for flights in names[1::3]:
        groups.setdefault(tag(flights), []).append(flights)
    state.flights[ticket] = Flight(groups, lease)
    state.clock = clock
    if state.beater is None or state.beater.done():
        state.beater = asyncio.ensure_future(_beat(backend, state))


async def _beat(backend: RedisBackend, state: LoopState) -> None:
    """Renew the leases of this loop's calls in flight, a third of a lease apart."""
    while state.flights:
        interval = min(flight.lease for flight in state.flights.values()) / 3
        await asyncio.sleep(interval)
        batches: dict[tuple[str, float], tuple[set[str], list[str]]] = {}
        for ticket, flight in list(state.flights.items()):
            for hash_tag, keys in flight.groups.items():
                names, tickets = batches.setdefault((hash_tag, flight.lease), (set(), []))
                names.update(keys)
                tickets.append(ticket)
        for (_, lease), (names, tickets) in batches.items():
            await _renew(backend, state, sorted(names), lease, tickets)


async def _renew(
    backend: RedisBackend, state: LoopState, keys: list[str], lease: float, tickets: list[str]
) -> None:
    clock = state.clock
    now = "" if backend._server_time or clock is None else repr(clock.time())
    args = [now, repr(lease), *tickets]
    try:
        await call(backend, state, lambda: state.heartbeat(keys=keys, args=args), patient=False)
    except Unavailable:
        logger.debug("redis backend: a heartbeat failed; retried next beat")
