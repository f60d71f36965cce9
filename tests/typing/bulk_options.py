"""Checked by mypy (``tests/unit/test_bulk_options.py``), never run.

Each ``type: ignore[...]`` below must be needed: mypy --strict warns about an
unused one, so if a misspelt or mistyped bulk option stopped being an error in
any of the three places that take ``BulkOptions``, the check would fail.
"""

from __future__ import annotations

from pathlib import Path

from bitrix_results import BulkOptions, BulkProgress, NewResult, ResultsClient, sync
from bitrix_results.bulk import bulk_add

ITEMS = [NewResult(1, "Done")]


def progress(p: BulkProgress) -> None:
    del p


async def accepted(client: ResultsClient, blocking: sync.ResultsClient) -> None:
    await client.bulk_add(ITEMS, batch=False, concurrency=4, journal="j", job_id="x")
    client.bulk_add_stream(ITEMS, on_progress=progress)
    await bulk_add(client, ITEMS, batch=True, verify=False)
    await client.bulk_add(ITEMS, journal=Path("import.journal"))
    blocking.bulk_add(ITEMS, concurrency=2, on_progress=progress)
    options: BulkOptions = {"batch": False, "journal": "import.journal"}
    await client.bulk_add(ITEMS, **options)
    blocking.bulk_add_stream(ITEMS, **options)


async def refused(client: ResultsClient, blocking: sync.ResultsClient) -> None:
    await client.bulk_add(ITEMS, concurency=4)  # type: ignore[call-arg]
    client.bulk_add_stream(ITEMS, batch="yes")  # type: ignore[arg-type]
    await bulk_add(client, ITEMS, jobid="x")  # type: ignore[call-arg]
    blocking.bulk_add(ITEMS, journal=3)  # type: ignore[arg-type]
    await client.bulk_add(ITEMS, verify="no")  # type: ignore[arg-type]
    blocking.bulk_add_stream(ITEMS, progress=progress)  # type: ignore[call-arg]
    bad: BulkOptions = {"batched": True}  # type: ignore[typeddict-unknown-key]
    del bad
