"""Domain-change redirects (api-facts §7): re-POSTed by hand with the same body, but
only to the same host or an allow-listed one, never https to http (design §2.7).

Another ``*.bitrix24.<tld>`` host is another tenant: a renamed cloud portal is
followed only when the user allow-lists its new name.
"""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_results import RedirectRefusedError, ResultsClient

from ._portal import MockPortal, item, oauth_client, ok, webhook_client

ADD = "tasks.task.result.add"
LIST = "tasks.task.result.list"


def webhook_on(origin: str, **options: Any) -> ResultsClient:
    return webhook_client(url=f"{origin}/rest/1/abc123/", **options)


def v3(origin: str, method: str = ADD) -> str:
    return f"{origin}/rest/api/1/abc123/{method}"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_allow_listed_rename_is_reposted(mock: MockPortal, status: int) -> None:
    old, new = "https://old.bitrix24.com", "https://new.bitrix24.com"
    mock.post(v3(old), status=status, headers={"Location": v3(new)})
    mock.post(v3(new), payload=ok({"item": item(7)}))
    mock.post(v3(new, LIST), payload=ok({"items": [item(7)]}))

    async with webhook_on(old, follow_redirects_to="new.bitrix24.com") as client:
        result = await client.add(42, "Done")
        # The portal moved: later calls go to the new address directly.
        listed = await client.list(42)

    assert result.id == 7
    assert [r.id for r in listed] == [7]
    [first] = mock.sent_to(v3(old))
    [again] = mock.sent_to(v3(new))
    # Re-POSTed, not turned into a GET: same body, same key (one logical call).
    assert again.method == "POST"
    assert again.raw == first.raw
    assert again.json == {"fields": {"taskId": 42, "text": "Done"}}
    assert again.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert mock.sent_to(v3(old, LIST)) == []
    assert len(mock.sent_to(v3(new, LIST))) == 1


async def test_allow_listed_rename_oauth(mock: MockPortal) -> None:
    old, new = "https://old.bitrix24.de", "https://renamed.bitrix24.de"
    mock.post(f"{old}/rest/api/{ADD}", status=302, headers={"Location": f"{new}/rest/api/{ADD}"})
    mock.post(f"{new}/rest/api/{ADD}", payload=ok({"item": item(7)}))

    async with oauth_client(portal=old, follow_redirects_to=[new]) as client:
        await client.add(42, "Done")

    [again] = mock.sent_to(f"{new}/rest/api/{ADD}")
    assert again.json == {"fields": {"taskId": 42, "text": "Done"}, "auth": "access-token-old"}


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example/",
        "https://evil.example/rest/api/1/abc123/tasks.task.result.add",
        "https://old.bitrix24.com.evil.example/rest/api/1/abc123/tasks.task.result.add",
        "https://bitrix24.com/",
        # Another tenant of the same cloud is not this portal.
        "https://evil.bitrix24.com/rest/api/1/abc123/tasks.task.result.add",
        # The same family, but over plain HTTP: the code would travel in clear text.
        "http://new.bitrix24.com/rest/api/1/abc123/tasks.task.result.add",
        "ftp://new.bitrix24.com/",
    ],
)
async def test_redirect_elsewhere_is_refused(mock: MockPortal, location: str) -> None:
    old = "https://old.bitrix24.com"
    mock.post(v3(old), status=302, headers={"Location": location}, repeat=True)

    async with webhook_on(old) as client:
        with pytest.raises(RedirectRefusedError):
            await client.add(42, "Done")

    # Nothing went anywhere but the portal, and the refusal is not retried.
    assert [s.url for s in mock.sent()] == [v3(old)]


async def test_allow_listed_host_is_followed(mock: MockPortal) -> None:
    portal, mirror = "https://portal.example", "https://mirror.example"
    mock.post(v3(portal), status=302, headers={"Location": v3(mirror)})
    mock.post(v3(mirror), payload=ok({"item": item(7)}))

    async with webhook_on(portal, follow_redirects_to=["mirror.example"]) as client:
        assert (await client.add(42, "Done")).id == 7

    [first] = mock.sent_to(v3(portal))
    [again] = mock.sent_to(v3(mirror))
    assert again.raw == first.raw


async def test_allow_list_does_not_open_other_hosts(mock: MockPortal) -> None:
    portal = "https://portal.example"
    mock.post(v3(portal), status=302, headers={"Location": v3("https://evil.example")})

    async with webhook_on(portal, follow_redirects_to=["mirror.example"]) as client:
        with pytest.raises(RedirectRefusedError):
            await client.add(42, "Done")

    assert mock.sent_to(v3("https://evil.example")) == []


async def test_redirect_loop_is_refused(mock: MockPortal) -> None:
    a, b = "https://a.bitrix24.com", "https://b.bitrix24.com"
    mock.post(v3(a), status=302, headers={"Location": v3(b)}, repeat=True)
    mock.post(v3(b), status=302, headers={"Location": v3(a)}, repeat=True)

    async with webhook_on(a, follow_redirects_to=["a.bitrix24.com", "b.bitrix24.com"]) as client:
        with pytest.raises(RedirectRefusedError):
            await client.add(42, "Done")

    assert 2 <= len(mock.sent()) <= 8
