"""The blocking facade: the same methods as :class:`bitrix_results.ResultsClient`, blocking.

Every blocking client in a process runs its async client on ONE shared event
loop, in a daemon thread started on first use. Sharing the loop means sharing
the in-memory scheduler state, so any number of blocking clients in one process
(one per thread, one per job) pace themselves against one leaky bucket per
portal and one budget per method, as the portal counts them (design §2.1). The
thread is a daemon: a client that is never closed does not keep the interpreter
alive, and it is closed for you, quietly: when it is garbage-collected, or at
interpreter exit (before the loop thread stops), so aiohttp never has to warn
about an unclosed session.

The methods work from any thread, including one whose own event loop is already
running (Jupyter, Django async views), where ``asyncio.run`` would refuse to
start: the caller's loop is never touched, the call blocks that thread until the
shared loop has the answer. The one place they cannot be called from is the
shared loop itself (an ``on_progress`` callback, an ``items`` generator): that
would wait on itself forever, so it raises :class:`RuntimeError` instead.

::

    from bitrix_results.sync import ResultsClient

    with ResultsClient.from_webhook("https://portal.example/rest/1/abc123/") as client:
        result = client.add(42, "Done")
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import os
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, Unpack

from . import client as _async
from ._options import ClientOptions, check_options
from ._scheduler import SchedulerStatistics
from ._transport import HttpSender, TokenCallback
from ._transport.auth import DEFAULT_TOKEN_URL
from ._transport.types import Api
from .bulk import BulkOptions, BulkReport, Outcome, ResultsOfTask
from .models import LegacyTaskResult, NewResult, TaskResult

__all__ = ["ResultsClient"]

P = ParamSpec("P")
T = TypeVar("T")

_THREAD_NAME = "bitrix_results.sync"


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=_THREAD_NAME, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def is_current(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block the calling thread until it is done."""
        if not self.alive():
            coro.close()
            raise RuntimeError(
                "the bitrix_results.sync event loop is gone (the process forked or "
                "is shutting down); create a new client"
            )
        if self.is_current():
            coro.close()
            raise RuntimeError(
                "a bitrix_results.sync method was called from the shared event loop thread "
                "that runs the blocking clients (say, from an on_progress callback or an "
                "items generator): it would wait for itself forever (deadlock). Use the "
                "async bitrix_results.ResultsClient there, or call from another thread."
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt while waiting: do not leave the call running on.
            future.cancel()
            raise


_shared: _LoopThread | None = None
# Iterators closed from the loop thread itself finish closing here (a strong reference).
_background: set[asyncio.Task[None]] = set()
_shared_lock = threading.Lock()


def _forget_after_fork() -> None:
    # The child has no loop thread (only the forking thread survives a fork), and the
    # lock may have been held by another thread at the fork: start afresh.
    global _shared, _shared_lock
    _shared = None
    _shared_lock = threading.Lock()
    # Their sessions belong to the parent's loop, which the child does not have.
    _unclosed.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


#: The async clients of blocking clients not closed yet, by the wrapper's id: closed at
#: exit by :func:`_close_unclosed` (strong references, so none is collected unclosed).
_unclosed: dict[int, tuple[_LoopThread, _async.ResultsClient]] = {}
#: How long exit waits for the unclosed clients' sessions to close.
_EXIT_CLOSE_SECONDS = 5.0


def _collected(key: int) -> None:
    """A blocking client was garbage-collected unclosed: close its session in the background."""
    entry = _unclosed.pop(key, None)
    if entry is None:
        return
    loop, client = entry
    if loop.alive():
        # Never wait here: the collection may run on the loop thread itself.
        loop.loop.call_soon_threadsafe(_close_soon, client)


def _close_soon(client: _async.ResultsClient) -> None:
    task = asyncio.get_running_loop().create_task(_await(client.aclose()))
    _background.add(task)
    task.add_done_callback(_background.discard)


@atexit.register
def _close_unclosed() -> None:
    """At exit, close every session nobody closed, on the loop thread that owns it."""
    while _unclosed:
        _, (loop, client) = _unclosed.popitem()
        if not loop.alive() or loop.is_current():
            continue
        future = asyncio.run_coroutine_threadsafe(_await(client.aclose()), loop.loop)
        with contextlib.suppress(Exception):
            future.result(timeout=_EXIT_CLOSE_SECONDS)


def _shared_loop() -> _LoopThread:
    """The process's one loop thread, started on first use (and again after a fork)."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive():
            _shared = _LoopThread()
        return _shared


class ResultsClient:
    """Blocking client. Build it with :meth:`from_webhook` or :meth:`from_oauth`;
    use it as a context manager or call :meth:`close`.

    Every blocking client of the process shares one event-loop thread, and with
    it one rate-limit bucket per portal. One client is safe to share between
    threads.
    """

    def __init__(self, factory: Callable[[], _async.ResultsClient]) -> None:
        """Build a blocking client around the async client ``factory`` makes.

        Args:
            factory: Makes the async client; it runs on the shared loop thread, so
                the client's locks, session and scheduler state belong to it.
        """
        self._loop = _shared_loop()
        # Built on the shared loop so its locks, session and scheduler state belong to it.
        self._client = self._loop.run(_build(factory))
        self._closed = False
        _unclosed[id(self)] = (self._loop, self._client)
        self._finalizer = weakref.finalize(self, _collected, id(self))
        self._finalizer.atexit = False  # exit has its own, waiting, path

    @classmethod
    def from_webhook(
        cls, url: str, *, sender: HttpSender | None = None, **options: Unpack[ClientOptions]
    ) -> ResultsClient:
        """Build a blocking client for an incoming webhook.

        The arguments, options and errors are those of the async
        `bitrix_results.ResultsClient.from_webhook`.

        Args:
            url: The webhook URL, ``https://<portal>/rest/<user>/<code>/``.
            sender: Replaces the HTTP layer (aiohttp by default).
            **options: The `ClientOptions`.

        Returns:
            A client; use it as a context manager so it is closed.

        Raises:
            InvalidInputError: The URL or an option's value is invalid.
            TypeError: An option's name is unknown.

        Example:
            ```python
            from bitrix_results.sync import ResultsClient

            with ResultsClient.from_webhook("https://example.bitrix24.ru/rest/1/abc123/") as client:
                client.add(42, "Done")
            ```
        """
        # Checked here too, so a misspelt option fails in the caller's thread.
        check_options(options, where="ResultsClient.from_webhook")
        return cls(lambda: _async.ResultsClient.from_webhook(url, sender=sender, **options))

    @classmethod
    def from_oauth(
        cls,
        *,
        portal: str,
        access_token: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        on_tokens: TokenCallback | None = None,
        token_url: str = DEFAULT_TOKEN_URL,
        sender: HttpSender | None = None,
        **options: Unpack[ClientOptions],
    ) -> ResultsClient:
        """Build a blocking client for an OAuth application's tokens on a portal.

        The arguments, options and errors are those of the async
        `bitrix_results.ResultsClient.from_oauth`; ``on_tokens`` is called on the
        shared event-loop thread.

        Args:
            portal: The portal's address, ``https://example.bitrix24.ru``.
            access_token: The current access token.
            refresh_token: The current refresh token.
            client_id: The application's client id.
            client_secret: The application's client secret.
            on_tokens: Called with the new `OAuthTokens` after each refresh; store
                the rotated refresh token.
            token_url: The OAuth server's token endpoint.
            sender: Replaces the HTTP layer (aiohttp by default).
            **options: The `ClientOptions`.

        Returns:
            A client; use it as a context manager so it is closed.

        Raises:
            InvalidInputError: A token, the portal or an option's value is invalid.
            TypeError: An option's name is unknown.
        """
        check_options(options, where="ResultsClient.from_oauth")
        return cls(
            lambda: _async.ResultsClient.from_oauth(
                portal=portal,
                access_token=access_token,
                refresh_token=refresh_token,
                client_id=client_id,
                client_secret=client_secret,
                on_tokens=on_tokens,
                token_url=token_url,
                sender=sender,
                **options,
            )
        )

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
        """Close the HTTP session. The shared event-loop thread stays for other clients."""
        if self._closed:
            return
        self._closed = True
        _unclosed.pop(id(self), None)
        self._finalizer.detach()
        if self._loop.alive():
            self._loop.run(self._client.aclose())

    def __repr__(self) -> str:
        return f"sync.{self._client!r}"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")

    def _run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        self._check_open()

        async def invoke() -> T:
            return await fn(*args, **kwargs)

        return self._loop.run(invoke())

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Drive the async iterator ``make()`` on the shared loop, one item per ``next``."""
        self._check_open()
        return self._drive(make)

    def _drive(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        agen = self._loop.run(_build(make))
        try:
            while True:
                step = self._loop.run(_step(agen))
                if not step:
                    break
                yield step[0]
        except GeneratorExit:
            # Closed early (``break``, ``close()``, garbage collection): close the source.
            self._close_iterator(agen)
            raise
        except BaseException:
            # Already failing (or interrupted): a second error from closing would hide it.
            with contextlib.suppress(Exception):
                self._close_iterator(agen)
            raise
        self._close_iterator(agen)

    def _close_iterator(self, agen: AsyncIterator[T]) -> None:
        aclose: Callable[[], Awaitable[object]] | None = getattr(agen, "aclose", None)
        if aclose is None or not self._loop.alive():
            return
        if self._loop.is_current():
            # Finalised on the loop thread itself (garbage collection): close in the background.
            task = self._loop.loop.create_task(_await(aclose()))
            _background.add(task)
            task.add_done_callback(_background.discard)
            return
        self._loop.run(_await(aclose()))

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
            lambda: self._client.iter_results(
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
        self, items: Iterable[NewResult | tuple[int, str]], **options: Unpack[BulkOptions]
    ) -> BulkReport:
        return self._run(self._client.bulk_add, items, **options)

    def bulk_add_stream(
        self, items: Iterable[NewResult | tuple[int, str]], **options: Unpack[BulkOptions]
    ) -> Iterator[Outcome]:
        return self._iterate(lambda: self._client.bulk_add_stream(items, **options))

    def results_of_many(
        self, task_ids: Iterable[int], *, api: Api = "v3", concurrency: int | None = None
    ) -> Iterator[ResultsOfTask]:
        return self._iterate(
            lambda: self._client.results_of_many(task_ids, api=api, concurrency=concurrency)
        )


async def _build(factory: Callable[[], T]) -> T:
    return factory()


async def _step(agen: AsyncIterator[T]) -> tuple[T, ...]:
    """The next item as ``(item,)``, or ``()`` at the end."""
    # The end is a value, not StopAsyncIteration crossing threads through a future.
    try:
        return (await agen.__anext__(),)
    except StopAsyncIteration:
        return ()


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable
