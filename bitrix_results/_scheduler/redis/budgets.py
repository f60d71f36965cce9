"""The shared operating budget: a hash per (credential, method) and one of the calls in flight.

Decided by the same rules as ``budget.py`` (the scripts in ``lua.py`` are a
port, checked against it by a differential test), on the server's clock. Here:
the keys' names, the scripts' arguments, and what their replies teach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..budget import Admission, BudgetKey, BudgetRules, Settlement
from ..clock import Clock
from ..stats import BudgetStatistics
from .common import arg, now_arg, opt, text
from .failures import Unavailable, call, failed_after_reply
from .leases import lease_for, track

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .connections import LoopState


def budget_names(backend: RedisBackend, key: BudgetKey) -> tuple[str, str, str]:
    credential, method = key
    # One hash tag per credential: a batch's keys (one credential, several
    # methods) share a slot, so one script may touch them all on a cluster.
    base = f"{backend._prefix}:{{c:{credential}}}"
    return f"{base}:budget:{method}", f"{base}:flights:{method}", f"{base}:waiters:{method}"


def script_keys(
    backend: RedisBackend, state: LoopState, keys: Sequence[tuple[BudgetKey, int]]
) -> list[str]:
    names: list[str] = []
    for key, _ in keys:
        budget, flights, waiters = budget_names(backend, key)
        state.names[budget] = key
        names += (budget, flights, waiters)
    return names


def ttl_ms(rules: BudgetRules, lease: float) -> str:
    # Keep a key twice as long as the window: older state is all expired.
    return str(max(1, math.ceil((2 * rules.window + lease) * 1000)))


def learn_stats(
    backend: RedisBackend,
    keys: Sequence[tuple[BudgetKey, int]],
    reply: Sequence[str],
    offset: int,
    clock: Clock,
) -> float:
    """Keep the statistics in a script's reply (parsed when asked); return its ``now``."""
    server_now = float(reply[offset - 1])
    # Times in the reply are on the script's clock: shift them onto ours.
    shift = clock.time() - server_now if backend._server_time else 0.0
    for i, (key, _) in enumerate(keys):
        start = offset + 7 * i
        backend._budgets[key] = (tuple(reply[start : start + 7]), shift)
    return server_now


async def admit(
    backend: RedisBackend,
    state: LoopState,
    ticket: str,
    keys: Sequence[tuple[BudgetKey, int]],
    rules: BudgetRules,
    clock: Clock,
    woken_by: BudgetKey | None,
) -> Admission:
    """Ask Redis to admit the call (raises Unavailable when it cannot be reached)."""
    lease = state.lease = lease_for(backend, rules)
    names = script_keys(backend, state, keys)
    args = [
        now_arg(backend._server_time, clock),
        ticket,
        repr(lease),
        repr(rules.limit),
        repr(rules.window),
        ttl_ms(rules, lease),
        backend._token,
        *(str(units) for _, units in keys),
    ]
    raw = await call(backend, state, lambda: state.admit(keys=names, args=args), patient=True)
    state.failing = False
    reply = text(raw).split("|")
    server_now = learn_stats(backend, keys, reply, 5, clock)
    wakeups = state.wakeups
    if reply[0] == "1":
        track(backend, state, ticket, names, lease, clock)
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


async def settle(
    backend: RedisBackend,
    state: LoopState,
    ticket: str,
    keys: Sequence[tuple[BudgetKey, int]],
    settlement: Settlement,
    rules: BudgetRules,
    clock: Clock,
) -> None:
    """Record a call's outcome in Redis, once; wake whoever it lets go."""
    state.flights.pop(ticket, None)
    lease = lease_for(backend, rules)
    names = script_keys(backend, state, keys)
    time = settlement.time
    args = [
        now_arg(backend._server_time, clock),
        ticket,
        settlement.kind,
        "1" if settlement.replayed else "0",
        "1" if time is not None else "",
        *(
            arg(value)
            for value in (
                (None, None, None, None)
                if time is None
                else (time.operating, time.operating_reset_at, time.start, time.finish)
            )
        ),
        repr(rules.limit),
        repr(rules.window),
        ttl_ms(rules, lease),
        backend._channel_prefix,
        backend._token,
        *(str(units) for _, units in keys),
    ]
    try:
        # Once, not patiently: the reply is waiting to be returned.
        raw = await call(backend, state, lambda: state.settle(keys=names, args=args), patient=False)
    except Unavailable as exc:
        failed_after_reply(state, "a call's outcome", exc)
        # No waiter was popped: our own look again at once.
        for key, _ in keys:
            state.wakeups.wake_one(key)
    else:
        reply = text(raw).split("|")
        learn_stats(backend, keys, reply, 1, clock)
        # The script woke another process's waiter, or names ours to wake.
        for i in reply[-1].split(","):
            if i:
                state.wakeups.notify(keys[int(i) - 1][0])


def statistics(backend: RedisBackend, key: BudgetKey) -> BudgetStatistics | None:
    """The statistics of the last reply about ``key``, on the scheduler's clock."""
    seen = backend._budgets.get(key)
    if seen is None:
        return None
    (tracked, total, reset_at, num, den, held, units), shift = seen
    cost = float(num) / float(den) if den and float(den) > 0 else None
    return BudgetStatistics(
        credential=key[0],
        method=key[1],
        operating=opt(total),
        reset_at=None if not reset_at else float(reset_at) + shift,
        cost=cost,
        cost_bound=None if cost is None else cost * 1.5,
        held_until=None if not held else float(held) + shift,
        in_flight_units=int(float(units)),
        tracked=None if not tracked else tracked == "1",
    )
