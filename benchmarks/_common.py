"""Shared helpers of the benchmark scripts (not a test module; never collected by pytest).

- :func:`limits_of`: client :class:`Limits` matching a (time-compressed) fake portal.
- :func:`in_thread`: a :class:`FakePortal` served from a thread of this process.
- :class:`PortalProcess`: a fake portal served from a *subprocess*, so that the CPU
  time and memory of this process are the client's alone. The subprocess is this
  file run as ``python benchmarks/_common.py serve '<PortalConfig fields as JSON>'``;
  it prints one JSON line with its addresses and exits when its stdin closes.
- :func:`rss_mb` / :func:`peak_rss_mb`: memory of this process.
- :func:`machine` and :func:`emit`: the run's context, a human table and one JSON
  document with every figure.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bitrix_results import Limits  # noqa: E402
from bitrix_results.testing import (  # noqa: E402
    FakePortal,
    PortalConfig,
    RunningPortal,
    serve_portal,
    serve_portal_in_thread,
)

#: Task ids 1..990 exist and are open in the fake portal's default world.
OPEN_TASKS = 990

#: An unlimited portal: the limits never bind, so only CPU and the wire are measured.
UNLIMITED = {"burst": 10**9, "drain_per_second": 1e9, "operating_limit": 1e9}


def limits_of(config: PortalConfig) -> Limits:
    """The client limits that match a (time-compressed) fake portal exactly."""
    return Limits(
        burst=config.effective_burst,
        drain_per_second=config.effective_drain,
        operating_limit=config.effective_limit,
        operating_window=config.effective_window,
    )


def compressed_cost(config: PortalConfig, method: str = "tasks.task.result.add") -> float:
    """The mean operating cost of one call as the portal charges it (seconds ÷ scale).

    The unit :func:`ideal_finish_time` expects with the matching scaled limits.
    """
    return config.base_cost(method) / config.scale


@contextlib.contextmanager
def in_thread(config: PortalConfig, *, seed: int = 0) -> Iterator[RunningPortal]:
    """A fake portal served from a background thread of this process."""
    with serve_portal_in_thread(FakePortal(config, seed=seed)) as running:
        yield running


# -- a portal in a subprocess ------------------------------------------------------------


class PortalProcess:
    """A fake portal served by a child process (``with PortalProcess({...}) as p:``)."""

    def __init__(self, fields: dict[str, Any], *, seed: int = 0) -> None:
        self.fields = dict(fields)
        self.seed = seed
        self._proc: subprocess.Popen[bytes] | None = None
        self.webhook_url = ""
        self.base_url = ""
        self.webhook_user = 0
        self.webhook_code = ""

    def __enter__(self) -> PortalProcess:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "serve", json.dumps(self.fields), str(self.seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._stop()
            raise RuntimeError("the portal subprocess did not start")
        info = json.loads(line)
        self.webhook_url = info["webhook_url"]
        self.base_url = info["base_url"]
        self.webhook_user = info["webhook_user"]
        self.webhook_code = info["webhook_code"]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def stats(self) -> dict[str, Any]:
        """The portal's counters (``GET /_fake/stats``)."""
        with urllib.request.urlopen(self.base_url + "/_fake/stats", timeout=60) as resp:
            return dict(json.loads(resp.read()))

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits when its stdin closes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _serve_main(fields_json: str, seed: int) -> None:
    """Child side of :class:`PortalProcess`."""
    config = PortalConfig(**json.loads(fields_json))
    portal = FakePortal(config, seed=seed)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:
            sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        async with serve_portal(portal) as running:
            info = {
                "webhook_url": running.webhook_url,
                "base_url": running.base_url,
                "webhook_user": config.webhook_user,
                "webhook_code": config.webhook_code,
            }
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(main())


# -- measurements ------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB: ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a child started by
    a big parent reports the parent's peak.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux: ``5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    # The library is edited while benchmarks run: fingerprint the sources measured.
    digest = hashlib.sha256()
    for path in sorted((ROOT / "bitrix_results").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": commit + " (+ uncommitted work)" if commit else "",
        "library_sources_sha256": digest.hexdigest()[:16],
        # The machine may be shared (other jobs running): the load at the start.
        "loadavg_at_start": os.getloadavg(),
    }


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    p.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    return p


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    for row in cells:
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    out.append(line)
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def emit(tables: Sequence[str], doc: dict[str, Any], json_out: Path | None) -> None:
    """Print the tables, then the JSON document (after a ``JSON`` marker line)."""
    text = json.dumps(doc, indent=2, sort_keys=False)
    if json_out is not None:
        json_out.write_text(text + "\n")
    for t in tables:
        print(t)
        print()
    print("JSON")
    print(text)


def main(argv: Sequence[str]) -> None:
    if len(argv) >= 2 and argv[0] == "serve":
        _serve_main(argv[1], int(argv[2]) if len(argv) > 2 else 0)
    else:
        sys.exit("usage: _common.py serve '<PortalConfig fields as JSON>' [seed]")


if __name__ == "__main__":
    main(sys.argv[1:])
