"""Keyset paging: the page query and the "more pages?" rule both walkers use."""

from __future__ import annotations

from bitrix_results._paging import TRUSTED_PAGE, PageRule, keyset_page, page_query
from bitrix_results.models import RESULT_FIELDS


def test_a_page_query_asks_for_ids_above_the_last_in_id_order() -> None:
    assert page_query(7, 0, 50) == {
        "filter": [["taskId", "=", 7]],
        "select": RESULT_FIELDS,
        "order": {"id": "ASC"},
        "pagination": {"limit": 50},
    }
    base = {"filter": [["taskId", "=", 7], ["status", "=", "open"]]}
    page = keyset_page(base, 120, 10)
    assert page["filter"] == [["taskId", "=", 7], ["status", "=", "open"], ["id", ">", 120]]
    # The base body is not changed.
    assert base == {"filter": [["taskId", "=", 7], ["status", "=", "open"]]}


def test_a_full_page_asks_again_and_an_empty_one_ends() -> None:
    rule = PageRule()
    assert rule.more(50, 50)
    assert not rule.more(0, 50)


def test_a_capped_page_asks_again_until_a_shorter_one_than_the_cap() -> None:
    rule = PageRule()
    # The portal returns 20 of the 50 asked: maybe its cap, so ask again.
    assert rule.more(20, 50)
    assert rule.largest == 20
    # Shorter than the largest page seen: the end.
    assert not rule.more(13, 50)


def test_a_page_shorter_than_the_documented_size_ends_at_once() -> None:
    assert not PageRule().more(TRUSTED_PAGE - 1, 50)
    assert PageRule().more(TRUSTED_PAGE, 50)


def test_each_walker_learns_on_its_own_rule() -> None:
    client, bulk = PageRule(), PageRule()
    client.more(30, 50)
    assert bulk.largest == 0
    assert bulk.more(20, 50)
