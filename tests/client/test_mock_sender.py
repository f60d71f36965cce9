"""The shipped test doubles: ``MockSender`` (a handler as the HTTP layer) and
``PortalSender`` (the fake portal in-process behind it, no sockets)."""

from __future__ import annotations

import msgspec
import pytest

from bitrix_results import (
    ConnectError,
    ConnectionLostError,
    OutcomeUnknownError,
    ResultsClient,
    RetryPolicy,
)
from bitrix_results.testing import (
    FakePortal,
    Faults,
    MockSender,
    PortalConfig,
    PortalSender,
    RawRequest,
    RawResponse,
)

from ._portal import TIME, WEBHOOK_URL, item

NO_WAIT = RetryPolicy.no_backoff(max_attempts=3)


def _ok(result: object, **headers: str) -> RawResponse:
    body = msgspec.json.encode({"result": result, "time": TIME})
    return RawResponse(200, {"Content-Type": "application/json", **headers}, body)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_handler_sees_the_request_the_client_built(kind: str) -> None:
    seen: list[RawRequest] = []

    def answer(request: RawRequest) -> RawResponse:
        seen.append(request)
        return _ok({"item": item(7)}, **{"IDEMPOTENT-REPLAYED": "true"})

    async def answer_async(request: RawRequest) -> RawResponse:
        return answer(request)

    sender = MockSender(answer if kind == "sync" else answer_async)
    async with ResultsClient.from_webhook(WEBHOOK_URL, sender=sender) as client:
        assert (await client.add(42, "Done")).id == 7
    assert sender.closed

    [request] = seen
    assert request.method == "POST"
    assert request.url == "https://portal.example/rest/api/1/abc123/tasks.task.result.add"
    assert request.headers["Idempotency-Key"].startswith("br-")
    assert msgspec.json.decode(request.body) == {"fields": {"taskId": 42, "text": "Done"}}
    assert request.label == "tasks.task.result.add"
    # The request's repr names the host and method, never the webhook code.
    assert "abc123" not in repr(request)
    assert "portal.example" in repr(request)


async def test_a_handler_error_is_the_callers_error() -> None:
    calls = 0

    def refuse(request: RawRequest) -> RawResponse:
        nonlocal calls
        calls += 1
        raise ConnectError("could not connect to portal.example")

    async with ResultsClient.from_webhook(
        WEBHOOK_URL, sender=MockSender(refuse), retry=NO_WAIT
    ) as client:
        with pytest.raises(ConnectError):
            await client.list(1)
    assert calls == 3  # never sent, so retried like a real refusal


async def test_a_handler_must_return_a_raw_response() -> None:
    sender = MockSender(lambda request: {"result": []})  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="RawResponse"):
        await sender.send(RawRequest("GET", "https://x.example/"))
    with pytest.raises(TypeError, match="callable"):
        MockSender("not a function")  # type: ignore[arg-type]
    await sender.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send(RawRequest("GET", "https://x.example/"))


async def test_the_fake_portal_in_process() -> None:
    portal = FakePortal(PortalConfig(scale=100))
    sender = PortalSender(portal)
    async with ResultsClient.from_webhook(sender.webhook_url, sender=sender) as client:
        added = await client.add(1, "Done")
        assert [r.id for r in await client.list(1)] == [added.id]
    assert [r["text"] for r in portal.results_of(1)] == ["Done"]
    assert portal.stats().requests == 2


async def test_an_oauth_refresh_goes_through_the_same_sender() -> None:
    portal = FakePortal(PortalConfig(scale=100))
    access, refresh = portal.issue_oauth_tokens()
    portal.expire_access_tokens()
    sender = PortalSender(portal)
    client = ResultsClient.from_oauth(
        portal=sender.base_url,
        access_token=access,
        refresh_token=refresh,
        client_id=portal.config.client_id,
        client_secret=portal.config.client_secret,
        token_url=sender.oauth_token_url,
        sender=sender,
    )
    async with client:
        await client.add(1, "Done")
    assert client.statistics().retries.get("expired_token") == 1
    assert portal.stats().expired_tokens == 1


async def test_a_dropped_connection_in_process() -> None:
    # The call ran, the answer never came: an unkeyed v2 write is not resent.
    faults = Faults(drop_after=1.0, methods=frozenset({"tasks.task.result.addfromcomment"}))
    portal = FakePortal(PortalConfig(scale=100, faults=faults))
    sender = PortalSender(portal)
    async with ResultsClient.from_webhook(sender.webhook_url, sender=sender) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add_from_comment(1)
    assert isinstance(info.value.__cause__, ConnectionLostError)
    assert portal.stats().requests == 1


async def test_a_slow_answer_times_out_in_process() -> None:
    faults = Faults(slow=1.0, slow_seconds=30.0)
    portal = FakePortal(PortalConfig(scale=100, faults=faults))
    sender = PortalSender(portal, timeout=0.05)
    async with ResultsClient.from_webhook(
        sender.webhook_url, sender=sender, retry=NO_WAIT
    ) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.add_from_comment(1)


async def test_an_oauth_batch_carries_its_token_in_the_query() -> None:
    # A REST 3.0 batch body is a bare list: the token goes in the query (api-facts §7).
    portal = FakePortal(PortalConfig(scale=100))
    access, refresh = portal.issue_oauth_tokens()
    seen: list[RawRequest] = []
    inner = PortalSender(portal)

    async def spy(request: RawRequest) -> RawResponse:
        seen.append(request)
        return await inner.send(request)

    client = ResultsClient.from_oauth(
        portal=inner.base_url,
        access_token=access,
        refresh_token=refresh,
        client_id=portal.config.client_id,
        client_secret=portal.config.client_secret,
        token_url=inner.oauth_token_url,
        sender=MockSender(spy),
    )
    async with client:
        report = await client.bulk_add([(1, "a"), (1, "b")], batch=True)
    assert report.created == 2
    batches = [r for r in seen if r.url.split("?")[0].endswith("/rest/api/batch")]
    assert batches, [r.url for r in seen]
    assert all(r.url.endswith("?auth=" + access) for r in batches)
    assert "auth" not in msgspec.json.decode(batches[0].body)[0]
    assert access not in repr(batches[0])
