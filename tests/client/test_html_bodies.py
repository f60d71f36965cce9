"""Bodies that are not JSON (an HTML page from a proxy or the portal's front end,
api-facts §6) become a ``DecodeError`` that keeps the HTTP status; never a crash."""

from __future__ import annotations

import pytest

from bitrix_results import DecodeError, OutcomeUnknownError
from bitrix_results._transport.codec import decode_reply

from ._portal import WEBHOOK, MockPortal, item, ok

HTML = (
    "<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><h1>Service Temporarily Unavailable</h1></body></html>"
)
LIST = WEBHOOK.url("v3", "tasks.task.result.list")
ADD = WEBHOOK.url("v3", "tasks.task.result.add")


@pytest.mark.parametrize("status", [200, 500, 502, 503, 504])
@pytest.mark.parametrize(
    "body",
    [HTML.encode(), b"", b"Bad Gateway", b'{"result": ', b"\xff\xfe"],
    ids=["html", "empty", "text", "truncated-json", "binary"],
)
def test_decode_reply_keeps_status(status: int, body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_reply(body, status=status, method="tasks.task.result.list")
    assert info.value.status == status
    assert info.value.method == "tasks.task.result.list"
    assert f"HTTP {status}" in str(info.value)


async def test_html_503_page_then_success(mock: MockPortal) -> None:
    # The page may hide an executed call; a read is safe to send again.
    mock.post(LIST, status=503, body=HTML, content_type="text/html")
    mock.post(LIST, payload=ok({"items": [item(1)]}))

    async with WEBHOOK.make() as client:
        assert [r.id for r in await client.list(42)] == [1]
        assert client.statistics().retries.get("decode_error") == 1

    assert len(mock.sent_to(LIST)) == 2


async def test_html_503_page_every_time(mock: MockPortal) -> None:
    mock.post(LIST, status=503, body=HTML, content_type="text/html", repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(DecodeError) as info:
            await client.list(42)

    assert info.value.status == 503
    assert "HTTP 503" in str(info.value)
    # Capped: the test scheduler allows four attempts.
    assert len(mock.sent_to(LIST)) == 4


async def test_html_503_page_on_a_write(mock: MockPortal) -> None:
    mock.post(ADD, status=503, body=HTML, content_type="text/html", repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add(42, "Done")

    assert isinstance(info.value.cause, DecodeError)
    assert info.value.cause.status == 503


async def test_html_with_status_200(mock: MockPortal) -> None:
    mock.post(LIST, status=200, body=HTML, content_type="text/html", repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(DecodeError) as info:
            await client.list(42)

    assert info.value.status == 200
    # A 200 that is not JSON is not a transient failure: it is not retried.
    assert len(mock.sent_to(LIST)) == 1


async def test_unexpected_result_shape(mock: MockPortal) -> None:
    # Valid JSON, wrong ``result`` for the method: a typed error, not a KeyError.
    # The portal said the add ran, so the outcome is unknown, not failed.
    mock.post(ADD, payload=ok({"items": "nope"}))

    async with WEBHOOK.make() as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.add(42, "Done")

    cause = info.value.cause
    assert isinstance(cause, DecodeError)
    assert cause.status == 200
    assert cause.method == "tasks.task.result.add"


async def test_json_content_type_with_html_body(mock: MockPortal) -> None:
    mock.post(LIST, status=500, body=HTML, content_type="application/json", repeat=True)

    async with WEBHOOK.make() as client:
        with pytest.raises(DecodeError) as info:
            await client.list(42)

    assert info.value.status == 500
