"""The aiohttp adapter: addresses, the control endpoints, the thread runner, the emulator."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import pytest

from bitrix_results.testing import (
    FakePortal,
    PortalConfig,
    RunningPortal,
    run_emulator,
    serve_portal,
    serve_portal_in_thread,
)


async def test_serve_portal_addresses_and_a_round_trip() -> None:
    portal = FakePortal(PortalConfig(scale=100))
    async with serve_portal(portal) as running, aiohttp.ClientSession() as session:
        assert running.base_url == f"http://127.0.0.1:{running.port}"
        code = portal.config.webhook_code
        assert running.webhook_url == f"{running.base_url}/rest/1/{code}/"
        assert running.oauth_token_url == f"{running.base_url}/oauth/token/"
        api = running.webhook_url.replace("/rest/", "/rest/api/")
        payload = {"fields": {"taskId": 1, "text": "over HTTP"}}
        async with session.post(api + "tasks.task.result.add", json=payload) as response:
            assert response.status == 200
            assert (await response.json())["result"]["item"]["text"] == "over HTTP"
        # v2 with a raw query string: an encoded '&' stays data.
        async with session.get(
            running.webhook_url + "tasks.task.result.list?taskId=1&x=a%26b"
        ) as response:
            assert (await response.json())["result"][0]["text"] == "over HTTP"
        async with session.get(running.base_url + "/_fake/stats") as response:
            stats = await response.json()
        assert (stats["requests"], stats["executed"], stats["results_created"]) == (2, 2, 1)
        async with session.get(running.base_url + "/_fake/ledger") as response:
            ledger = await response.json()
        assert [r["text"] for r in ledger["created"]] == ["over HTTP"]
        assert ledger["duplicates"] == 0
        async with session.post(running.base_url + "/_fake/reset") as response:
            assert response.status == 200
        assert portal.stats().requests == 0


async def test_oauth_refresh_over_http() -> None:
    portal = FakePortal(PortalConfig(scale=100))
    _access, refresh = portal.issue_oauth_tokens()
    async with serve_portal(portal) as running, aiohttp.ClientSession() as session:
        params = {
            "grant_type": "refresh_token",
            "client_id": portal.config.client_id,
            "client_secret": portal.config.client_secret,
            "refresh_token": refresh,
        }
        async with session.get(running.oauth_token_url, params=params) as response:
            body = await response.json()
        assert body["client_endpoint"] == running.client_endpoint
        payload = {"filter": [["taskId", 1]], "auth": body["access_token"]}
        url = body["client_endpoint"] + "api/tasks.task.result.list"
        async with session.post(url, json=payload) as response:
            assert response.status == 200


def test_serve_portal_in_thread_from_sync_code() -> None:
    portal = FakePortal(PortalConfig(scale=100))
    with serve_portal_in_thread(portal) as running:
        url = running.webhook_url + "tasks.task.result.list?taskId=1"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.loads(response.read())["result"] == []
        assert portal.stats().requests == 1


async def test_run_emulator_prints_its_webhook_and_serves() -> None:
    lines: list[str] = []
    ready: asyncio.Future[RunningPortal] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_emulator(
            port=0, plan="enterprise", scale=20, echo=lines.append, on_ready=ready.set_result
        )
    )
    running = await asyncio.wait_for(ready, timeout=5)
    try:
        assert running.portal.config.plan == "enterprise"
        assert running.portal.config.scale == 20
        assert f"Webhook URL: {running.webhook_url}" in lines
        assert "burst 250" in lines[0]
        url = running.webhook_url + "tasks.task.result.list?taskId=1"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_binds_to_loopback_by_default() -> None:
    async with serve_portal(FakePortal()) as running:
        assert running.host == "127.0.0.1"
