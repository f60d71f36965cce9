"""Client CPU per call: ``ResultsClient.add`` vs. a raw aiohttp + json client (issue 4).

Both clients make the same calls (same URL, body, headers including an
Idempotency-Key, same concurrency 16, same aiohttp timeout, ``asyncio.gather`` of all
calls) against an *unlimited* fake portal running in a **subprocess**, so
``time.process_time()`` of this process is the client's CPU alone. Runs alternate
(library, raw, library, raw, ...), each on a fresh client and a fresh portal after a
warm-up; the table shows the medians. Target: library <= 1.25x raw.

A second pair of rows takes the network out: ``client.add`` over a null transport
that answers at once with a canned reply, against the floor (gather + semaphore +
one loop turn + ``json.loads``), which isolates the library's own per-call cost.

Over target (or with ``--profile``), a live library run and a null-transport run are
profiled with pyinstrument (sampling CPU time) and the top self-time functions printed.

    python benchmarks/bench_overhead.py [--quick] [--profile] [--json-out FILE]
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from _common import (
    OPEN_TASKS,
    UNLIMITED,
    PortalProcess,
    emit,
    limits_of,
    machine,
    parser,
    table,
)

from bitrix_results import ResultsClient
from bitrix_results._transport import Call
from bitrix_results._transport.codec import decode_reply
from bitrix_results._transport.types import Reply
from bitrix_results.testing import PortalConfig

ADD = "tasks.task.result.add"
TARGET = 1.25
CONCURRENCY = 16
WARMUP = 500
TIMEOUT = aiohttp.ClientTimeout(total=65.0, connect=10.0)  # the library's default


def _texts(run: int, n: int) -> list[tuple[int, str]]:
    return [(1 + i % OPEN_TASKS, f"overhead run {run} call {i}") for i in range(n)]


async def _measure(calls: Any) -> dict[str, Any]:
    gc_before = [s["collections"] for s in gc.get_stats()]
    times, cpu, wall = os.times(), time.process_time(), time.perf_counter()
    await calls
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = os.times()
    gc_after = [s["collections"] for s in gc.get_stats()]
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "user_s": after.user - times.user,
        "sys_s": after.system - times.system,
        "gc_collections": [b - a for a, b in zip(gc_before, gc_after, strict=True)],
    }


async def library_run(url: str, config: PortalConfig, run: int, n: int) -> dict[str, Any]:
    limits = limits_of(config)
    async with ResultsClient.from_webhook(url, limits=limits, concurrency=CONCURRENCY) as client:
        warm = _texts(-run - 1, WARMUP)
        await asyncio.gather(*(client.add(t, x) for t, x in warm))
        work = _texts(run, n)
        return await _measure(asyncio.gather(*(client.add(t, x) for t, x in work)))


async def raw_run(proc: PortalProcess, run: int, n: int) -> dict[str, Any]:
    url = f"{proc.base_url}/rest/api/{proc.webhook_user}/{proc.webhook_code}/tasks.task.result.add"
    gate = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
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

        warm = _texts(-run - 1, WARMUP)
        await asyncio.gather(*(add(t, x) for t, x in warm))
        work = _texts(run, n)
        return await _measure(asyncio.gather(*(add(t, x) for t, x in work)))


class NullTransport:
    """A transport that answers every call at once with a canned reply (no network)."""

    portal = "null.invalid:1"
    credential = "null-credential"

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def send(self, call: Call) -> Reply:
        await asyncio.sleep(0)  # one event-loop turn, as a reply from a socket would take
        return decode_reply(self.body, status=200, method=call.method, replayed=False)

    async def refresh_auth(self, error: Exception) -> None:
        raise error

    async def aclose(self) -> None:
        return None


async def library_null_run(body: bytes, config: PortalConfig, n: int) -> dict[str, Any]:
    """The library's own CPU per call: ``client.add`` over :class:`NullTransport`."""
    client = ResultsClient(NullTransport(body), limits=limits_of(config), concurrency=CONCURRENCY)
    await asyncio.gather(*(client.add(t, x) for t, x in _texts(0, WARMUP)))
    return await _measure(asyncio.gather(*(client.add(t, x) for t, x in _texts(1, n))))


async def minimal_null_run(body: bytes, n: int) -> dict[str, Any]:
    """The floor: gather + semaphore + one loop turn + ``json.loads`` per call."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def add(task_id: int, text: str) -> dict[str, Any]:
        async with gate:
            json.dumps({"fields": {"taskId": task_id, "text": text}})
            await asyncio.sleep(0)
            item: dict[str, Any] = json.loads(body)["result"]["item"]
            return item

    await asyncio.gather(*(add(t, x) for t, x in _texts(0, WARMUP)))
    return await _measure(asyncio.gather(*(add(t, x) for t, x in _texts(1, n))))


def canned_reply(proc: PortalProcess) -> bytes:
    """One real ``tasks.task.result.add`` reply body from the portal."""
    request = urllib.request.Request(
        f"{proc.base_url}/rest/api/{proc.webhook_user}/{proc.webhook_code}/{ADD}",
        data=json.dumps({"fields": {"taskId": 1, "text": "canned"}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        body: bytes = resp.read()
    return body


def profile(run: Callable[[], Any], n: int, top: int = 25) -> dict[str, Any]:
    """``run()`` under pyinstrument, sampling CPU time; the most self time per function."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"error": "pyinstrument is not installed (.venv/bin/pip install pyinstrument)"}
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    sampler = None
    clock = "wall"
    try:
        # Sample on this process's CPU time, not wall time: the machine may be shared,
        # and wall-clock samples charge time spent descheduled to whatever ran last.
        from pyinstrument.stack_sampler import get_stack_sampler

        sampler = get_stack_sampler()
        sampler.timer_func = time.process_time
        clock = "process_time"
    except (ImportError, AttributeError):
        pass
    profiler.start()
    try:
        run()
    finally:
        profiler.stop()
        if sampler is not None:
            sampler.timer_func = None
    session = profiler.last_session
    assert session is not None
    self_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    idle = 0.0
    total = 0.0
    # Self time sits in synthetic "[self]" leaves under the function that spent it;
    # a built-in's time counts for the package of the nearest Python caller.
    stack: list[tuple[Any, Any, str]] = [(session.root_frame(), None, "other")]
    while stack:
        frame, parent, package = stack.pop()
        if frame is None:
            continue
        if not frame.is_synthetic and frame.file_path_short != "<built-in>":
            package = _package(frame.file_path_short)
        stack.extend((child, frame, package) for child in frame.children)
        if not frame.is_synthetic_leaf or parent is None:
            continue
        if parent.function.rsplit(".", 1)[-1] in ("select", "poll"):
            idle += frame.time  # the event loop waiting for the portal
            continue
        self_time[f"{parent.function} ({parent.file_path_short}:{parent.line_no})"] += frame.time
        by_package[package] += frame.time
        total += frame.time
    return {
        "calls": n,
        "clock": clock,
        "busy_s": round(total, 3),
        "idle_in_poll_s": round(idle, 3),
        "by_package_share": {k: round(v / total, 3) for k, v in by_package.most_common()},
        "top_self_time": [
            {"function": name, "self_s": round(v, 4), "share_of_busy": round(v / total, 4)}
            for name, v in self_time.most_common(top)
        ],
    }


def _package(path: str) -> str:
    for name in ("bitrix_results", "aiohttp", "anyio", "aiolimiter", "msgspec", "asyncio"):
        if name in path:
            return name
    return "other"


def _profile_table(title: str, prof: dict[str, Any]) -> str:
    if "top_self_time" not in prof:
        return f"{title}: {prof.get('error')}"
    head = (
        f"{title} ({prof['clock']}; busy {prof['busy_s']} s, idle in poll "
        f"{prof['idle_in_poll_s']} s; busy share by package {prof['by_package_share']})"
    )
    rows = [(h["function"], h["self_s"], h["share_of_busy"]) for h in prof["top_self_time"]]
    return table(head, ("function", "self s", "share"), rows)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="always profile (pyinstrument)")
    args = p.parse_args()
    context = machine()
    n = 2_000 if args.quick else 5_000
    reps = 3 if args.quick else 7
    config = PortalConfig(**UNLIMITED)  # type: ignore[arg-type]
    samples: dict[str, list[dict[str, Any]]] = {"library": [], "raw": []}
    portal_stats: list[dict[str, Any]] = []
    # A fresh portal per run: the fake portal slows down as its ledger grows, and a
    # slower portal means more event-loop wake-ups (more CPU) per call on our side.
    body = b""
    for rep in range(reps):
        for kind in ("library", "raw"):
            with PortalProcess(UNLIMITED) as proc:
                if kind == "library":
                    sample = asyncio.run(library_run(proc.webhook_url, config, rep, n))
                else:
                    sample = asyncio.run(raw_run(proc, rep, n))
                samples[kind].append(sample)
                if not body:
                    body = canned_reply(proc)
                portal_stats.append(proc.stats())
    lib_us = statistics.median(s["cpu_s"] for s in samples["library"]) / n * 1e6
    raw_us = statistics.median(s["cpu_s"] for s in samples["raw"]) / n * 1e6
    ratio = lib_us / raw_us
    pair_ratios = [
        a["cpu_s"] / b["cpu_s"] for a, b in zip(samples["library"], samples["raw"], strict=True)
    ]

    # No network: the library's own scheduling cost per call, against the floor.
    null = {
        "library": [asyncio.run(library_null_run(body, config, n)) for _ in range(3)],
        "minimal": [asyncio.run(minimal_null_run(body, n)) for _ in range(3)],
    }
    null_us = {k: statistics.median(s["cpu_s"] for s in v) / n * 1e6 for k, v in null.items()}

    profiles: dict[str, Any] = {}
    if args.profile or ratio > TARGET:
        with PortalProcess(UNLIMITED) as proc:
            url = proc.webhook_url
            profiles["live"] = profile(lambda: asyncio.run(library_run(url, config, 10_000, n)), n)
        profiles["null_transport"] = profile(
            lambda: asyncio.run(library_null_run(body, config, n)), n
        )
    load_after = os.getloadavg()

    def summary(kind: str) -> dict[str, Any]:
        runs = samples[kind]
        cpu = [s["cpu_s"] / n * 1e6 for s in runs]
        wall = [s["wall_s"] for s in runs]
        return {
            "cpu_us_per_call_median": statistics.median(cpu),
            "cpu_us_per_call_runs": cpu,
            "user_us_per_call_runs": [s["user_s"] / n * 1e6 for s in runs],
            "sys_us_per_call_runs": [s["sys_s"] / n * 1e6 for s in runs],
            "gc_collections_per_run_gen0_1_2": [s["gc_collections"] for s in runs],
            "wall_s_runs": wall,
            "calls_per_s_median": n / statistics.median(wall),
        }

    results = {kind: summary(kind) for kind in samples}
    rows = [
        (
            f"{kind} (live)",
            n,
            reps,
            r["cpu_us_per_call_median"],
            " / ".join(f"{v:.0f}" for v in r["cpu_us_per_call_runs"]),
            r["calls_per_s_median"],
        )
        for kind, r in results.items()
    ]
    for kind, runs in null.items():
        cpu = [s["cpu_s"] / n * 1e6 for s in runs]
        rows.append(
            (
                f"{kind} (null transport)",
                n,
                len(runs),
                null_us[kind],
                " / ".join(f"{v:.0f}" for v in cpu),
                n / statistics.median(s["wall_s"] for s in runs),
            )
        )
    headers = ("client", "calls/run", "runs", "CPU us/call (median)", "per run", "calls/s")
    title = (
        f"Client CPU per add, concurrency {CONCURRENCY}; live = fresh portal subprocess per "
        f"run (library/raw ratio {ratio:.3f}, target <= {TARGET}; per-pair ratios "
        f"{min(pair_ratios):.2f}..{max(pair_ratios):.2f})"
    )
    doc: dict[str, Any] = {
        "benchmark": "overhead",
        "quick": args.quick,
        "machine": context,
        "calls_per_run": n,
        "runs_each": reps,
        "warmup_calls_per_run": WARMUP,
        "concurrency": CONCURRENCY,
        "portal_config": UNLIMITED,
        "library": results["library"],
        "raw_aiohttp_json": results["raw"],
        "ratio_library_to_raw": ratio,
        "pair_ratios": pair_ratios,
        "target_ratio": TARGET,
        "meets_target": ratio <= TARGET,
        "null_transport_cpu_us_per_call": null_us,
        "null_transport_library_extra_us_per_call": null_us["library"] - null_us["minimal"],
        "portal_requests": sum(p["requests"] for p in portal_stats),
        "portal_503": sum(p["rate_limited"] for p in portal_stats),
        "portal_429": sum(p["operating_limited"] for p in portal_stats),
        "portal_duplicates": sum(p["duplicates"] for p in portal_stats),
        "loadavg_after": load_after,
    }
    tables = [table(title, headers, rows)]
    if profiles:
        doc["profiles"] = profiles
        tables.append(
            _profile_table(f"pyinstrument, live library run of {n} calls", profiles["live"])
        )
        tables.append(
            _profile_table(
                f"pyinstrument, library over the null transport, {n} calls",
                profiles["null_transport"],
            )
        )
    emit(tables, doc, args.json_out)


if __name__ == "__main__":
    main()
