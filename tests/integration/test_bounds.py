"""Bounded waits against a misbehaving portal on 127.0.0.1 (issue 9) and exactly
once when the fake portal runs a call late (issue 10).

Assertions are on the scheduler's statistics and the servers' counters, never
on wall time.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from bitrix_results import Limits, ResultsClient, RetryPolicy, Scheduler
from bitrix_results.errors import ConnectError, ExpiredTokenError
from bitrix_results.testing import Faults

from ._hostile import serve
from .conftest import client_for

pytestmark = pytest.mark.slow

TEN_YEARS = 10 * 365 * 86400.0
#: A one-second operating window: a hold the client wrongly keeps for the
#: hostile reset would last years; a correct one ends within a second.
SMALL = Limits(burst=50, drain_per_second=2.0, operating_limit=0.8, operating_window=1.0)


def _time_block(start: float, operating: float, reset: float) -> dict[str, float]:
    return {"start": start, "finish": start, "operating": operating, "operating_reset_at": reset}


@pytest.mark.parametrize(
    "hostile",
    [
        lambda now: _time_block(now, 1e6, now + TEN_YEARS),
        lambda now: _time_block(now, 1e6, 1e12),
        lambda now: _time_block(-1e12, 1e6, now + 0.5),
    ],
    ids=["ten-years-ahead", "1e12", "start-minus-1e12"],
)
async def test_a_hostile_reset_holds_the_next_call_at_most_one_window(hostile):
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        now = time.time()
        block = hostile(now) if n == 0 else _time_block(now, 0.01, now + 0.5)
        return web.json_response({"result": True, "time": block})

    async with serve(handler) as portal:
        scheduler = Scheduler(SMALL, retry=RetryPolicy(base_delay=0.01, max_delay=0.1))
        async with ResultsClient.from_webhook(portal.webhook_url, scheduler=scheduler) as client:
            assert await client.call("app.info", api="v2", idempotent=True) is True
            held = client.statistics().budgets
            assert await client.call("app.info", api="v2", idempotent=True) is True
            stats = client.statistics()
    (budget,) = held.values()
    # Learned over the limit, so the key is held - but its reset is one window
    # from the reply at most.
    assert budget.operating is not None
    assert budget.operating > SMALL.operating_limit
    assert budget.reset_at is not None
    assert budget.reset_at - time.time() <= SMALL.operating_window
    assert stats.requests_sent == 2
    assert stats.budget_waits == 1
    assert stats.budget_wait_seconds <= SMALL.operating_window + 0.1
    assert portal.count("/rest/") == 2


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(30)
async def test_a_refused_connection_fails_fast_with_two_retries():
    url = f"http://127.0.0.1:{_closed_port()}/rest/1/abc/"
    async with ResultsClient.from_webhook(url) as client:
        with pytest.raises(ConnectError) as caught:
            await client.add(1, "nobody listens")
        stats = client.statistics()
    # Default policy: two quick retries, then the connect error itself (nothing ran,
    # so it is not an OutcomeUnknownError even for a write).
    assert stats.requests_sent == 3
    assert stats.retries == {"connect": 2}
    assert "abc" not in str(caught.value)


@pytest.mark.timeout(30)
async def test_expired_token_for_ever_refreshes_three_times_then_raises():
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path.startswith("/oauth/"):
            return web.json_response(
                {"access_token": f"access-{n}", "refresh_token": f"refresh-{n}", "expires_in": 3600}
            )
        return web.json_response(
            {
                "error": "expired_token",
                "error_description": "The access token provided has expired.",
            },
            status=401,
        )

    async with (
        serve(handler) as portal,
        ResultsClient.from_oauth(
            portal=portal.base_url,
            access_token="access-0",
            refresh_token="refresh-0",
            client_id="app",
            client_secret="secret",
            token_url=f"{portal.base_url}/oauth/token/",
        ) as client,
    ):
        with pytest.raises(ExpiredTokenError):
            await client.call("app.info", api="v2", idempotent=True)
        stats = client.statistics()
    assert portal.count("/oauth/") == RetryPolicy().max_refreshes == 3
    assert portal.count("/rest/") == 4
    assert stats.retries == {"expired_token": 3}


async def test_late_execution_creates_no_duplicates_in_300_adds(make_fake_portal):
    # One add in ten runs 0.6 s after it arrived; the client gives up on an answer
    # after 0.3 s. Its same-key retry must wait until the first has run (the
    # settle time; a real portal cuts a request off after 60 s, this one after
    # 0.6 s), or both run: api-facts §4.1.
    running = make_fake_portal(
        scale=100, faults=Faults(slow_execution=0.1, slow_execution_seconds=0.6), seed=3
    )
    policy = RetryPolicy(base_delay=0.02, max_delay=0.2, settle_time=1.0)
    async with client_for(running, retry=policy, timeout=0.3) as client:
        results = await asyncio.gather(*(client.add(1 + i % 50, f"late {i}") for i in range(300)))
        stats = client.statistics()
    portal = running.portal.stats()
    assert portal.faults.get("slow_execution", 0) > 10
    assert stats.retries.get("timeout", 0) >= portal.faults["slow_execution"]
    assert len({r.id for r in results}) == 300
    assert portal.results_created == 300
    assert running.portal.ledger.duplicates() == 0
