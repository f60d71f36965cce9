"""Stream helpers shared by the bulk pipeline and the bulk reads."""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
)
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["aiter_any", "drain", "send", "size_of", "unwrap"]

T = TypeVar("T")


async def aiter_any(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate a sync or an async iterable the same way."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def send(stream: MemoryObjectSendStream[T], value: T) -> None:
    """``stream.send(value)``, without a turn of the event loop while there is room.

    A bulk read streams thousands of small values: a loop turn for each would
    cost more than the reading itself. Backpressure is the same: a full stream waits.
    """
    try:
        stream.send_nowait(value)
    except anyio.WouldBlock:
        await stream.send(value)


def size_of(items: object) -> int | None:
    """``len(items)`` for sized inputs, None for streams."""
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside nested task-group exception groups, if there is one."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def drain(
    work: Callable[[MemoryObjectSendStream[T]], Coroutine[object, object, None]],
    buffer: int,
) -> AsyncGenerator[T, None]:
    """Yield what ``work`` sends, with the work in its own task.

    An async generator must not yield from inside a task group: if the consumer
    stops early, the group would be exited from another task. So the work runs
    as a task of its own, and closing the generator cancels it.
    """
    send, receive = anyio.create_memory_object_stream[T](buffer)
    task = asyncio.ensure_future(work(send))
    try:
        while True:
            # Values already buffered are taken without a turn of the event loop
            # each; an empty buffer waits (and is where cancellation lands).
            try:
                value = receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    value = await receive.receive()
                except anyio.EndOfStream:
                    break
            except anyio.EndOfStream:
                break
            yield value
        await task
    finally:
        # Stop the work before closing its stream (or its sends would fail), wait
        # for it without raising, and observe how it ended so nothing is lost
        # silently: an early close is the consumer's choice, not an error.
        # Shielded: when the consumer itself is being cancelled (a timeout around
        # its loop), an unshielded wait would be cancelled too, leaving the work
        # running and its stream unclosed.
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
        receive.close()
