"""The client is correct under every reading of what the documentation leaves open.

The fake portal has a switch for each ambiguity (issue 10): what a list returns without
``select``, whether an unknown ``select`` field is refused, whether a missing result is
403 or 400 ENTITYNOTFOUND, and the code of an over-long REST 3.0 batch. The client's
main paths run here under each reading, over the real aiohttp transport.
"""

from __future__ import annotations

import pytest

from bitrix_results import AccessDeniedError, NewResult, NotFoundError
from bitrix_results.testing import Faults

from .conftest import assert_exactly_once, client_for

FAST = {"scale": 100, "drain_per_second": 20.0}

READINGS = [
    {"list_without_select": "id_only", "unknown_select": "drop"},
    {"list_without_select": "id_only", "unknown_select": "error"},
    {"list_without_select": "all_fields", "unknown_select": "drop"},
    {"list_without_select": "all_fields", "unknown_select": "error"},
]
IDS = [f"{r['list_without_select']}-{r['unknown_select']}" for r in READINGS]


@pytest.mark.parametrize("reading", READINGS, ids=IDS)
async def test_list_iter_and_many_read_every_field(make_fake_portal, reading):
    running = make_fake_portal(**FAST, **reading)
    for i in range(7):
        running.portal.add_result(1, f"seeded {i}", author_id=3)
    async with client_for(running) as client:
        mine = await client.add(1, "mine")
        page = await client.list(1)
        walked = [r async for r in client.iter_results(1, page_size=3)]
        (many,) = [t async for t in client.results_of_many([1])]
    for results in (page, walked, many.results):
        assert [r.text for r in results] == [*(f"seeded {i}" for i in range(7)), "mine"]
        assert all(r.status == "open" and r.task_id == 1 for r in results)
        assert [r.author_id for r in results] == [3] * 7 + [1]
        assert results[-1].rights is not None
        assert results[-1].rights.edit is True
    assert walked[-1].id == mine.id


@pytest.mark.parametrize(
    ("reading", "error"),
    [("entity_not_found", NotFoundError), ("access_denied", AccessDeniedError)],
)
async def test_update_and_delete_of_a_missing_result_are_typed_errors(
    make_fake_portal, reading, error
):
    running = make_fake_portal(**FAST, missing_result=reading)
    async with client_for(running) as client:
        created = await client.add(1, "to delete")
        await client.delete(created.id)
        with pytest.raises(error):
            await client.delete(created.id)
        with pytest.raises(error):
            await client.update(created.id, "gone")


@pytest.mark.parametrize("reading", ["request_validation", "length_exceeded"])
@pytest.mark.parametrize("list_reading", ["id_only", "all_fields"])
async def test_bulk_with_reconciliation_under_each_reading(make_fake_portal, reading, list_reading):
    # Dropped answers after execution force reconciliation reads (v3 lists).
    running = make_fake_portal(
        **FAST,
        batch_limit_error=reading,
        list_without_select=list_reading,
        faults=Faults(drop_after=0.2, methods=frozenset({"batch"})),
        seed=11,
    )
    items = [NewResult(1 + i % 5, f"bulk {i}") for i in range(300)]
    async with client_for(running, timeout=2.0) as client:
        report = await client.bulk_add(items)
    assert_exactly_once(running, items, report.outcomes)
    assert running.portal.stats().faults.get("drop_after", 0) > 0
