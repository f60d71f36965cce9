"""Frozen snapshots of what the scheduler did and what it knows (``statistics()``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["BucketStatistics", "BudgetStatistics", "SchedulerStatistics"]


@dataclass(frozen=True, slots=True)
class BucketStatistics:
    """One portal's leaky bucket as this process last saw it."""

    #: The portal's address.
    portal: str
    #: Requests outstanding in our model (with Redis: when last read, and it
    #: includes reservations still waiting for their turn).
    level: float
    #: ``burst - headroom``: the level we never go above.
    capacity: float
    #: The drain rate in force: the nominal one, or slower after a 503.
    drain_per_second: float
    #: The drain rate of the ``Limits`` in use.
    nominal_drain_per_second: float


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """One (credential, method) operating budget as this process last saw it."""

    #: The credential's fingerprint (never the secret itself).
    credential: str
    #: The REST method (or the budget a batch shares).
    method: str
    #: The latest running total the portal reported (seconds), None if never.
    operating: float | None
    #: When the oldest basket expires, on our wall clock (Unix seconds).
    reset_at: float | None
    #: Learned operating seconds per unit (one call, or one command of a batch).
    cost: float | None
    #: The pessimistic per-unit cost used to project in-flight calls.
    cost_bound: float | None
    #: Held (no call sent) until this wall time, if held.
    held_until: float | None
    #: Units admitted and not yet answered.
    in_flight_units: int
    #: False when replies carry no operating counters (only 429 is reacted to).
    tracked: bool | None


def _frozen_map(items: Mapping[str, int] | None = None) -> Mapping[str, int]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    """A snapshot of one scheduler: counters since it was made, and the limits' state."""

    #: HTTP requests handed to the transport (a batch is one; retries count).
    requests_sent: int = 0
    #: Requests that had to wait for a bucket slot.
    bucket_waits: int = 0
    #: Seconds requests waited for a bucket slot, summed.
    bucket_wait_seconds: float = 0.0
    #: Calls that had to wait for an operating budget.
    budget_waits: int = 0
    #: Seconds calls waited for an operating budget, summed.
    budget_wait_seconds: float = 0.0
    #: Retries by reason: rate_limit, operating_limit, expired_token, connect,
    #: timeout, connection_lost, server_error, decode_error.
    retries: Mapping[str, int] = field(default_factory=_frozen_map)
    #: 503 QUERY_LIMIT_EXCEEDED responses seen (api-facts §1).
    rate_limit_hits: int = 0
    #: 429 OPERATION_TIME_LIMIT responses seen (api-facts §2.2).
    operating_limit_hits: int = 0
    #: Calls currently inside ``execute`` past admission.
    in_flight: int = 0
    #: Per portal this scheduler has sent to.
    buckets: Mapping[str, BucketStatistics] = field(default_factory=dict)
    #: Per (credential, method) this scheduler has sent.
    budgets: Mapping[tuple[str, str], BudgetStatistics] = field(default_factory=dict)

    def __reduce__(self) -> tuple[object, ...]:
        # The read-only mapping views cannot be pickled; a snapshot travels (inside
        # a BulkReport, inside a BulkAbortedError) between processes, so rebuild it
        # from plain dicts.
        values: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            values[name] = dict(value) if isinstance(value, MappingProxyType) else value
        return (_statistics, (values,))

    @property
    def retries_total(self) -> int:
        """Retries of every reason, summed."""
        return sum(self.retries.values())

    @property
    def bucket(self) -> BucketStatistics | None:
        """The bucket, when this scheduler talks to one portal (the usual case)."""
        return next(iter(self.buckets.values()), None)


def _statistics(values: dict[str, object]) -> SchedulerStatistics:
    """Unpickle a snapshot, its mappings read-only again."""
    for name, value in values.items():
        if isinstance(value, dict):
            values[name] = MappingProxyType(value)
    return SchedulerStatistics(**values)  # type: ignore[arg-type]
