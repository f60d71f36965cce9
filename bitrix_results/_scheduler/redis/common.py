"""Small pieces every part of the Redis backend shares: constants, logging, parsing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..clock import Clock

logger = logging.getLogger("bitrix_results")

#: The longest lease of a call in flight; the default is a tenth of the window.
MAX_LEASE = 10.0
#: Backoff between attempts to reach Redis: doubling from the first, capped.
FIRST_DELAY = 0.05
MAX_DELAY = 1.0


async def quietly(awaitable: Awaitable[Any]) -> None:
    # Closing: a failure has nothing left to report.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await awaitable


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def tag(name: str) -> str:
    start = name.index("{")
    return name[start : name.index("}", start) + 1]


def arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def opt(text: str) -> float | None:
    return float(text) if text else None


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def now_arg(server_time: bool, clock: Clock) -> str:
    """A script's ``now``: empty for the server's ``TIME``, else the scheduler's clock."""
    return "" if server_time else repr(clock.time())
