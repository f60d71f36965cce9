"""What an import did, in words (the summary table) and as JSON, and the failures file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .._scheduler import Limits
from ..bulk import BulkReport, Outcome

__all__ = ["BOUND_EXPLAINED", "Counts", "summary_json", "summary_table", "write_failures"]

#: The demo's words for the bound, for someone who has never read design §4.
BOUND_EXPLAINED = """\
How to read these numbers:
- requests: HTTP requests this run sent; a batch of up to 50 results is one request,
  and a request the portal refused and that was sent again counts twice.
- bound: the time an ideal client would need for those same requests (less any the
  portal refused, which an ideal client would not send): one that knows the portal's
  limits and costs exactly, sends each request the instant the portal would accept
  it, and never waits for the network. The limits are a bucket of
  {burst} requests that drains {drain:g} per second, and {limit:g} s of server time per
  method every {window:g} s. A bound of 0 s means every request fit in the first burst.
- ratio: elapsed / bound. It cannot be below 1: the bound is computed for the requests
  this run actually sent, and no client can send them faster than the ideal one.
  Near 1, the client lost almost no time to pacing mistakes or round trips.
"""


@dataclass(frozen=True, slots=True)
class Counts:
    """The report's numbers the CLI shows, this run's apart from earlier runs'."""

    mode: str
    created: int
    created_earlier: int
    failed: int
    unreadable: int
    not_sent: int
    resent: int
    repaired: int
    requests: int
    retries: dict[str, int]
    rate_limit_hits: int
    operating_limit_hits: int
    elapsed: float
    bound: float

    @classmethod
    def of(
        cls, report: BulkReport, limits: Limits, *, unreadable: int = 0, total: int | None = None
    ) -> Counts:
        earlier = report.created_earlier
        settled = len(report.outcomes)
        return cls(
            mode=report.mode,
            created=report.created - earlier,
            created_earlier=earlier,
            failed=report.failed,
            unreadable=unreadable,
            not_sent=max(0, total - settled) if total is not None else 0,
            resent=report.resent,
            repaired=report.repaired,
            requests=report.requests,
            retries=dict(report.retries),
            rate_limit_hits=report.rate_limit_hits,
            operating_limit_hits=report.operating_limit_hits,
            elapsed=report.elapsed,
            bound=report.ideal_seconds(limits),
        )

    @property
    def ratio(self) -> float | None:
        return self.elapsed / self.bound if self.bound > 0 else None

    @property
    def rate(self) -> float:
        """Rows this run settled per second (rows from a journal are not this run's)."""
        done = self.created + self.failed
        return done / self.elapsed if self.elapsed > 0 else 0.0


def _failed_text(counts: Counts, reasons: dict[str, int]) -> str:
    if counts.unreadable:
        reasons = {**reasons, "unreadable row": counts.unreadable}
    total = counts.failed + counts.unreadable
    detail = ", ".join(f"{k}: {v}" for k, v in reasons.items())
    return f"{total}" + (f"  ({detail})" if detail else "")


def summary_table(counts: Counts, reasons: dict[str, int], title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("mode", counts.mode)
    table.add_row("created", f"{counts.created}  (by this run)")
    if counts.created_earlier:
        table.add_row(
            "created earlier",
            f"{counts.created_earlier} (from the journal): created by an earlier run, "
            "not sent again",
        )
    table.add_row("failed", _failed_text(counts, reasons))
    if counts.not_sent:
        table.add_row("not sent", f"{counts.not_sent}  (the import stopped before them)")
    table.add_row("elapsed", f"{counts.elapsed:.2f} s")
    table.add_row("rate", f"{counts.rate:.1f} rows/s")
    table.add_row("requests", str(counts.requests))
    ratio = counts.ratio
    if ratio is not None:
        table.add_row(
            "bound",
            f"{counts.bound:.2f} s, the ideal time for this run's requests  (ratio {ratio:.2f})",
        )
    else:
        table.add_row("bound", "0 s: every request fit in the portal's burst and budget")
    retries = ", ".join(f"{k}: {v}" for k, v in counts.retries.items())
    table.add_row(
        "retries", f"{sum(counts.retries.values())}" + (f"  ({retries})" if retries else "")
    )
    table.add_row(
        "re-sent",
        f"{counts.resent}  (rows rolled back by a failed batch and sent again)",
    )
    if counts.repaired:
        table.add_row("repaired", f"{counts.repaired}  (doubled results found and deleted)")
    table.add_row("503 / 429 seen", f"{counts.rate_limit_hits} / {counts.operating_limit_hits}")
    return table


def summary_json(counts: Counts, reasons: dict[str, int], **extra: object) -> dict[str, Any]:
    return {
        **extra,
        "mode": counts.mode,
        "created": counts.created,
        "created_earlier": counts.created_earlier,
        "failed": counts.failed + counts.unreadable,
        "failures_by_reason": {
            **reasons,
            **({"unreadable row": counts.unreadable} if counts.unreadable else {}),
        },
        "not_sent": counts.not_sent,
        "resent": counts.resent,
        "repaired": counts.repaired,
        "requests": counts.requests,
        "retries": sum(counts.retries.values()),
        "retries_by_reason": counts.retries,
        "rate_limit_hits": counts.rate_limit_hits,
        "operating_limit_hits": counts.operating_limit_hits,
        "elapsed_seconds": round(counts.elapsed, 3),
        "bound_seconds": round(counts.bound, 3),
        "ratio": None if counts.ratio is None else round(counts.ratio, 3),
    }


def write_failures(
    path: Path, outcomes: Sequence[Outcome], unreadable: Sequence[tuple[int, str, str]]
) -> int:
    """Failed rows as JSONL the user can fix and import again; returns the lines written.

    Each line is an importable row (``task_id``, ``text``, ``key``) plus an
    ``error`` field, which the importer ignores. A row that could not be read
    keeps its ``line`` and ``raw`` text, with null fields to fill in.
    """
    written = 0
    # A lone surrogate (a JSONL row's "\ud800") cannot be UTF-8; written back as
    # its JSON escape it keeps the row exact and importable instead of aborting
    # the report after the good rows were created.
    with path.open("w", encoding="utf-8", errors="backslashreplace") as fh:
        for line, reason, raw in unreadable:
            row: dict[str, object] = {
                "task_id": None,
                "text": None,
                "key": None,
                "line": line,
                "raw": raw,
                "error": f"unreadable row: {reason}",
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
        for o in outcomes:
            if o.status == "failed":
                row = {
                    "task_id": o.item.task_id,
                    "text": o.item.text,
                    "key": o.item.key,
                    "error": f"{type(o.error).__name__}: {o.error}",
                }
                fh.write(json.dumps(row, ensure_ascii=False, default=repr) + "\n")
                written += 1
    return written
