"""Guarantee 3 end to end: under every fault, each item is created exactly once or
fails with nothing created, in both modes and under both readings of batch failure."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bitrix_results import (
    AccessDeniedError,
    InvalidInputError,
    InvalidRequestError,
    NewResult,
    ResultsClient,
    Scheduler,
)
from bitrix_results.testing import Faults, RunningPortal

from .conftest import FAST_RETRY, assert_exactly_once, client_for, headroom_for, limits_of

pytestmark = pytest.mark.slow

N = 2000
# Fast pacing: these tests are about exactness under faults, not about speed.
FAST = {"scale": 100, "drain_per_second": 20.0}


def _faults(fault: str, batch: bool) -> dict[str, object]:
    """Portal options for a fault. Batch mode sends ~41 requests for 2000 items, so
    it gets a higher probability to see several faults per run."""
    p = 0.15 if batch else 0.03
    return {
        "5xx-before": {"faults": Faults(fail_before=p)},
        "execute-then-drop": {"faults": Faults(drop_after=p)},
        "html-503": {"faults": Faults(html_503=p)},
        "slow": {"faults": Faults(slow=p / 2, slow_seconds=0.8)},
        "second-tenant": {"neighbour_rate": 15.0},
        "token-expiry": {},
    }[fault]


FAULTS = ("5xx-before", "execute-then-drop", "html-503", "slow", "second-tenant", "token-expiry")


def _items(n: int = N) -> list[NewResult]:
    return [NewResult(1 + i % 97, f"result {i}") for i in range(n)]


def _oauth_client(running: RunningPortal) -> ResultsClient:
    access, refresh = running.portal.issue_oauth_tokens(user_id=1)
    cfg = running.portal.config
    return ResultsClient.from_oauth(
        portal=running.base_url,
        access_token=access,
        refresh_token=refresh,
        client_id=cfg.client_id,
        client_secret=cfg.client_secret,
        token_url=running.oauth_token_url,
        scheduler=Scheduler(limits_of(cfg), headroom=headroom_for(cfg), retry=FAST_RETRY),
        timeout=0.4,
    )


async def _expire_tokens_now_and_then(running: RunningPortal) -> None:
    while True:
        await asyncio.sleep(0.05)
        running.portal.expire_access_tokens()


CASES = [(fault, True, rollback) for fault in FAULTS for rollback in (True, False)] + [
    (fault, False, True) for fault in FAULTS
]


@pytest.mark.parametrize(
    ("fault", "batch", "rollback"),
    CASES,
    ids=[
        f"{f}-{'batch' if b else 'single'}{'-rollback' if b and r else '-keep' if b else ''}"
        for f, b, r in CASES
    ],
)
async def test_every_item_exactly_once_under_faults(make_fake_portal, fault, batch, rollback):
    running = make_fake_portal(**FAST, **_faults(fault, batch), batch_rollback=rollback, seed=7)
    items = _items()
    token_expiry = fault == "token-expiry"
    client = _oauth_client(running) if token_expiry else client_for(running, timeout=0.4)
    async with client, asyncio.TaskGroup() as tg:
        expiring = tg.create_task(_expire_tokens_now_and_then(running)) if token_expiry else None
        report = await client.bulk_add(items, batch=batch)
        if expiring is not None:
            expiring.cancel()
    assert_exactly_once(running, items, report.outcomes)
    stats = running.portal.stats()
    if token_expiry:
        assert stats.refreshes > 0
    elif fault != "second-tenant":
        assert sum(stats.faults.values()) > 0


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "keep-prefix"])
@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
async def test_bad_items_fail_alone(make_fake_portal, batch, rollback):
    running = make_fake_portal(**FAST, batch_rollback=rollback)
    items: list[object] = [NewResult(1 + i % 10, f"good {i}") for i in range(300)]
    bad = {
        7: (NewResult(3, "   "), InvalidInputError),
        60: (NewResult(0, "zero task"), InvalidInputError),
        61: ((True, "bool task"), InvalidInputError),
        120: (NewResult(777777, "unknown task"), InvalidRequestError),
        180: (NewResult(9001, "no access"), AccessDeniedError),
        181: (NewResult(9002, "no access either"), AccessDeniedError),
        250: (("12", "string id"), InvalidInputError),
    }
    for index, (item, _) in bad.items():
        items.insert(index, item)
    async with client_for(running) as client:
        report = await client.bulk_add(items, batch=batch)  # type: ignore[arg-type]
    assert len(report.outcomes) == len(items)
    for index, (_, error_class) in bad.items():
        outcome = report.outcomes[index]
        assert outcome.status == "failed", index
        assert isinstance(outcome.error, error_class), (index, outcome.error)
    good = [o for o in report.outcomes if o.index not in bad]
    assert all(o.status == "created" for o in good)
    created = running.portal.ledger.created
    assert len(created) == 300
    assert running.portal.ledger.duplicates() == 0
    assert report.created == 300
    assert report.failed == len(bad)
    assert report.failures_by_reason()["InvalidInputError"] == 4


async def test_stream_yields_every_outcome_once(make_fake_portal):
    running = make_fake_portal(**FAST)

    async def source():
        for i in range(500):
            yield (1 + i % 5, f"streamed {i}")

    seen = []
    async with (
        client_for(running) as client,
        contextlib.aclosing(client.bulk_add_stream(source())) as stream,
    ):
        async for outcome in stream:
            seen.append(outcome.index)
    assert sorted(seen) == list(range(500))
    assert running.portal.stats().results_created == 500


async def test_results_of_many_reads_every_task(make_fake_portal):
    running = make_fake_portal(**FAST)
    for task in range(1, 121):
        for i in range(task % 7 * 20):  # 0 to 120 results: 0 to 3 pages
            running.portal.add_result(task, f"t{task} #{i}")
    async with client_for(running) as client:
        got = {t.task_id: t async for t in client.results_of_many([*range(1, 121), 9001])}
        legacy = {t.task_id: t async for t in client.results_of_many(range(1, 11), api="v2")}
    assert isinstance(got[9001].error, AccessDeniedError)
    for task in range(1, 121):
        assert got[task].error is None
        assert [r.text for r in got[task].results] == [
            f"t{task} #{i}" for i in range(task % 7 * 20)
        ]
    for task in range(1, 11):
        assert len(legacy[task].results) == task % 7 * 20
