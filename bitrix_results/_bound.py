"""The theoretical bound (design §4): when would an ideal client finish?

The ideal client knows the portal's rules and costs exactly and sends each
request at the first instant the portal would admit it, with zero latency.
:func:`ideal_finish_time` simulates it against the portal's own rules:

- bucket (api-facts §1): a request is admitted when ``level + 1 <= X``; the level
  drains continuously at ``Y`` per second; each request adds 1 (a batch is one);
- operating budget (api-facts §2.2): a call is admitted when the method's total in
  the window is ``<= L`` (checked before the call, so the call that crosses the
  limit still runs); each call adds its cost to the current basket, which opens
  at the first call that finds none open, is ``W / 10`` wide, and expires ``W``
  after it opened (the same model as the fake portal's ``OperatingBudget``).

Two closed forms check it: bucket only, ``T = max(0, (R - X) / Y)``; budget
only, each window of ``W`` admits ``n = floor(L / c) + 1`` calls, so
``T = floor((R - 1) / n) * W`` (a staircase).
"""

from __future__ import annotations

import math
from collections import deque

from ._scheduler.limits import Limits

__all__ = ["ideal_finish_time"]

# Float noise: 4800 calls of 0.1 s total 480.00000000000006, which is "at" 480.
_EPS = 1e-9


def ideal_finish_time(
    requests: int,
    limits: Limits,
    *,
    cost: float | None = None,
    units_per_request: int = 1,
) -> float:
    """Seconds from the first request to the admission of the last one, ideally.

    ``requests``: HTTP requests (a batch is one). ``cost``: operating seconds
    charged per unit (one call, or one command of a batch); ``None`` means the
    budget never binds. ``units_per_request``: commands per request (50 for a
    full batch), so a request costs ``cost * units_per_request``.
    """
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        raise ValueError(f"requests: must be a non-negative int, got {requests!r}")
    if cost is not None and not (cost >= 0 and math.isfinite(cost)):
        raise ValueError(f"cost: must be a non-negative number or None, got {cost!r}")
    if (
        isinstance(units_per_request, bool)
        or not isinstance(units_per_request, int)
        or units_per_request < 1
    ):
        raise ValueError(f"units_per_request: must be a positive int, got {units_per_request!r}")
    if requests == 0:
        return 0.0

    burst = float(limits.burst)
    drain = float(limits.drain_per_second)
    limit = float(limits.operating_limit)
    window = float(limits.operating_window)
    basket_width = window / 10
    per_request = None if cost is None else cost * units_per_request
    # Compare the total as (calls in the window) * per_request: one rounding,
    # not thousands of accumulated additions.
    over = limit + _EPS * max(1.0, limit)

    now = 0.0
    level = 0.0  # bucket level right after the previous admission, at `level_at`
    level_at = 0.0
    baskets: deque[list[float]] = deque()  # [opened, calls]
    live_calls = 0.0
    for _ in range(requests):
        # Bucket: wait until the level has drained to X - 1.
        current = max(0.0, level - drain * (now - level_at))
        if current + 1 > burst + _EPS:
            now += (current + 1 - burst) / drain
        if per_request is not None:
            while baskets and baskets[0][0] + window <= now:
                live_calls -= baskets.popleft()[1]
            # Budget: blocked while the total is over L; only an expiry lowers it.
            while live_calls * per_request > over:
                now = max(now, baskets[0][0] + window)
                while baskets and baskets[0][0] + window <= now:
                    live_calls -= baskets.popleft()[1]
            if not baskets or now >= baskets[-1][0] + basket_width:
                baskets.append([now, 0.0])
            baskets[-1][1] += 1
            live_calls += 1
        # Waiting for the budget only drained the bucket further.
        level = max(0.0, level - drain * (now - level_at)) + 1
        level_at = now
    return now
