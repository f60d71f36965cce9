"""The leaky bucket (api-facts §1) and the operating budget (api-facts §2.2).

Both on a hand-moved clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_results.testing import FakePortal

from ._helpers import ADMIN_V3, T0, V2, Clock, add, make, v2, v3

QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
TIME_LIMIT = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit.",
}


def ping(portal: FakePortal, client: str = "127.0.0.1") -> int:
    """One cheap request (v2 list); its status."""
    return v2(portal, "tasks.task.result.list", {"taskId": 1}, client=client).status


# -- bucket ------------------------------------------------------------------------------


@pytest.mark.parametrize(("plan", "burst"), [("standard", 50), ("enterprise", 250)])
def test_bucket_admits_exactly_the_burst_then_refuses(plan: str, burst: int) -> None:
    portal, _clock = make(plan=plan)
    assert [ping(portal) for _ in range(burst)] == [200] * burst
    refused = v2(portal, "tasks.task.result.list", {"taskId": 1})
    assert refused.status == 503
    assert refused.json() == QUERY_LIMIT
    stats = portal.stats()
    assert (stats.requests, stats.rate_limited, stats.peak_bucket_level) == (burst + 1, 1, burst)


@pytest.mark.parametrize(
    ("plan", "burst", "per_request"), [("standard", 50, 0.5), ("enterprise", 250, 0.2)]
)
def test_bucket_drains_continuously_at_the_plan_rate(
    plan: str, burst: int, per_request: float
) -> None:
    # A clock at 0, not at a 2025 timestamp: there a float's step is 2.4e-7 s, too coarse
    # to land a hundredth of a slot exactly on the edge.
    portal, clock = make(Clock(0.0), plan=plan)
    for _ in range(burst):
        ping(portal)
    clock.advance(per_request * 0.98)  # not quite one request's worth drained
    assert ping(portal) == 503
    clock.advance(per_request * 0.02)
    assert ping(portal) == 200
    assert ping(portal) == 503
    clock.advance(per_request * 3)  # three slots
    assert [ping(portal) for _ in range(4)] == [200, 200, 200, 503]


def test_refused_request_is_not_executed_and_costs_nothing() -> None:
    portal, clock = make()
    for _ in range(50):
        ping(portal)
    assert add(portal, 1, "refused").status == 503
    assert portal.ledger.calls_of("tasks.task.result.add") == []
    assert portal.results_of(1) == []
    # A refusal does not raise the level: half a second later exactly one fits again.
    for _ in range(5):
        ping(portal)
    clock.advance(0.5)
    assert [ping(portal), ping(portal)] == [200, 503]


def test_bucket_check_comes_before_auth_and_method_errors() -> None:
    portal, _clock = make()
    bad = "/rest/1/wrong-code/"
    statuses = [v2(portal, "tasks.task.result.list", {}, base=bad).status for _ in range(50)]
    assert statuses == [401] * 50
    assert v2(portal, "no.such.method", {}).status == 503
    assert portal.stats().unauthorized == 50


def test_bucket_is_per_client_address() -> None:
    portal, _clock = make()
    for _ in range(50):
        ping(portal, "10.0.0.1")
    assert ping(portal, "10.0.0.1") == 503
    assert ping(portal, "10.0.0.2") == 200
    assert portal.bucket_level("10.0.0.1") == 50
    assert portal.bucket_level("10.0.0.2") == 1


def test_v2_and_v3_share_one_bucket() -> None:
    portal, _clock = make()
    for _ in range(25):
        ping(portal)
        v3(portal, "tasks.task.result.list", {"filter": [["taskId", 1]]})
    assert add(portal, 1, "x").status == 503


def test_a_batch_is_one_request_in_the_bucket() -> None:
    portal, _clock = make()
    commands = [
        {"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": f"r{n}"}}}
        for n in range(50)
    ]
    assert v3(portal, "batch", commands).status == 200
    assert portal.bucket_level() == 1
    assert portal.stats().executed == 50


def test_neighbour_tenant_eats_part_of_the_drain() -> None:
    # Standard plan drains 2/s; a neighbour sending 1/s leaves us 1/s.
    portal, clock = make(neighbour_rate=1.0)
    for _ in range(50):
        ping(portal)
    clock.advance(1.0)
    assert [ping(portal), ping(portal)] == [200, 503]
    alone, alone_clock = make()
    for _ in range(50):
        ping(alone)
    alone_clock.advance(1.0)
    assert [ping(alone), ping(alone), ping(alone)] == [200, 200, 503]


# -- operating budget ----------------------------------------------------------------------

COSTLY = {"tasks.task.result.list": 100.0}  # five calls cross the 480 s limit


def listing(portal: FakePortal, base: str | None = None) -> Any:
    kwargs = {"base": base} if base else {}
    response = v3(portal, "tasks.task.result.list", {"filter": [["taskId", 1]]}, **kwargs)
    return {"status": response.status, **response.json()}


def test_budget_lets_the_crossing_call_run_then_blocks() -> None:
    portal, _clock = make(plan="enterprise", method_costs=COSTLY)
    totals = [listing(portal)["time"]["operating"] for _ in range(5)]
    # api-facts §2.2: operating is the running total including this call; the 5th call
    # found 400 <= 480 before it ran, so it ran and pushed the total to 500.
    assert totals == [100.0, 200.0, 300.0, 400.0, 500.0]
    blocked = v3(portal, "tasks.task.result.list", {"filter": [["taskId", 1]]})
    assert blocked.status == 429
    assert blocked.json() == TIME_LIMIT  # no ``time`` block on the error
    assert len(portal.ledger.calls_of("tasks.task.result.list")) == 5
    assert portal.stats().operating_limited == 1


def test_block_is_per_method_and_per_credential() -> None:
    portal, _clock = make(plan="enterprise", method_costs=COSTLY)
    for _ in range(5):
        listing(portal)
    assert listing(portal)["status"] == 429
    assert add(portal, 1, "another method still works").status == 200
    assert listing(portal, ADMIN_V3)["status"] == 200  # another webhook has its own budget


def test_budget_unblocks_when_the_oldest_basket_expires() -> None:
    portal, clock = make(plan="enterprise", method_costs=COSTLY)
    readings = []
    for _ in range(5):  # one call per one-minute basket, at t = 0, 60, ..., 240
        readings.append(listing(portal)["time"])
        clock.advance(60)
    # api-facts §2.1: operating_reset_at is the expiry of the oldest basket: T0 + 600.
    assert {r["operating_reset_at"] for r in readings} == {int(T0) + 600}
    clock.now = T0 + 599.9
    assert listing(portal)["status"] == 429
    clock.now = T0 + 600  # the first basket expires: 400 left, <= 480 again
    reopened = listing(portal)["time"]
    assert reopened["operating"] == 500.0
    assert reopened["operating_reset_at"] == int(T0) + 660


def test_calls_within_one_basket_expire_together() -> None:
    portal, clock = make(plan="enterprise", method_costs=COSTLY)
    listing(portal)  # opens a basket at T0
    clock.advance(30)
    listing(portal)  # same basket (api-facts §2.2: one-minute baskets)
    clock.advance(30)
    assert listing(portal)["time"]["operating_reset_at"] == int(T0) + 600
    clock.now = T0 + 600
    # Both calls of the first basket are gone; only the one at T0+60 remains, plus this.
    assert listing(portal)["time"]["operating"] == 200.0


def test_operating_reset_at_is_an_integer_rounded_up_at_scale_1() -> None:
    portal, clock = make(method_costs=COSTLY)
    clock.now = T0 + 0.25
    block = listing(portal)["time"]
    assert block["operating_reset_at"] == int(T0) + 601
    assert isinstance(block["operating_reset_at"], int)


def test_success_time_block_has_every_documented_field() -> None:
    portal, clock = make()
    clock.now = T0 + 0.5
    block = add(portal, 1, "x").json()["time"]
    assert list(block) == [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ]
    assert block["start"] == T0 + 0.5
    assert block["finish"] == pytest.approx(T0 + 0.6)
    assert block["processing"] == pytest.approx(0.1)
    assert block["date_start"].endswith("+03:00")


def test_report_operating_false_omits_the_counters() -> None:
    portal, _clock = make(report_operating=False)
    block = add(portal, 1, "x").json()["time"]
    assert "operating" not in block
    assert "operating_reset_at" not in block
    assert {"start", "finish", "duration", "processing", "date_start", "date_finish"} <= set(block)


def test_v2_and_v3_calls_of_the_same_method_name_share_a_budget() -> None:
    portal, _clock = make(plan="enterprise", method_costs=COSTLY)
    listing(portal)
    legacy = v2(portal, "tasks.task.result.list", {"taskId": 1}, base=V2).json()
    assert legacy["time"]["operating"] == 200.0


def test_cost_jitter_is_seeded_and_bounded() -> None:
    portal, _clock = make(cost_jitter=0.2)
    costs = [add(portal, 1, f"r{n}").json()["time"]["processing"] for n in range(40)]
    assert all(0.08 <= cost <= 0.12 for cost in costs)
    assert len(set(costs)) > 1
    again, _ = make(cost_jitter=0.2)
    assert [add(again, 1, f"r{n}").json()["time"]["processing"] for n in range(40)] == costs
