"""A bulk import in its own process, for the kill-and-resume test.

Usage: python _importer.py WEBHOOK JOURNAL N BATCH(0|1) BURST DRAIN
Prints the report's counts as JSON when it finishes.
"""

from __future__ import annotations

import json
import sys

import anyio

from bitrix_results import Limits, NewResult, ResultsClient


async def main() -> None:
    url, journal, n, batch, burst, drain = sys.argv[1:7]
    limits = Limits(burst=int(burst), drain_per_second=float(drain))
    items = (NewResult(1 + i % 37, f"imported {i}") for i in range(int(n)))
    async with ResultsClient.from_webhook(url, limits=limits) as client:
        report = await client.bulk_add(items, batch=batch == "1", journal=journal)
    print(json.dumps({"created": report.created, "failed": report.failed, "job": report.job_id}))


anyio.run(main)
