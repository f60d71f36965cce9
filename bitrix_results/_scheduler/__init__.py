"""Pacing to the portal's limits: leaky bucket, operating budget, retry safety, backends.

- ``limits.py``: :class:`Limits`, the portal's numbers (api-facts §1, §2).
- ``bucket.py``: the leaky bucket on aiolimiter, 503 reaction (AIMD).
- ``budget.py``: the operating budget per (credential, method), pure logic.
- ``retry.py``: which failures are safe to retry; :class:`RetryPolicy`.
- ``backends.py`` / ``redis/``: where the state lives (one process / many).
- ``scheduler.py``: :class:`Scheduler`, the one place calls go through.
- ``attempts.py``: one attempt of a call (admission, bucket, send, settling)
  and the counters ``statistics()`` reports.
- ``retrying.py``: one call's retry history: caps, backoff, token refreshes,
  the 429 deadline, the settle time of a keyed write.
- ``slots.py``: first-come, first-served concurrency slots.
- ``stats.py``: the frozen ``statistics()`` snapshots.
- ``clock.py``: injectable time (virtual time for tests is
  ``bitrix_results.testing.virtual_time``).
- ``per_loop.py``: one value per event loop (slots, buckets, waiters).

CPU per call. Every call of the client runs through :meth:`Scheduler.execute`
and a backend, so the code on that path is written for CPU, and some choices
there would look odd elsewhere: backend steps done at once without a coroutine
(``Backend``'s "try now, else await"), msgspec Structs instead of frozen
dataclasses for the objects made per call, shared constant verdicts, caches of
merged budget keys and of the last event loop's state, plain loops instead of
generators. The bar is ``benchmarks/bench_overhead.py``: the client's CPU per
call at most 1.25 times that of a raw aiohttp client making the same calls
(``docs/benchmarks.md``). Measure there before trading any of these for
brevity.
"""

from .backends import Backend, MemoryBackend, default_backend
from .bucket import DEFAULT_HEADROOM, BucketConfig
from .budget import BudgetKey, BudgetRules
from .clock import Clock, SystemClock
from .limits import Limits
from .redis import RedisBackend
from .retry import RetryPolicy, Safety, classify
from .scheduler import Scheduler
from .stats import BucketStatistics, BudgetStatistics, SchedulerStatistics

__all__ = [
    "DEFAULT_HEADROOM",
    "Backend",
    "BucketConfig",
    "BucketStatistics",
    "BudgetKey",
    "BudgetRules",
    "BudgetStatistics",
    "Clock",
    "Limits",
    "MemoryBackend",
    "RedisBackend",
    "RetryPolicy",
    "Safety",
    "Scheduler",
    "SchedulerStatistics",
    "SystemClock",
    "classify",
    "default_backend",
]
