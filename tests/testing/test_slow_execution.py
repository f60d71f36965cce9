"""The slow-execution fault: the call runs only after the delay (issue 10).

Unlike the slow *answer* (the call runs, the answer waits), here the request is admitted
and its Idempotency-Key looked up on arrival, and the call itself runs later. api-facts
§4.1: two requests with the same key sent at the same time may both run; this fault is
how a client meets that.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bitrix_results.testing import Action, FakePortal, Faults, PortalConfig, serve_portal
from bitrix_results.testing._faults import FaultInjector

from ._helpers import add, make, v2, v3

KEY = {"Idempotency-Key": "late-1"}


def test_the_call_runs_only_when_the_deferral_is_run() -> None:
    portal, clock = make(latency=0.05, faults=Faults(slow_execution=1.0, slow_execution_seconds=2))
    response = add(portal, 1, "late", headers=KEY)
    assert response.action is Action.EXECUTE_LATER
    assert response.delay == pytest.approx(2.05)  # the execution delay plus latency
    assert portal.ledger.created == ()
    assert portal.results_of(1) == []
    clock.advance(2)
    assert response.deferred is not None
    answer = response.deferred()
    assert answer.status == 200
    assert answer.headers["Idempotency-Key"] == "late-1"
    assert answer.json()["result"]["item"]["text"] == "late"
    # It ran at the later time, and is in the ledger and the world.
    (record,) = portal.ledger.created
    assert record.created_at == clock.now
    assert [item["text"] for item in portal.results_of(1)] == ["late"]
    assert portal.stats().faults == {"slow_execution": 1}


def test_a_same_key_request_sent_meanwhile_runs_too() -> None:
    portal, clock = make(faults=Faults(slow_execution=1.0))
    first = add(portal, 1, "twice", headers=KEY)
    retry = add(portal, 1, "twice", headers=KEY)  # the key is looked up on arrival: nothing
    assert first.deferred is not None
    assert retry.deferred is not None
    clock.advance(1)
    assert first.deferred().status == 200
    assert retry.deferred().status == 200
    assert len(portal.ledger.created) == 2
    assert portal.stats().duplicates == 1
    # Once an answer is stored, a same-key request is a replay again.
    portal.configure(faults=Faults())
    replay = add(portal, 1, "twice", headers=KEY)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(portal.ledger.created) == 2


def test_the_budget_is_checked_when_the_call_runs() -> None:
    # api-facts §2.2: the budget is checked before each call, i.e. when it executes.
    portal, _ = make(operating_limit=0.05, faults=Faults(slow_execution=1.0))
    late = add(portal, 1, "late")
    portal.configure(faults=Faults())
    assert add(portal, 1, "fills the budget").status == 200
    assert late.deferred is not None
    refused = late.deferred()
    assert refused.status == 429
    assert refused.json()["error"] == "OPERATION_TIME_LIMIT"


def test_v3_and_v2_batches_execute_late_too() -> None:
    portal, _ = make(faults=Faults(slow_execution=1.0))
    command = {"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": "b"}}}
    v3_batch = v3(portal, "batch", [command], headers=KEY)
    v2_batch = v2(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=1"}})
    assert {v3_batch.action, v2_batch.action} == {Action.EXECUTE_LATER}
    assert portal.ledger.calls == ()
    assert v3_batch.deferred is not None
    assert v2_batch.deferred is not None
    assert v3_batch.deferred().headers["Idempotency-Key"] == "late-1"
    assert len(v2_batch.deferred().json()["result"]["result"]["a"]) == 1


def test_slow_execution_is_seeded_and_leaves_other_sequences_alone() -> None:
    def kinds(seed: int, faults: Faults) -> list[tuple[object, object, bool]]:
        injector = FaultInjector(seed)
        rolls = [injector.roll(faults, "tasks.task.result.add") for _ in range(40)]
        return [(r.before, r.after, r.late) for r in rolls]

    late = Faults(slow_execution=0.5)
    assert kinds(1, late) == kinds(1, late)
    assert kinds(1, late) != kinds(2, late)
    assert {k[2] for k in kinds(1, late)} == {True, False}
    # Without slow_execution the draws are the five of before: same seed, same faults.
    old = Faults(fail_before=0.3, slow=0.3)
    injector = FaultInjector(7)
    five = [injector.roll(old, "x") for _ in range(20)]
    assert [(r.before, r.after) for r in five] == [(b, a) for b, a, _ in kinds(7, old)[:20]]
    assert not any(r.late for r in five)


def test_slow_execution_methods_filter_and_validation() -> None:
    portal, _ = make(faults=Faults(slow_execution=1.0, methods=frozenset({"batch"})))
    assert add(portal, 1, "now").action is Action.RESPOND
    with pytest.raises(ValueError, match="probability"):
        Faults(slow_execution=2.0)
    with pytest.raises(ValueError, match="negative"):
        Faults(slow_execution_seconds=-1)


async def test_over_http_the_call_runs_after_the_client_gave_up() -> None:
    portal = FakePortal(
        PortalConfig(scale=100, faults=Faults(slow_execution=1.0, slow_execution_seconds=0.3))
    )
    async with serve_portal(portal) as running, aiohttp.ClientSession() as session:
        url = running.webhook_url.replace("/rest/", "/rest/api/") + "tasks.task.result.add"
        body = {"fields": {"taskId": 1, "text": "late over HTTP"}}
        with pytest.raises(asyncio.TimeoutError):
            await session.post(
                url, json=body, headers=KEY, timeout=aiohttp.ClientTimeout(total=0.05)
            )
        assert portal.ledger.created == ()  # not yet: the client timed out first
        # The same-key retry arrives while the first has not run: it runs too.
        async with session.post(url, json=body, headers=KEY) as response:
            assert response.status == 200
            assert response.headers["Idempotency-Key"] == "late-1"
        for _ in range(100):
            if len(portal.ledger.created) == 2:
                break
            await asyncio.sleep(0.02)
        assert [r.text for r in portal.ledger.created] == ["late over HTTP"] * 2
