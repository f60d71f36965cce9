"""What the bulk engine may use of a client: a narrow, typed port.

:class:`~bitrix_results.ResultsClient` satisfies it structurally; the bulk
modules never import the client. Tests drive the engine through a fake port.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._scheduler.stats import SchedulerStatistics
    from .._transport import Call
    from .._transport.types import Reply
    from ..models import LegacyTaskResult, TaskResult

__all__ = ["BulkPort"]


class BulkPort(Protocol):
    """The client operations bulk needs, and nothing more."""

    @property
    def page_size(self) -> int:
        """How many results one keyset page asks for."""
        ...

    async def add(
        self, task_id: int, text: str, *, idempotency_key: str | None = None
    ) -> TaskResult:
        """One keyed ``tasks.task.result.add``; a retry with the same key is a replay."""
        ...

    async def delete(self, result_id: int) -> None:
        """Delete a result (the verification pass removes doubles of ours)."""
        ...

    @property
    def binding(self) -> tuple[str, str]:
        """The portal (host and port) and a non-secret credential fingerprint a
        journal is bound to."""
        ...

    async def execute(self, call: Call) -> Reply:
        """Run a prepared call (a batch) through the client's scheduler."""
        ...

    def iter_results(self, task_id: int, *, after_id: int = 0) -> AsyncIterator[TaskResult]:
        """A task's results with ids above ``after_id``, oldest first."""
        ...

    async def list_legacy(self, task_id: int) -> builtins.list[LegacyTaskResult]:
        """A task's results through REST v2."""
        ...

    def statistics(self) -> SchedulerStatistics:
        """A snapshot of the client's scheduler counters."""
        ...
