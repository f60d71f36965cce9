"""One value per event loop: asyncio futures, locks and aiolimiter buckets belong to one."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """The running loop's value, made by ``factory`` on first use on that loop.

    Values are held weakly by loop, so a closed loop's value can go with it.
    Nearly every call comes from the loop used last: a weak reference to it
    answers without the ``WeakKeyDictionary`` lookup (about a microsecond).
    The loop and its value are cached as one tuple, assigned at once: loops in
    two threads (the sync facade's and an application's) may share one
    instance, and two separate fields could pair one loop with another's value.
    """

    __slots__ = ("_by_loop", "_factory", "_last")

    def __init__(self, factory: Callable[[], _T]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], _T] | None = None

    def get(self) -> _T:
        """The running loop's value (RuntimeError outside a running loop)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        value = self._by_loop.get(loop)
        if value is None:
            value = self._by_loop[loop] = self._factory()
        self._last = (weakref.ref(loop), value)
        return value

    def current(self) -> _T | None:
        """The running loop's value; outside a loop, the last one used (None: never used)."""
        try:
            return self.get()
        except RuntimeError:
            last = self._last
            return None if last is None else last[1]
