"""Pacing to the portal's limits: leaky bucket, operating budget, retry safety, backends.

- ``limits.py``: :class:`Limits`, the portal's numbers (facts §1, §2).
- ``bucket.py``: the leaky bucket on aiolimiter, 503 reaction (AIMD).
- ``budget.py``: the operating budget per (credential, method), pure logic.
- ``retry.py``: which failures are safe to retry; :class:`RetryPolicy`.
- ``backends.py`` / ``redis.py``: where the state lives (one process / many).
- ``scheduler.py``: :class:`Scheduler`, the one place calls go through.
- ``stats.py``: the frozen ``statistics()`` snapshots.
- ``bound.py``: :func:`ideal_finish_time`, the theoretical bound (SPEC §4).
- ``clock.py`` / ``virtual_time.py``: injectable time, and virtual time for tests.
"""

from .backends import Backend, MemoryBackend, default_backend
from .bound import ideal_finish_time
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
    "ideal_finish_time",
]
