"""Per-task admission: units touching a task vs. a reconciliation freezing it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["TaskGate"]


class TaskGate:
    """Lets sends share tasks, and gives a reconciliation its tasks to itself.

    A reconciliation must see a task with none of the job's requests in flight on
    it, or a result still on its way back could be claimed twice. Freezing a task
    stops new sends on it and waits for the ones in flight.
    """

    def __init__(self) -> None:
        self._busy: Counter[int] = Counter()
        self._frozen: set[int] = set()
        self._cond = anyio.Condition()

    def busy(self, task_id: int) -> int:
        """How many sends are inside :meth:`use` on ``task_id`` now."""
        return self._busy[task_id]

    def is_frozen(self, task_id: int) -> bool:
        return task_id in self._frozen

    @asynccontextmanager
    async def use(self, tasks: set[int]) -> AsyncIterator[None]:
        """Hold ``tasks`` for a send; waits while any of them is frozen."""
        async with self._cond:
            while not self._frozen.isdisjoint(tasks):
                await self._cond.wait()
            self._busy.update(tasks)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._busy.subtract(tasks)
                    self._cond.notify_all()

    @asynccontextmanager
    async def frozen(self, tasks: set[int]) -> AsyncIterator[None]:
        """Have ``tasks`` with no send in flight and none admitted until the block ends."""
        async with self._cond:
            self._frozen |= tasks
            while any(self._busy[t] > 0 for t in tasks):
                await self._cond.wait()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self._frozen -= tasks
                    self._cond.notify_all()
