"""Client CPU per call: ``ResultsClient.add`` vs. a raw aiohttp + json client (issue 4).

Both clients make the same calls (same URL, body, headers including an
Idempotency-Key, same aiohttp timeout) against an *unlimited* fake portal running in
a **subprocess**, in two modes: ``gather`` (``asyncio.gather`` of every call, 16 in
flight) and ``sequential`` (one call after another, a quarter as many). Every run is
a fresh interpreter (``_overhead_calls.py``) on a fresh portal, after a warm-up, and
its ``time.process_time()`` is that client's CPU alone. Runs alternate (library,
raw, library, raw, ...); the table shows the medians. Target: library <= 1.25x raw.

``--baseline DIR`` adds a third client to the alternation: the library of another
checkout (an older commit in a git worktree), so "did this change cost CPU?" is
answered in one run, under the same load. ``--instructions`` also counts the
instructions per call under valgrind's callgrind, a figure a shared machine's load
does not move (CPU time on a busy 2-core machine varies by 20 % run to run).

A second pair of rows takes the network out: ``client.add`` over a null transport
that answers at once with a canned reply, against the floor (gather + semaphore +
one loop turn + ``json.loads``), which isolates the library's own per-call cost.

Over target (or with ``--profile``), a live library run and a null-transport run are
profiled with pyinstrument (sampling CPU time) and the top self-time functions printed.

    python benchmarks/bench_overhead.py [--quick] [--profile] [--baseline DIR]
                                        [--instructions] [--json-out FILE]
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    UNLIMITED,
    PortalProcess,
    emit,
    limits_of,
    machine,
    parser,
    table,
)
from _overhead_calls import ADD, CONCURRENCY, library_run, measure, texts

from bitrix_results import ResultsClient
from bitrix_results._transport import Call
from bitrix_results._transport.codec import decode_reply
from bitrix_results._transport.types import Reply
from bitrix_results.testing import PortalConfig

TARGET = 1.25
WARMUP = 500
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _child(
    trees: dict[str, Path],
    kind: str,
    mode: str,
    n: int,
    warmup: int,
    proc: PortalProcess,
    valgrind: Path | None,
) -> dict[str, Any]:
    """One run in a fresh interpreter (``_overhead_calls.py``).

    ``kind`` is ``raw`` or a name of ``trees`` (the checkout whose library runs).
    Under callgrind when ``valgrind`` (an output directory) is given: the sample
    then also holds the instructions the whole process executed.
    """
    root = trees.get(kind, ROOT)
    kind = "raw" if kind == "raw" else "library"
    portal = {
        "webhook_url": proc.webhook_url,
        "base_url": proc.base_url,
        "webhook_user": proc.webhook_user,
        "webhook_code": proc.webhook_code,
    }
    command = [
        sys.executable,
        str(HERE / "_overhead_calls.py"),
        str(root),
        kind,
        mode,
        str(n),
        str(warmup),
        json.dumps(portal),
    ]
    if valgrind is not None:
        out = valgrind / f"callgrind.{kind}.{mode}.{n}.{uuid.uuid4().hex[:8]}"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {mode} run of {root} failed:\n{done.stderr[-2000:]}")
    sample: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if valgrind is not None:
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
        sample["instructions"] = int(found.group(1))
    return sample


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
    await asyncio.gather(*(client.add(t, x) for t, x in texts(0, WARMUP)))
    return await measure(asyncio.gather(*(client.add(t, x) for t, x in texts(1, n))))


async def minimal_null_run(body: bytes, n: int) -> dict[str, Any]:
    """The floor: gather + semaphore + one loop turn + ``json.loads`` per call."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def add(task_id: int, text: str) -> dict[str, Any]:
        async with gate:
            json.dumps({"fields": {"taskId": task_id, "text": text}})
            await asyncio.sleep(0)
            item: dict[str, Any] = json.loads(body)["result"]["item"]
            return item

    await asyncio.gather(*(add(t, x) for t, x in texts(0, WARMUP)))
    return await measure(asyncio.gather(*(add(t, x) for t, x in texts(1, n))))


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


MODES = ("gather", "sequential")
#: Calls per run under callgrind (instructions = the difference / the calls between).
COUNTED = (100, 300)
COUNTED_WARMUP = 20


def _live(
    trees: dict[str, Path], n: int, reps: int
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], list[dict[str, Any]], bytes]:
    """Alternating runs of every kind and mode, each in a fresh interpreter and portal."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {
        (kind, mode): [] for kind in [*trees, "raw"] for mode in MODES
    }
    portal_stats: list[dict[str, Any]] = []
    body = b""
    for _ in range(reps):
        for mode in MODES:
            calls = n if mode == "gather" else n // 4
            for kind in [*trees, "raw"]:
                # A fresh portal per run: the fake portal slows down as its ledger
                # grows, and a slower portal means more event-loop wake-ups (more
                # CPU) per call on our side.
                with PortalProcess(UNLIMITED) as proc:
                    sample = _child(trees, kind, mode, calls, WARMUP, proc, None)
                    samples[(kind, mode)].append({**sample, "calls": calls})
                    if not body:
                        body = canned_reply(proc)
                    portal_stats.append(proc.stats())
    return samples, portal_stats, body


def _instructions(trees: dict[str, Path]) -> dict[str, Any]:
    """Instructions per call under callgrind: the same on a loaded machine as on an idle one.

    The runs go two at a time: a count does not depend on what else runs.
    """
    jobs = [(mode, kind, calls) for mode in MODES for kind in [*trees, "raw"] for calls in COUNTED]

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:

        def count(job: tuple[str, str, int]) -> int:
            mode, kind, calls = job
            with PortalProcess(UNLIMITED) as proc:
                sample = _child(trees, kind, mode, calls, COUNTED_WARMUP, proc, Path(tmp))
            return int(sample["instructions"])

        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(jobs, pool.map(count, jobs), strict=True))
    span = COUNTED[1] - COUNTED[0]
    result: dict[str, Any] = {}
    for mode in MODES:
        values = {
            kind: (counts[(mode, kind, COUNTED[1])] - counts[(mode, kind, COUNTED[0])]) / span
            for kind in [*trees, "raw"]
        }
        result[mode] = {
            "instructions_per_call": values,
            **{f"ratio_{k}_to_raw": values[k] / values["raw"] for k in trees},
        }
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="always profile (pyinstrument)")
    p.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the library (an older commit in a git worktree), "
        "run alternately with this one",
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per call under valgrind's callgrind (slow)",
    )
    args = p.parse_args()
    context = machine()
    n = 2_000 if args.quick else 5_000
    reps = 3 if args.quick else 7
    config = PortalConfig(**UNLIMITED)  # type: ignore[arg-type]
    trees = {"library": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    samples, portal_stats, body = _live(trees, n, reps)

    def per_call(kind: str, mode: str) -> list[float]:
        return [s["cpu_s"] / s["calls"] * 1e6 for s in samples[(kind, mode)]]

    def ratio(kind: str, mode: str, to: str = "raw") -> float:
        return statistics.median(per_call(kind, mode)) / statistics.median(per_call(to, mode))

    def pairs(kind: str, mode: str, to: str = "raw") -> list[float]:
        return [a / b for a, b in zip(per_call(kind, mode), per_call(to, mode), strict=True)]

    gather_ratio = ratio("library", "gather")

    # No network: the library's own scheduling cost per call, against the floor.
    null = {
        "library": [asyncio.run(library_null_run(body, config, n)) for _ in range(3)],
        "minimal": [asyncio.run(minimal_null_run(body, n)) for _ in range(3)],
    }
    null_us = {k: statistics.median(s["cpu_s"] for s in v) / n * 1e6 for k, v in null.items()}

    counted: dict[str, Any] | None = None
    if args.instructions:
        if shutil.which("valgrind") is None:
            counted = {"error": "valgrind is not installed (apt-get install valgrind)"}
        else:
            counted = _instructions(trees)

    profiles: dict[str, Any] = {}
    if args.profile or gather_ratio > TARGET:
        with PortalProcess(UNLIMITED) as proc:
            url = proc.webhook_url
            profiles["live"] = profile(
                lambda: asyncio.run(library_run(url, 10_000, n, warmup=WARMUP)), n
            )
        profiles["null_transport"] = profile(
            lambda: asyncio.run(library_null_run(body, config, n)), n
        )
    load_after = os.getloadavg()

    def summary(kind: str, mode: str) -> dict[str, Any]:
        runs = samples[(kind, mode)]
        cpu = per_call(kind, mode)
        wall = [s["wall_s"] for s in runs]
        return {
            "calls_per_run": runs[0]["calls"],
            "cpu_us_per_call_median": statistics.median(cpu),
            "cpu_us_per_call_runs": cpu,
            "user_us_per_call_runs": [s["user_s"] / s["calls"] * 1e6 for s in runs],
            "sys_us_per_call_runs": [s["sys_s"] / s["calls"] * 1e6 for s in runs],
            "gc_collections_per_run_gen0_1_2": [s["gc_collections"] for s in runs],
            "wall_s_runs": wall,
            "calls_per_s_median": runs[0]["calls"] / statistics.median(wall),
        }

    rows: list[tuple[object, ...]] = []
    for mode in MODES:
        for kind in [*trees, "raw"]:
            r = summary(kind, mode)
            rows.append(
                (
                    f"{kind} ({mode})",
                    r["calls_per_run"],
                    reps,
                    r["cpu_us_per_call_median"],
                    " / ".join(f"{v:.0f}" for v in r["cpu_us_per_call_runs"]),
                    r["calls_per_s_median"],
                )
            )
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
    ratios = {
        mode: {
            **{f"{kind}_to_raw": ratio(kind, mode) for kind in trees},
            **{f"{kind}_to_raw_pairs": pairs(kind, mode) for kind in trees},
            **(
                {
                    "library_to_baseline": ratio("library", mode, "baseline"),
                    "library_to_baseline_pairs": pairs("library", mode, "baseline"),
                }
                if "baseline" in trees
                else {}
            ),
        }
        for mode in MODES
    }
    shown = "; ".join(
        f"{mode}: library/raw {ratios[mode]['library_to_raw']:.3f}"
        + (f", baseline/raw {ratios[mode]['baseline_to_raw']:.3f}" if "baseline" in trees else "")
        for mode in MODES
    )
    title = (
        f"Client CPU per add (gather: {CONCURRENCY} in flight; sequential: one at a time); "
        f"each run a fresh interpreter and portal subprocess ({shown}; target <= {TARGET})"
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
        "baseline": str(trees["baseline"]) if "baseline" in trees else None,
        "library": summary("library", "gather"),
        "raw_aiohttp_json": summary("raw", "gather"),
        "ratio_library_to_raw": gather_ratio,
        "pair_ratios": pairs("library", "gather"),
        "runs": {f"{kind} ({mode})": summary(kind, mode) for kind, mode in samples},
        "ratios": ratios,
        "target_ratio": TARGET,
        "meets_target": gather_ratio <= TARGET,
        "null_transport_cpu_us_per_call": null_us,
        "null_transport_library_extra_us_per_call": null_us["library"] - null_us["minimal"],
        "portal_requests": sum(p["requests"] for p in portal_stats),
        "portal_503": sum(p["rate_limited"] for p in portal_stats),
        "portal_429": sum(p["operating_limited"] for p in portal_stats),
        "portal_duplicates": sum(p["duplicates"] for p in portal_stats),
        "loadavg_after": load_after,
    }
    tables = [table(title, headers, rows)]
    if counted is not None:
        doc["instructions"] = counted
        if "error" in counted:
            tables.append(f"instructions: {counted['error']}")
        else:
            kinds = [*trees, "raw"]
            tables.append(
                table(
                    "Instructions per add under callgrind (calls "
                    f"{COUNTED[0]}..{COUNTED[1]}, the difference; independent of load)",
                    ("mode", *kinds, *(f"{k}/raw" for k in trees)),
                    [
                        (
                            mode,
                            *(counted[mode]["instructions_per_call"][k] for k in kinds),
                            *(counted[mode][f"ratio_{k}_to_raw"] for k in trees),
                        )
                        for mode in MODES
                    ],
                )
            )
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
