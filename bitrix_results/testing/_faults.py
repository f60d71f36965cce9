"""Seeded fault injection: which request gets which fault, reproducibly."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .config import Faults


class FaultKind(enum.Enum):
    FAIL_BEFORE = "fail_before"
    DROP_AFTER = "drop_after"
    SLOW = "slow"
    SLOW_EXECUTION = "slow_execution"
    HTML_503 = "html_503"
    REDIRECT = "redirect"


@dataclass(frozen=True)
class FaultRoll:
    """At most one fault before execution and one after, for one request; ``late``: the
    execution itself is postponed (the slow-execution fault)."""

    before: FaultKind | None = None
    after: FaultKind | None = None
    late: bool = False


_NO_FAULT = FaultRoll()


class FaultInjector:
    """Draws faults from its own seeded RNG.

    Each request the faults apply to draws exactly five numbers (six when
    ``slow_execution`` is configured, so the sequences of existing seeds stay as they
    were), whatever happens to it afterwards, so the fault sequence depends only on the
    seed, the config and the order of requests, not on timing (a request refused by
    the bucket still consumes its draws).
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"faults:{seed}")

    def roll(self, faults: Faults, method: str) -> FaultRoll:
        if not faults.applies_to(method):
            return _NO_FAULT
        redirect, html, fail, drop, slow = (self._rng.random() for _ in range(5))
        late = faults.slow_execution > 0 and self._rng.random() < faults.slow_execution
        before: FaultKind | None = None
        # Precedence follows where each fault happens: the old domain answers first,
        # then a proxy in front of the portal, then the portal itself.
        if redirect < faults.redirect:
            before = FaultKind.REDIRECT
        elif html < faults.html_503:
            before = FaultKind.HTML_503
        elif fail < faults.fail_before:
            before = FaultKind.FAIL_BEFORE
        after: FaultKind | None = None
        if drop < faults.drop_after:
            after = FaultKind.DROP_AFTER
        elif slow < faults.slow:
            after = FaultKind.SLOW
        return FaultRoll(before, after, late)
