"""Seeded faults, acted out by the real aiohttp adapter on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from bitrix_results.testing import (
    Action,
    FakePortal,
    Faults,
    PortalConfig,
    RunningPortal,
    serve_portal,
)

from ._helpers import add, make

ADD = "tasks.task.result.add"
Serve = Callable[..., AbstractAsyncContextManager[RunningPortal]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def portal_with(**faults: Any) -> FakePortal:
    return FakePortal(PortalConfig(scale=100, faults=Faults(**faults)))


def add_url(running: RunningPortal) -> str:
    return running.webhook_url.replace("/rest/", "/rest/api/") + ADD


BODY = {"fields": {"taskId": 1, "text": "faulty"}}


async def test_drop_after_executes_then_closes_the_connection(
    session: aiohttp.ClientSession,
) -> None:
    portal = portal_with(drop_after=1.0)
    async with serve_portal(portal) as running:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(add_url(running), json=BODY, headers={"Idempotency-Key": "k"})
        # It ran: the ledger has the result the client never heard about.
        assert [r.text for r in portal.ledger.created] == ["faulty"]
        assert portal.stats().faults == {"drop_after": 1}
        # The retry with the same key is answered from the store, not executed again.
        portal.configure(faults=Faults())
        async with session.post(add_url(running), json=BODY, headers={"Idempotency-Key": "k"}) as r:
            assert r.status == 200
            assert r.headers["Idempotent-Replayed"] == "true"
        assert portal.stats().duplicates == 0


async def test_slow_executes_then_answers_late(session: aiohttp.ClientSession) -> None:
    portal = portal_with(slow=1.0, slow_seconds=0.3)
    async with serve_portal(portal) as running:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(
                add_url(running), json=BODY, timeout=aiohttp.ClientTimeout(total=0.05)
            )
        assert len(portal.ledger.created) == 1  # it ran all the same
        started = time.monotonic()
        async with session.post(add_url(running), json=BODY) as response:
            assert response.status == 200
        assert time.monotonic() - started >= 0.3
        assert portal.stats().faults == {"slow": 2}


async def test_html_503_before_execution(session: aiohttp.ClientSession) -> None:
    portal = portal_with(html_503=1.0)
    async with (
        serve_portal(portal) as running,
        session.post(add_url(running), json=BODY) as response,
    ):
        assert response.status == 503
        assert response.content_type == "text/html"
        assert (await response.text()).startswith("<!DOCTYPE html>")
    assert portal.ledger.calls == ()
    assert portal.stats().faults == {"html_503": 1}


async def test_fail_before_is_a_json_500_before_execution(session: aiohttp.ClientSession) -> None:
    portal = portal_with(fail_before=1.0)
    async with (
        serve_portal(portal) as running,
        session.post(add_url(running), json=BODY) as response,
    ):
        assert response.status == 500
        assert await response.json() == {
            "error": "INTERNAL_SERVER_ERROR",
            "error_description": "Internal server error",
        }
    assert portal.ledger.calls == ()


async def test_redirect_to_the_new_domain(session: aiohttp.ClientSession) -> None:
    portal = portal_with(redirect=1.0, redirect_to="https://new-name.bitrix24.example")
    async with serve_portal(portal) as running:
        url = add_url(running)
        async with session.post(url, json=BODY, allow_redirects=False) as response:
            assert response.status == 302
            path = url.removeprefix(running.base_url)
            assert response.headers["Location"] == "https://new-name.bitrix24.example" + path
    assert portal.ledger.calls == ()
    assert portal.bucket_level() == 0  # the old address answered; the portal saw nothing
    assert portal.stats().faults == {"redirect": 1}


async def test_requests_to_the_redirect_target_are_served(session: aiohttp.ClientSession) -> None:
    portal = portal_with(redirect=1.0)
    async with serve_portal(portal) as running:
        portal.configure(faults=Faults(redirect=1.0, redirect_to=running.base_url))
        async with session.post(add_url(running), json=BODY, allow_redirects=False) as response:
            assert response.status == 200


def test_without_redirect_to_the_re_post_is_served() -> None:
    portal, _ = make(faults=Faults(redirect=1.0))
    first = add(portal, 1, "moved")
    assert first.status == 302
    assert first.headers["Location"] == "http://127.0.0.1/rest/api/1/" + (
        f"{portal.config.webhook_code}/{ADD}"
    )
    assert add(portal, 1, "moved").status == 200  # the re-post reached the "new" address
    assert add(portal, 1, "another body").status == 302
    assert add(portal, 1, "moved").status == 302  # a fresh request of the same body


async def test_faults_can_target_methods(session: aiohttp.ClientSession) -> None:
    portal = portal_with(fail_before=1.0, methods=frozenset({"tasks.task.result.Add"}))
    async with serve_portal(portal) as running:
        async with session.post(add_url(running), json=BODY) as response:
            assert response.status == 500
        list_url = add_url(running).replace(ADD, "tasks.task.result.list")
        async with session.post(list_url, json={"filter": [["taskId", 1]]}) as response:
            assert response.status == 200


def statuses(seed: int, probability: float) -> list[int]:
    portal, _ = make(plan="enterprise", faults=Faults(fail_before=probability))
    portal = FakePortal(portal.config, clock=lambda: 1e9, seed=seed)
    return [add(portal, 1, f"r{n}").status for n in range(40)]


def test_faults_are_reproducible_from_the_seed() -> None:
    first = statuses(seed=1, probability=0.5)
    assert first == statuses(seed=1, probability=0.5)
    assert first != statuses(seed=2, probability=0.5)
    assert set(first) == {200, 500}


def test_latency_and_actions_in_the_core() -> None:
    portal, _ = make(latency=0.05, faults=Faults(slow=1.0, slow_seconds=2.0))
    response = add(portal, 1, "x")
    assert (response.action, response.delay) == (Action.DELAY, pytest.approx(2.05))
    refused, _ = make(latency=0.05, faults=Faults(drop_after=1.0))
    bad = add(refused, 424242, "x")  # executed (a validation error) and dropped
    assert bad.action is Action.DROP_AFTER
    ok, _ = make(latency=0.05)
    assert (add(ok, 1, "x").action, add(ok, 1, "x").delay) == (Action.RESPOND, 0.05)


def test_faults_reject_probabilities_outside_0_1() -> None:
    with pytest.raises(ValueError, match="probability"):
        Faults(drop_after=1.5)
