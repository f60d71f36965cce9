"""The calls ``bench_overhead.py`` measures, and a child mode that runs one of them.

Imported by ``bench_overhead.py``, and run as a script by it to measure one run
in a fresh interpreter, optionally of another checkout of the library (an older
commit in a git worktree) and optionally under ``valgrind --tool=callgrind``:

    python benchmarks/_overhead_calls.py ROOT KIND MODE CALLS WARMUP PORTAL_JSON

``ROOT`` is the checkout whose ``bitrix_results`` is imported (put first on
``sys.path`` before anything imports it), ``KIND`` is ``library`` or ``raw``,
``MODE`` is ``gather`` (``asyncio.gather`` of every call, 16 in flight) or
``sequential`` (one call after another), ``PORTAL_JSON`` the running portal's
addresses. It prints one JSON object: the CPU seconds of the measured calls.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # Before anything imports bitrix_results: the checkout to measure comes first,
    # and this one's root is listed after it, so _common does not put it ahead.
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import asyncio
import gc
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from _common import OPEN_TASKS, UNLIMITED, limits_of

from bitrix_results import ResultsClient
from bitrix_results.testing import PortalConfig

ADD = "tasks.task.result.add"
CONCURRENCY = 16
TIMEOUT = aiohttp.ClientTimeout(total=65.0, connect=10.0)  # the library's default


def texts(run: int, n: int) -> list[tuple[int, str]]:
    return [(1 + i % OPEN_TASKS, f"overhead run {run} call {i}") for i in range(n)]


async def measure(calls: Awaitable[Any]) -> dict[str, Any]:
    """The CPU ``calls`` cost; the heap from before (imports, warm-up) is frozen first.

    Frozen objects are never traversed by the collector, so a full collection
    during the measured calls costs what the calls made, not what the process
    had imported: otherwise one more or one fewer full collection in a run
    shifts the figures by more than the library's whole per-call cost.
    """
    gc.collect()
    gc.freeze()
    gc_before = [s["collections"] for s in gc.get_stats()]
    times, cpu, wall = os.times(), time.process_time(), time.perf_counter()
    await calls
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = os.times()
    gc_after = [s["collections"] for s in gc.get_stats()]
    gc.unfreeze()
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "user_s": after.user - times.user,
        "sys_s": after.system - times.system,
        "gc_collections": [b - a for a, b in zip(gc_before, gc_after, strict=True)],
    }


AddFn = Callable[[int, str], Coroutine[Any, Any, object]]


async def _all(add: AddFn, work: list[tuple[int, str]], mode: str) -> None:
    if mode == "gather":
        await asyncio.gather(*(add(t, x) for t, x in work))
    else:
        for t, x in work:
            await add(t, x)


async def library_run(
    webhook_url: str, run: int, n: int, *, warmup: int, mode: str = "gather"
) -> dict[str, Any]:
    """``client.add`` of ``n`` results (after ``warmup``), the client's CPU measured."""
    limits = limits_of(PortalConfig(**UNLIMITED))  # type: ignore[arg-type]
    concurrency = CONCURRENCY if mode == "gather" else 1
    async with ResultsClient.from_webhook(
        webhook_url, limits=limits, concurrency=concurrency
    ) as client:
        await _all(client.add, texts(-run - 1, warmup), mode)
        return await measure(_all(client.add, texts(run, n), mode))


async def raw_run(
    base_url: str, user: int, code: str, run: int, n: int, *, warmup: int, mode: str = "gather"
) -> dict[str, Any]:
    """The same calls with aiohttp and ``json`` alone: the same URL, body and headers."""
    url = f"{base_url}/rest/api/{user}/{code}/{ADD}"
    concurrency = CONCURRENCY if mode == "gather" else 1
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def add(task_id: int, text: str) -> dict[str, Any]:
            async with gate:
                body = json.dumps({"fields": {"taskId": task_id, "text": text}})
                headers = {
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "Idempotency-Key": "br-" + uuid.uuid4().hex,
                }
                async with session.post(url, data=body, headers=headers) as resp:
                    data = json.loads(await resp.read())
                if resp.status != 200 or "result" not in data:
                    raise RuntimeError(f"HTTP {resp.status}: {data!r:.200}")
                item: dict[str, Any] = data["result"]["item"]
                return item

        await _all(add, texts(-run - 1, warmup), mode)
        return await measure(_all(add, texts(run, n), mode))


def _child(argv: list[str]) -> None:
    _, kind, mode, calls, warmup, portal_json = argv
    portal = json.loads(portal_json)
    n, w = int(calls), int(warmup)
    if kind == "library":
        sample = asyncio.run(library_run(portal["webhook_url"], 0, n, warmup=w, mode=mode))
    else:
        sample = asyncio.run(
            raw_run(
                portal["base_url"],
                portal["webhook_user"],
                portal["webhook_code"],
                0,
                n,
                warmup=w,
                mode=mode,
            )
        )
    print(json.dumps(sample))


if __name__ == "__main__":
    _child(sys.argv[1:])
