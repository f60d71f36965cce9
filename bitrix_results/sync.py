"""The blocking facade: the same methods as :class:`bitrix_results.ResultsClient`, blocking.

The async client runs on an event loop in a private thread (an anyio blocking
portal), so these methods work from any thread, including one whose own event
loop is already running (Jupyter, Django async views), where ``asyncio.run``
would refuse to start.

::

    from bitrix_results.sync import ResultsClient

    with ResultsClient.from_webhook("https://portal.example/rest/1/abc123/") as client:
        result = client.add(42, "Done")
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import client as _async
from ._scheduler import SchedulerStatistics
from ._transport.types import Api
from .bulk import BulkReport, Outcome, ProgressCallback, TaskResults
from .models import LegacyTaskResult, NewResult, TaskResult

__all__ = ["ResultsClient"]

P = ParamSpec("P")
T = TypeVar("T")


class ResultsClient:
    """Blocking client. Build it with :meth:`from_webhook` or :meth:`from_oauth`;
    use it as a context manager or call :meth:`close`."""

    def __init__(self, factory: Callable[[], _async.ResultsClient]) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            # Built on the portal's loop so its locks and session belong to it.
            self._client = self._portal.call(_build, factory)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._closed = False

    @classmethod
    def from_webhook(cls, url: str, **options: Any) -> ResultsClient:
        """See :meth:`bitrix_results.ResultsClient.from_webhook`; same options."""
        return cls(lambda: _async.ResultsClient.from_webhook(url, **options))

    @classmethod
    def from_oauth(cls, **options: Any) -> ResultsClient:
        """See :meth:`bitrix_results.ResultsClient.from_oauth`; same options."""
        return cls(lambda: _async.ResultsClient.from_oauth(**options))

    def __enter__(self) -> ResultsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and stop the client's event-loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __repr__(self) -> str:
        return f"sync.{self._client!r}"

    def _run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the client is closed")

        async def invoke() -> T:
            return await fn(*args, **kwargs)

        return self._portal.call(invoke)

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self._closed:
                self._portal.call(aclose)

    def statistics(self) -> SchedulerStatistics:
        return self._client.statistics()

    def add(self, task_id: int, text: str, *, idempotency_key: str | None = None) -> TaskResult:
        return self._run(self._client.add, task_id, text, idempotency_key=idempotency_key)

    def add_from_chat_message(self, message_id: int) -> TaskResult:
        return self._run(self._client.add_from_chat_message, message_id)

    def update(self, result_id: int, text: str) -> TaskResult:
        return self._run(self._client.update, result_id, text)

    def delete(self, result_id: int) -> None:
        self._run(self._client.delete, result_id)

    def list(
        self,
        task_id: int,
        *,
        status: Literal["open", "closed"] | None = None,
        author_id: int | None = None,
        order: Mapping[str, Literal["ASC", "DESC"]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> builtins.list[TaskResult]:
        return self._run(
            self._client.list,
            task_id,
            status=status,
            author_id=author_id,
            order=order,
            limit=limit,
            offset=offset,
        )

    def iter_results(
        self,
        task_id: int,
        *,
        status: Literal["open", "closed"] | None = None,
        author_id: int | None = None,
        after_id: int = 0,
        page_size: int | None = None,
    ) -> Iterator[TaskResult]:
        return self._iterate(
            self._client.iter_results(
                task_id, status=status, author_id=author_id, after_id=after_id, page_size=page_size
            )
        )

    def list_legacy(self, task_id: int) -> builtins.list[LegacyTaskResult]:
        return self._run(self._client.list_legacy, task_id)

    def add_from_comment(self, comment_id: int) -> LegacyTaskResult:
        return self._run(self._client.add_from_comment, comment_id)

    def delete_from_comment(self, comment_id: int) -> None:
        self._run(self._client.delete_from_comment, comment_id)

    def send_chat_message(self, task_id: int, text: str) -> None:
        self._run(self._client.send_chat_message, task_id, text)

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        api: Api = "v3",
        idempotent: bool | None = None,
    ) -> Any:
        return self._run(self._client.call, method, params, api=api, idempotent=idempotent)

    def bulk_add(
        self,
        items: Iterable[NewResult | tuple[int, str]],
        *,
        batch: bool = True,
        concurrency: int | None = None,
        journal: str | None = None,
        on_progress: ProgressCallback | None = None,
        job_id: str | None = None,
    ) -> BulkReport:
        return self._run(
            self._client.bulk_add,
            items,
            batch=batch,
            concurrency=concurrency,
            journal=journal,
            on_progress=on_progress,
            job_id=job_id,
        )

    def bulk_add_stream(
        self,
        items: Iterable[NewResult | tuple[int, str]],
        *,
        batch: bool = True,
        concurrency: int | None = None,
        journal: str | None = None,
        on_progress: ProgressCallback | None = None,
        job_id: str | None = None,
    ) -> Iterator[Outcome]:
        return self._iterate(
            self._client.bulk_add_stream(
                items,
                batch=batch,
                concurrency=concurrency,
                journal=journal,
                on_progress=on_progress,
                job_id=job_id,
            )
        )

    def results_of_many(
        self, task_ids: Iterable[int], *, api: Api = "v3", concurrency: int | None = None
    ) -> Iterator[TaskResults]:
        return self._iterate(
            self._client.results_of_many(task_ids, api=api, concurrency=concurrency)
        )


async def _build(factory: Callable[[], _async.ResultsClient]) -> _async.ResultsClient:
    return factory()
