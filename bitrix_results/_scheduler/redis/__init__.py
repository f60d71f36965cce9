"""One bucket and one budget per portal across processes and hosts, kept in Redis.

design §2.5: the leaky bucket is per portal and source address, shared by every
application on the host (api-facts §1), and the operating budget is per method
and credential (api-facts §2.2). Worker processes that each kept their own copy
would each believe they own the whole bucket. :class:`RedisBackend` keeps both
in Redis, and every decision is one Lua script (``lua.py``), so it is
atomic and costs one round trip:

- **bucket**: a hash per portal (and egress address), drained by the Redis
  server's ``TIME``: one clock for every host. A reservation queues even when
  the bucket is full and returns how long to wait, so callers are served in
  order at the drain rate and no process can jump the line.
- **budget**: a hash per (credential, method) and a hash of the calls in
  flight, decided by the same rules as ``budget.py`` (the scripts are a port,
  checked against it by a differential test), also on the server's clock.
- **wake-ups**: a refused caller queues its process's token on the key; the
  settle that changes it pops one token and publishes on that process's own
  channel, so one settle wakes one caller across all processes (as one
  process's ``backends.Waiters`` would), not one in every process. Nobody polls.
- **leases**: a call in flight is registered with a short lease (a tenth of
  the operating window, at most 10 s) that a heartbeat renews while it runs.
  A worker that dies stops renewing, and its calls stop counting within one
  lease, never more than one operating window.

Failure semantics (documented in docs/rate-limits.md):

- Before a call is sent, a Redis error (connection refused, reset, timeout,
  cluster down) is retried with backoff for ``unavailable_wait`` seconds. Then
  the call raises :class:`~bitrix_results.errors.LimiterUnavailableError`,
  nothing sent (fail-closed, the default), or, with ``fallback_share``, this
  process paces itself on a local bucket with that share of the drain and
  burst until Redis answers again.
- After the reply arrived, recording it (settle, 503/success bookkeeping) is
  tried once: if Redis fails then, the error is logged and the reply returned.
  The call's flight stops being renewed and expires with its lease.
- Reconnecting is the Redis client's: every retry takes a fresh connection.
  A bucket that disappears while this process was using it (a restart
  without persistence, an eviction, FLUSHALL) is recreated full, not empty,
  so the loss costs one burst's worth of waiting, not a new burst. Requests
  already queued when it was lost still go at their time: each process, the
  first time it meets the new bucket (its epoch changed), puts its queued
  reservations back in line, inside that same script.

Needs the optional extra: ``pip install bitrix_results[redis]``. ``redis`` is
imported only when a backend first talks to Redis, never at import time.

The parts, one module each: ``backend.py`` (:class:`RedisBackend`, the
coordinator), ``connections.py`` (a client per event loop, closing),
``buckets.py`` and ``budgets.py`` (the scripts' arguments and replies),
``leases.py`` (the heartbeat), ``wakeups.py`` (waiters and pub/sub),
``failures.py`` (retry, fail closed, local fallback), ``lua.py`` (the scripts).
"""

from .backend import RedisBackend

__all__ = ["RedisBackend"]
