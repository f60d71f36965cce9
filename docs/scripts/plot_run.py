"""Draw how the scheduler sees a run: docs/img/scheduler-run.svg.

Runs the demo's workload (`bitrix-results demo`: two imports of ``--items`` results,
one request per result and then in batches of 50) against the fake portal with every
limit compressed ``--scale`` times, samples the client's ``statistics()`` every few
milliseconds, and writes an SVG of three panels over the run, in the seconds a real
portal would take:

1. the bucket level the scheduler keeps, against its capacity (burst - headroom);
2. the operating budget per method: the running total the portal reports;
3. requests per second sent, against the portal's drain rate.

No plotting library: the SVG is written by hand, so the docs need no extra dependency.

    python docs/scripts/plot_run.py [--items 2000] [--scale 20] [--out docs/img/scheduler-run.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from bitrix_results import Limits, ResultsClient, SchedulerStatistics
from bitrix_results.testing import FakePortal, PortalConfig, serve_portal

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "docs" / "img" / "scheduler-run.svg"


@dataclass
class Sample:
    t: float  # seconds since the start, as a real portal would count them
    requests: int
    level: float
    capacity: float
    drain: float
    operating: dict[str, float]


@dataclass
class Run:
    scale: float
    limits: Limits
    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)


def _sample(stats: SchedulerStatistics, t: float, scale: float) -> Sample:
    bucket = stats.bucket
    operating = {
        method: budget.operating * scale
        for (_credential, method), budget in stats.budgets.items()
        if budget.operating is not None
    }
    return Sample(
        t=t,
        requests=stats.requests_sent,
        level=bucket.level if bucket else 0.0,
        capacity=bucket.capacity if bucket else 0.0,
        drain=(bucket.drain_per_second / scale) if bucket else 0.0,
        operating=operating,
    )


async def record(items: int, scale: float, interval: float) -> Run:
    limits = Limits.standard().scaled(scale)
    run = Run(scale=scale, limits=limits)
    portal = FakePortal(PortalConfig(scale=scale))
    async with (
        serve_portal(portal) as running,
        ResultsClient.from_webhook(running.webhook_url, limits=limits) as client,
    ):
        start = time.monotonic()

        def now() -> float:
            return (time.monotonic() - start) * scale

        async def sampler() -> None:
            while True:
                run.samples.append(_sample(client.statistics(), now(), scale))
                await asyncio.sleep(interval)

        task = asyncio.create_task(sampler())
        try:
            began = now()
            first = await client.add(1, "Demo: first result")
            await client.update(first.id, "Demo: first result, edited")
            await client.list(1)
            await client.delete(first.id)
            run.phases.append(("add, update, list, delete", began, now()))
            for batch in (False, True):
                label = "batches of 50" if batch else "one request per result"
                began = now()
                rows = ((1 + i % 200, f"Result #{i} ({label})") for i in range(items))
                await client.bulk_add(rows, batch=batch)
                run.phases.append((f"{items} results, {label}", began, now()))
            # The tail: the bucket drains after the last request.
            await asyncio.sleep(3 * interval + 40 / scale)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        run.samples.append(_sample(client.statistics(), now(), scale))
    return run


# -- SVG ----------------------------------------------------------------------------------

WIDTH = 960
LEFT, RIGHT = 70, 215  # margins: axis labels on the left, the legend on the right
PANEL_H, GAP, TOP = 170, 62, 84
COLOURS = ["#3f51b5", "#e65100", "#2e7d32", "#ad1457", "#00838f", "#6d4c41"]
INK, GRID, LIMIT = "#37474f", "#cfd8dc", "#c62828"


def _ticks(hi: float, count: int = 5) -> list[float]:
    if hi <= 0:
        return [0.0]
    raw = hi / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    while magnitude > raw:
        magnitude /= 10
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(hi / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value:,.0f}"


class Panel:
    def __init__(self, index: int, title: str, y_max: float, unit: str, t_max: float) -> None:
        self.top = TOP + index * (PANEL_H + GAP)
        self.title, self.y_max, self.unit, self.t_max = title, y_max, unit, t_max
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, bool]] = []

    def x(self, t: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * t / self.t_max

    def y(self, v: float) -> float:
        return self.top + PANEL_H - PANEL_H * min(v, self.y_max) / self.y_max

    def frame(self) -> None:
        p = self.parts
        p.append(f'<text x="{LEFT}" y="{self.top - 12}" class="title">{escape(self.title)}</text>')
        for v in _ticks(self.y_max):
            y = self.y(v)
            p.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            )
            p.append(
                f'<text x="{LEFT - 8}" y="{y + 4:.1f}" class="tick" '
                f'text-anchor="end">{_fmt(v)}</text>'
            )
        p.append(
            f'<text x="{LEFT - 52}" y="{self.top + PANEL_H / 2:.1f}" class="unit" '
            f'transform="rotate(-90 {LEFT - 52} {self.top + PANEL_H / 2:.1f})" '
            f'text-anchor="middle">{escape(self.unit)}</text>'
        )

    def line(
        self,
        points: list[tuple[float, float]],
        colour: str,
        label: str,
        dashed: bool = False,
        step: bool = False,
    ) -> None:
        if not points:
            return
        coords: list[str] = []
        previous: float | None = None
        for t, v in points:
            if step and previous is not None:
                coords.append(f"{self.x(t):.1f},{self.y(previous):.1f}")
            coords.append(f"{self.x(t):.1f},{self.y(v):.1f}")
            previous = v
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        self.parts.append(
            f'<polyline points="{" ".join(coords)}" fill="none" '
            f'stroke="{colour}" stroke-width="{1.4 if dashed else 1.8}"{dash}/>'
        )
        self.legend.append((label, colour, dashed))

    def finish(self) -> None:
        for i, (label, colour, dashed) in enumerate(self.legend):
            y = self.top + 14 + i * 20
            x = WIDTH - RIGHT + 14
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            self.parts.append(
                f'<line x1="{x}" x2="{x + 22}" y1="{y - 4}" y2="{y - 4}" '
                f'stroke="{colour}" stroke-width="2"{dash}/>'
            )
            self.parts.append(f'<text x="{x + 28}" y="{y}" class="legend">{escape(label)}</text>')


def render(run: Run) -> str:
    samples = run.samples
    t_max = samples[-1].t if samples else 1.0
    limits = run.limits
    scale = run.scale

    level = Panel(
        0,
        "Bucket level: requests outstanding in the scheduler's model",
        max(limits.burst, 1) * 1.1,
        "requests",
        t_max,
    )
    level.frame()
    level.line(
        [(s.t, s.capacity) for s in samples if s.capacity],
        LIMIT,
        "capacity (burst − 2)",
        dashed=True,
    )
    level.line([(s.t, s.level) for s in samples], COLOURS[0], "bucket level")

    # Methods that spent at least a second: the others would be lines along zero.
    methods = sorted(
        {m for s in samples for m, v in s.operating.items() if v >= 1.0},
        key=lambda m: -max(s.operating.get(m, 0.0) for s in samples),
    )
    budget_limit = limits.operating_limit * scale
    peak = max((v for s in samples for v in s.operating.values()), default=0.0)
    budget = Panel(
        1,
        "Operating budget: execution time the portal reports per method",
        max(budget_limit, peak) * 1.1,
        "seconds in the window",
        t_max,
    )
    budget.frame()
    budget.line(
        [(0, budget_limit), (t_max, budget_limit)],
        LIMIT,
        f"limit ({_fmt(budget_limit)} s per {_fmt(limits.operating_window * scale)} s)",
        dashed=True,
    )
    for i, method in enumerate(methods):
        points = [(s.t, s.operating[method]) for s in samples if method in s.operating]
        budget.line(
            points, COLOURS[(i + 1) % len(COLOURS)], method.replace("tasks.task.", ""), step=True
        )

    # Requests per second over a sliding window of 10 real-portal seconds.
    window = 10.0
    rates: list[tuple[float, float]] = []
    j = 0
    for s in samples:
        while samples[j].t < s.t - window:
            j += 1
        span = s.t - samples[j].t
        if span >= window / 2:
            rates.append((s.t, (s.requests - samples[j].requests) / span))
    drain = limits.drain_per_second / scale
    peak_rate = max((r for _, r in rates), default=drain)
    rate = Panel(
        2,
        "Requests sent per second (10 s sliding window)",
        max(peak_rate, drain) * 1.15,
        "requests / s",
        t_max,
    )
    rate.frame()
    rate.line([(0, drain), (t_max, drain)], LIMIT, f"drain rate ({_fmt(drain)}/s)", dashed=True)
    rate.line(rates, COLOURS[0], "requests / s")

    height = TOP + 3 * (PANEL_H + GAP) + 16
    parts: list[str] = []
    # Phases: shaded spans across all panels, labelled under the time axis.
    shades = ["#eceff1", "#e8eaf6", "#fff3e0"]
    for i, (label, began, ended) in enumerate(run.phases):
        x0, x1 = level.x(began), level.x(ended)
        parts.append(
            f'<rect x="{x0:.1f}" y="{TOP - 4}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{3 * (PANEL_H + GAP) - GAP + 8}" fill="{shades[i % 3]}" '
            f'opacity="0.75"/>'
        )
        label_y = TOP + 3 * (PANEL_H + GAP) - GAP + 36
        if x1 - x0 > 60:
            parts.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{label_y}" '
                f'class="phase" text-anchor="middle">{escape(label)}</text>'
            )
        elif i > 0:  # a narrow span: label it below, ending at its right edge
            parts.append(
                f'<text x="{x1:.1f}" y="{label_y + 14}" '
                f'class="phase" text-anchor="end">{escape(label)} ↑</text>'
            )
    for panel in (level, budget, rate):
        panel.finish()
        parts.extend(panel.parts)
    # The time axis, under the last panel.
    axis_y = rate.top + PANEL_H
    for t in _ticks(t_max, 8):
        x = rate.x(t)
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 16}" class="tick" '
            f'text-anchor="middle">{_fmt(t)}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 2}" class="unit" '
        f'text-anchor="middle">seconds on a real portal (the run was compressed '
        f"{_fmt(scale)}×)</text>"
    )

    header = (
        f'<text x="{LEFT}" y="24" class="heading">How the scheduler sees the demo run</text>'
        f'<text x="{LEFT}" y="42" class="tick">standard plan: burst {limits.burst}, '
        f"drain {_fmt(drain)}/s; budget {_fmt(budget_limit)} s per "
        f"{_fmt(limits.operating_window * scale)} s per method; sampled from "
        f"client.statistics()</text>"
    )
    style = (
        "<style>"
        "text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;fill:" + INK + "}"
        ".heading{font-size:17px;font-weight:600}.title{font-size:13px;font-weight:600}"
        ".tick{font-size:11px}.unit{font-size:11px;font-style:italic}.legend{font-size:12px}"
        ".phase{font-size:11px;fill:#546e7a}.grid{stroke:" + GRID + ";stroke-width:1}"
        "</style>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height + 6}" '
        f'width="{WIDTH}" height="{height + 6}" role="img" '
        f'aria-label="Bucket level, operating budget and request rate during the demo run">'
        f'{style}<rect width="100%" height="100%" fill="#ffffff"/>'
        + header
        + "".join(parts)
        + "</svg>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="results per import")
    # 20, not the demo's 100: compression magnifies the CPU time of the client and the
    # fake portal too, which would stretch the batch import in portal seconds.
    parser.add_argument("--scale", type=float, default=20.0, help="time compression")
    parser.add_argument("--interval", type=float, default=0.01, help="sampling, real seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    run = asyncio.run(record(args.items, args.scale, args.interval))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(run), encoding="utf-8")
    last = run.samples[-1]
    print(
        f"{len(run.samples)} samples over {last.t:.0f} s (portal time), "
        f"{last.requests} requests; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
