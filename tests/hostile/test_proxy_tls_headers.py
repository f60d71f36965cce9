"""Issue 12 item 11: proxies (``proxy=``, or the environment with ``trust_env``),
``ssl=`` / ``insecure_skip_tls_verify=`` and extra ``headers=``.

A tiny local HTTP proxy answers in the portal's place, so a request that reached
it proves the route. Real aiohttp transport.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from bitrix_results import InvalidInputError, ResultsClient, RetryPolicy
from bitrix_results.testing import MockSender

from ._helpers import CODE, item, ok, webhook
from .conftest import Received, ServeFactory, response


async def _answer(request: Received, writer: asyncio.StreamWriter) -> None:
    writer.write(response(200, ok({"items": [item()]})))
    await writer.drain()


def _clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_proxy_option_routes_requests_through_the_proxy(serve: ServeFactory) -> None:
    portal = await serve(_answer)
    proxy = await serve(_answer, host="127.0.0.2")
    async with webhook(portal.origin, proxy=proxy.origin) as client:
        assert len(await client.list(42)) == 1
    [seen] = proxy.received
    # A proxy gets the absolute URL (for https it would get a CONNECT tunnel).
    assert seen.target == f"{portal.origin}/rest/api/7/{CODE}/tasks.task.result.list"
    assert portal.received == []


async def test_trust_env_is_on_by_default(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = await serve(_answer)
    proxy = await serve(_answer, host="127.0.0.2")
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.origin)
    client = ResultsClient.from_webhook(
        f"{portal.origin}/rest/7/{CODE}/", retry=RetryPolicy(max_attempts=1)
    )
    async with client:
        await client.list(42)
    assert len(proxy.received) == 1
    assert portal.received == []


async def test_trust_env_false_ignores_the_environment(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = await serve(_answer)
    proxy = await serve(_answer, host="127.0.0.2")
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.origin)
    async with webhook(portal.origin, trust_env=False) as client:
        await client.list(42)
    assert proxy.received == []
    assert len(portal.received) == 1


async def test_no_proxy_in_the_environment_is_kept(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = await serve(_answer)
    proxy = await serve(_answer, host="127.0.0.2")
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.origin)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with webhook(portal.origin, trust_env=True) as client:
        await client.list(42)
    assert proxy.received == []
    assert len(portal.received) == 1


async def test_extra_headers_are_sent(serve: ServeFactory) -> None:
    portal = await serve(_answer)
    headers = {"X-Request-Source": "nightly-import"}
    async with webhook(portal.origin, headers=headers) as client:
        await client.list(42)
    assert portal.received[0].headers["x-request-source"] == "nightly-import"


@pytest.mark.parametrize(
    "headers",
    [
        {"Idempotency-Key": "mine"},
        {"authorization": "Bearer x"},
        {"Content-Type": "text/plain"},
        {"Accept-Encoding": "br"},
        {"X-Ok": "two\r\nlines"},
        {"bad name": "x"},
        {"X-Ok": 5},
        ["X-Ok", "x"],
    ],
)
def test_headers_may_not_replace_the_clients_own_or_be_malformed(headers: object) -> None:
    with pytest.raises(InvalidInputError, match="headers"):
        ResultsClient.from_webhook(f"https://p.example/rest/7/{CODE}/", headers=headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"proxy": "socks5://127.0.0.1:1080"}, "proxy"),
        ({"proxy": "http://[::1"}, "proxy"),
        ({"proxy": 8080}, "proxy"),
        ({"trust_env": "yes"}, "trust_env"),
        ({"ssl": True}, "ssl"),
        ({"insecure_skip_tls_verify": 1}, "insecure_skip_tls_verify"),
        ({"ssl": ssl.create_default_context(), "insecure_skip_tls_verify": True}, "insecure"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
    ],
)
def test_transport_options_are_checked(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        ResultsClient.from_webhook(f"https://p.example/rest/7/{CODE}/", **options)  # type: ignore[arg-type]


def test_a_proxy_password_is_not_repeated_in_a_message() -> None:
    with pytest.raises(InvalidInputError) as info:
        ResultsClient.from_webhook(
            f"https://p.example/rest/7/{CODE}/", proxy="ftp://user:pr0xyPassw0rd@proxy:1"
        )
    assert "pr0xyPassw0rd" not in str(info.value)


@pytest.mark.parametrize("name", ["proxy", "headers", "trust_env", "max_body_bytes"])
def test_sender_options_are_refused_with_a_sender_of_ones_own(name: str) -> None:
    values = {"proxy": "http://127.0.0.1:1", "headers": {}, "trust_env": True}
    with pytest.raises(InvalidInputError, match=name):
        ResultsClient.from_webhook(
            f"https://p.example/rest/7/{CODE}/",
            sender=MockSender(lambda request: None),  # type: ignore[arg-type, return-value]
            **{name: values.get(name, 1024)},  # type: ignore[arg-type]
        )


async def test_ssl_context_trusts_a_private_ca(
    serve: ServeFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    portal = await serve(_answer, tls=server_tls)
    async with webhook(portal.origin, ssl=client_tls) as client:
        assert len(await client.list(42)) == 1


async def test_insecure_skip_tls_verify_works_and_says_so_loudly(
    serve: ServeFactory, server_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    portal = await serve(_answer, tls=server_tls)
    with caplog.at_level(logging.WARNING, logger="bitrix_results"):
        async with webhook(portal.origin, insecure_skip_tls_verify=True) as client:
            assert len(await client.list(42)) == 1
    assert "certificate checks are OFF" in caplog.text
