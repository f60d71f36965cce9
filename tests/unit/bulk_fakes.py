"""A fake :class:`BulkPort`: an in-memory portal with switches for lost answers.

No HTTP, no scheduler: the bulk engine is driven through the same port the
real client implements. Every method yields to the loop once, so concurrent
units interleave as they would on the wire.
"""

from __future__ import annotations

import builtins
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from bitrix_results._bulk.types import ADD, LIST
from bitrix_results._scheduler import BucketStatistics, SchedulerStatistics
from bitrix_results._transport import Call
from bitrix_results._transport.types import Reply
from bitrix_results.errors import (
    BitrixError,
    ConnectionLostError,
    OutcomeUnknownError,
    portal_error,
)
from bitrix_results.models import RESULT_FIELDS, LegacyTaskResult, TaskResult


class Lost(Exception):
    """The answer of a request that executed never came back."""


class FakePort:
    """Results per task, ids growing from 1; keyed adds replay like the portal's."""

    def __init__(
        self,
        *,
        page_size: int = 50,
        cap: int | None = None,
        user: int | None = 1,
        binding: tuple[str, str] = ("portal.test", "credential-1"),
    ) -> None:
        self.page_size = page_size
        # The client's user: the author of what it creates (None: the portal omits it).
        self.user = user
        self.binding = binding
        # The portal's clock runs this far from ours (``createdAt`` of new results).
        self.skew = timedelta(0)
        # The portal's silent cap on a page (api-facts §4.3), if any.
        self.cap = cap
        self.tasks: defaultdict[int, list[TaskResult]] = defaultdict(list)
        self.next_id = 1
        self.replays: dict[str, TaskResult] = {}
        # Tasks the portal refuses: adds and lists on them fail with "not found".
        self.forbidden: set[int] = set()
        # Texts the portal's validation refuses in an add (the task itself is fine).
        self.bad_texts: set[str] = set()
        # A refused command rolls the whole batch back (the SDK's reading of
        # api-facts §3.2); False keeps the commands before it (the other reading).
        self.rollback = False
        # Raised by every request before anything runs (wrong credentials, a
        # portal that cannot be reached), while set.
        self.refuse_all: BitrixError | None = None
        # How many of the next add batches execute and then lose their answer.
        self.lose_batches = 0
        # Every n-th add batch (1-based) executes and loses its answer.
        self.lose_every_batch = 0
        # How many of the next keyed adds execute and then lose their answer.
        self.lose_adds = 0
        # Add batches execute and then never answer (a run killed while waiting).
        self.hang_batches = False
        self.requests: Counter[str] = Counter()
        self._batches = 0
        # The client's bucket as its statistics show it (None: nothing sent yet).
        self.bucket: BucketStatistics | None = None
        # Real seconds a list batch takes to answer, and how many were in flight.
        self.list_delay = 0.0
        self.lists_in_flight = 0
        self.most_lists_in_flight = 0

    # -- the portal side -----------------------------------------------------------

    def create(self, task_id: int, text: str, *, author: int | None = None) -> TaskResult:
        """A new result by ``author`` (default: the client's user)."""
        result = TaskResult(
            id=self.next_id,
            task_id=task_id,
            text=text,
            author_id=self.user if author is None else author,
            created_at=datetime.now(UTC) + self.skew,
        )
        self.next_id += 1
        self.tasks[task_id].append(result)
        return result

    def all_results(self) -> list[TaskResult]:
        return [r for results in self.tasks.values() for r in results]

    def _refuse(self, task_id: int, method: str, text: str | None = None) -> None:
        if task_id in self.forbidden:
            raise portal_error(code="0", message="Task not found.", status=400, method=method)
        if text is not None and text in self.bad_texts:
            raise portal_error(
                code="BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION",
                message="Text is refused.",
                status=400,
                method=method,
            )

    async def _arrive(self, kind: str) -> None:
        """Every request: a turn of the loop, counted, refused if the portal says so."""
        await anyio.lowlevel.checkpoint()
        self.requests[kind] += 1
        if self.refuse_all is not None:
            raise self.refuse_all

    # -- the port ------------------------------------------------------------------

    async def add(
        self, task_id: int, text: str, *, idempotency_key: str | None = None
    ) -> TaskResult:
        await self._arrive("add")
        if idempotency_key is not None and idempotency_key in self.replays:
            result = self.replays[idempotency_key]
        else:
            self._refuse(task_id, ADD, text)
            result = self.create(task_id, text)
            if idempotency_key is not None:
                self.replays[idempotency_key] = result
        if self.lose_adds:
            self.lose_adds -= 1
            raise OutcomeUnknownError(ADD, Lost("answer lost"))
        return result

    async def delete(self, result_id: int) -> None:
        await anyio.lowlevel.checkpoint()
        self.requests["delete"] += 1
        for results in self.tasks.values():
            for result in results:
                if result.id == result_id:
                    results.remove(result)
                    return
        raise portal_error(code="0", message="Result not found.", status=404, method="delete")

    async def execute(self, call: Call) -> Reply:
        assert (call.method, call.api) == ("batch", "v3"), call
        commands: list[Mapping[str, Any]] = list(call.params)  # type: ignore[arg-type]
        methods = {c["method"] for c in commands}
        if methods == {ADD}:
            await self._arrive("add batch")
            return await self._add_batch(commands)
        assert methods == {LIST}, methods
        await self._arrive("list batch")
        self.lists_in_flight += 1
        self.most_lists_in_flight = max(self.most_lists_in_flight, self.lists_in_flight)
        try:
            if self.list_delay:
                await anyio.sleep(self.list_delay)
            return self._list_batch(commands)
        finally:
            self.lists_in_flight -= 1

    async def _add_batch(self, commands: list[Mapping[str, Any]]) -> Reply:
        self._batches += 1
        bodies = []
        created: list[TaskResult] = []
        for command in commands:
            fields = command["query"]["fields"]
            try:
                self._refuse(fields["taskId"], ADD, fields["text"])
            except BitrixError:
                if self.rollback:
                    for result in created:
                        self.tasks[result.task_id].remove(result)
                # Else the commands before it stay (the keep-prefix reading).
                raise
            created.append(self.create(fields["taskId"], fields["text"]))
            bodies.append({"item": created[-1]})
        if self.hang_batches:
            await anyio.sleep_forever()
        lose_this = self.lose_every_batch and self._batches % self.lose_every_batch == 0
        if self.lose_batches or lose_this:
            if self.lose_batches:
                self.lose_batches -= 1
            raise ConnectionLostError("answer lost", method="batch")
        return Reply(200, msgspec.Raw(msgspec.json.encode(bodies)), None)

    def _list_batch(self, commands: list[Mapping[str, Any]]) -> Reply:
        pages = []
        for command in commands:
            query = command["query"]
            # Every v3 list names its fields, or a portal may answer ids only.
            assert tuple(query["select"]) == RESULT_FIELDS, query
            task_id = next(c[2] for c in query["filter"] if c[0] == "taskId")
            after = next((c[2] for c in query["filter"] if c[0] == "id"), 0)
            # One refused command fails the whole REST 3.0 batch (api-facts §3.2).
            self._refuse(task_id, LIST)
            pages.append({"items": self._page(task_id, after, query["pagination"]["limit"])})
        return Reply(200, msgspec.Raw(msgspec.json.encode(pages)), None)

    def _page(self, task_id: int, after: int, limit: int) -> list[TaskResult]:
        size = min(limit, self.cap) if self.cap is not None else limit
        return [r for r in self.tasks[task_id] if r.id > after][:size]

    async def iter_results(self, task_id: int, *, after_id: int = 0) -> AsyncIterator[TaskResult]:
        await self._arrive("list")
        self._refuse(task_id, LIST)
        for result in self.tasks[task_id]:
            if result.id > after_id:
                yield result

    async def list_legacy(self, task_id: int) -> builtins.list[LegacyTaskResult]:
        await self._arrive("legacy list")
        self._refuse(task_id, LIST)
        return [
            LegacyTaskResult(id=r.id, task_id=r.task_id, text=r.text) for r in self.tasks[task_id]
        ]

    def statistics(self) -> SchedulerStatistics:
        buckets = {} if self.bucket is None else {self.bucket.portal: self.bucket}
        return SchedulerStatistics(requests_sent=sum(self.requests.values()), buckets=buckets)
