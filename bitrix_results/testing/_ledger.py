"""What the portal did: every executed call, every created result, and the counters.

The ledger is how a test proves "nothing lost, nothing doubled" (design §2.3): it sees
calls the client never got an answer for (a dropped connection) and results a retry
created twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CreatedResult", "ExecutedCall", "Ledger", "PortalStats"]


@dataclass(frozen=True)
class ExecutedCall:
    """One method execution (a batch command counts on its own; the batch does not)."""

    at: float
    api: str
    method: str
    user_id: int
    ok: bool
    cost: float
    in_batch: bool = False
    idempotency_key: str | None = None
    #: A command of a v3 batch that failed and was rolled back: it ran, nothing stayed.
    rolled_back: bool = False


@dataclass(frozen=True)
class CreatedResult:
    """A task result that was created and kept (rolled-back ones are not listed)."""

    id: int
    task_id: int
    text: str
    author_id: int
    method: str
    created_at: float
    idempotency_key: str | None = None


class Ledger:
    """Append-only record of executed calls and created results. Thread-safe to read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[ExecutedCall] = []
        self._created: list[CreatedResult] = []

    def record_calls(self, calls: list[ExecutedCall]) -> None:
        with self._lock:
            self._calls.extend(calls)

    def record_created(self, created: list[CreatedResult]) -> None:
        with self._lock:
            self._created.extend(created)

    @property
    def calls(self) -> tuple[ExecutedCall, ...]:
        with self._lock:
            return tuple(self._calls)

    @property
    def created(self) -> tuple[CreatedResult, ...]:
        with self._lock:
            return tuple(self._created)

    def calls_of(self, method: str) -> list[ExecutedCall]:
        """Executed calls of one REST method (name compared case-insensitively)."""
        name = method.lower()
        return [call for call in self.calls if call.method == name]

    def created_in(self, task_id: int) -> list[CreatedResult]:
        return [result for result in self.created if result.task_id == task_id]

    def duplicates(self) -> int:
        """Extra results with the same (task_id, text) beyond the first of each."""
        counts = Counter((r.task_id, r.text) for r in self.created)
        return sum(n - 1 for n in counts.values())

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._created.clear()


@dataclass(frozen=True)
class PortalStats:
    """A snapshot of the portal's counters (``FakePortal.stats()``, ``GET /_fake/stats``)."""

    #: HTTP requests to /rest/ (every one counts in the bucket, api-facts §1).
    requests: int = 0
    #: 503 QUERY_LIMIT_EXCEEDED answers (bucket full).
    rate_limited: int = 0
    #: 429 OPERATION_TIME_LIMIT refusals, including refused batch commands.
    operating_limited: int = 0
    #: 401 answers of any code (NO_AUTH_FOUND, expired_token).
    unauthorized: int = 0
    #: Of those, expired_token.
    expired_tokens: int = 0
    #: Method executions (batch commands count one each; the batch wrapper does not).
    executed: int = 0
    #: Idempotency-Key replays (answered from the store, not executed).
    replays: int = 0
    #: Successful refresh_token grants at /oauth/token/.
    refreshes: int = 0
    #: Highest bucket level any client address reached.
    peak_bucket_level: float = 0.0
    #: Results created and kept, and how many of them repeat a (task_id, text).
    results_created: int = 0
    duplicates: int = 0
    #: Injected faults by kind (fail_before, drop_after, slow, html_503, redirect).
    faults: dict[str, int] = field(default_factory=dict)
    #: Executions per REST method.
    by_method: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
