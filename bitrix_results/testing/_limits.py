"""The portal's two limits, as pure arithmetic on an injected ``now``.

- :class:`LeakyBucket`: the request-rate limit (api-facts §1).
- :class:`OperatingBudget`: the per-method execution-time budget (api-facts §2.2).

Both take times in real seconds and rates/limits already scaled by the config, so this
module knows nothing about scale, HTTP or the API versions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

# Float noise: a level of 49.000000001 after draining must still admit the 50th
# request, and a total of 480.0000000001 built from 4800 × 0.1 s must not block.
_EPS = 1e-6


class LeakyBucket:
    """One (portal, client address) bucket (api-facts §1).

    Admits a request when ``level + 1 <= burst``; the level drains continuously at
    ``drain`` per second; an admitted request adds 1; a refused one adds nothing.

    ``neighbour`` models a second tenant behind the same address (api-facts §1: apps on
    one server share the bucket) as a steady inflow of ``neighbour`` requests per second,
    so the bucket effectively drains at ``drain - neighbour`` and never rises above the
    threshold (the neighbour's own excess is refused like anyone's). A neighbour at or
    above the drain rate therefore starves everyone else, as it would on a real portal.
    """

    def __init__(self, *, burst: int, drain: float, now: float, neighbour: float = 0.0) -> None:
        self.burst = burst
        self.drain = drain
        self.neighbour = neighbour
        self.level = 0.0
        self.peak = 0.0
        self._updated = now

    def _advance(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed <= 0:
            # A clock that steps backwards (or two requests at the same instant)
            # must not refill the bucket.
            return
        self._updated = now
        net = (self.neighbour - self.drain) * elapsed
        self.level = min(float(self.burst), max(0.0, self.level + net))

    def level_at(self, now: float) -> float:
        """The level at ``now`` (drained up to then)."""
        self._advance(now)
        return self.level

    def try_admit(self, now: float) -> bool:
        """Admit one request at ``now`` if it fits; a refused request costs nothing."""
        self._advance(now)
        if self.level + 1 > self.burst + _EPS:
            return False
        self.level += 1
        self.peak = max(self.peak, self.level)
        return True


@dataclass
class _Basket:
    opened: float
    total: float


@dataclass(frozen=True)
class BudgetReading:
    """A method's running total and when its oldest basket expires (None: no baskets)."""

    operating: float
    reset_at: float | None


class OperatingBudget:
    """Execution time per (credential, method) over ten rolling baskets (api-facts §2.2).

    A basket opens at the first call that finds no current basket, is ``basket_width``
    wide (W/10) and expires ``window`` (W) after it opened. Before a call the total of
    the live baskets is compared with ``limit``: above it the call is refused; at or
    below it the call runs, even if it crosses the limit, and its cost goes to the
    current basket.
    """

    def __init__(self, *, limit: float, window: float, basket_width: float) -> None:
        self.limit = limit
        self.window = window
        self.basket_width = basket_width
        self._baskets: dict[Hashable, deque[_Basket]] = {}

    def _live(self, key: Hashable, now: float) -> deque[_Basket]:
        baskets = self._baskets.setdefault(key, deque())
        # api-facts §2.2: "each basket expires 10 minutes after the first call recorded in it".
        while baskets and baskets[0].opened + self.window <= now:
            baskets.popleft()
        return baskets

    def reading(self, key: Hashable, now: float) -> BudgetReading:
        """The running total at ``now`` and the expiry of the oldest live basket."""
        baskets = self._live(key, now)
        total = sum(b.total for b in baskets)
        reset_at = baskets[0].opened + self.window if baskets else None
        return BudgetReading(total, reset_at)

    def is_blocked(self, key: Hashable, now: float) -> bool:
        """api-facts §2.2: checked *before* the call; blocked only when already over."""
        return self.reading(key, now).operating > self.limit + _EPS

    def charge(self, key: Hashable, now: float, cost: float) -> BudgetReading:
        """Add ``cost`` to the current basket; return the total *including* this call."""
        baskets = self._live(key, now)
        if not baskets or now >= baskets[-1].opened + self.basket_width:
            baskets.append(_Basket(opened=now, total=0.0))
        baskets[-1].total += cost
        return self.reading(key, now)

    def keys(self) -> list[Hashable]:
        return list(self._baskets)
