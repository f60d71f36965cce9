"""REST 3.0 writes carry an ``Idempotency-Key``, stable across retries of one call;
REST v2 calls carry none (api-facts §4.1, design §2.4)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bitrix_results import OutcomeUnknownError, ResultsClient, ServerError

from ._portal import AuthMode, MockPortal, item, ok, v2_error

ItemCall = Callable[[ResultsClient], Awaitable[Any]]

# (method, call, success result) for every REST 3.0 write.
V3_WRITES: list[tuple[str, ItemCall, object]] = [
    ("tasks.task.result.add", lambda c: c.add(42, "Done"), {"item": item()}),
    (
        "tasks.task.result.addfromchatmessage",
        lambda c: c.add_from_chat_message(5),
        {"item": item()},
    ),
    ("tasks.task.result.update", lambda c: c.update(7, "New"), {"item": item()}),
    ("tasks.task.result.delete", lambda c: c.delete(7), {"result": True}),
    ("tasks.task.chat.message.send", lambda c: c.send_chat_message(42, "Hi"), {"result": True}),
    ("tasks.task.update", lambda c: c.call("tasks.task.update", {"id": 1}), {"result": True}),
]
V3_IDS = [w[0] for w in V3_WRITES]

V2_CALLS: list[tuple[str, ItemCall, object]] = [
    ("tasks.task.result.list", lambda c: c.list_legacy(42), []),
    (
        "tasks.task.result.addFromComment",
        lambda c: c.add_from_comment(100),
        {"id": 1, "taskId": 42},
    ),
    ("tasks.task.result.deleteFromComment", lambda c: c.delete_from_comment(100), None),
    ("tasks.task.update", lambda c: c.call("tasks.task.update", {"taskId": 1}, api="v2"), True),
    ("tasks.task.get", lambda c: c.call("tasks.task.get", {"taskId": 1}, api="v2"), {}),
]


def is_valid_key(key: str) -> bool:
    # 1-255 printable ASCII characters (api-facts §4.1).
    return 1 <= len(key) <= 255 and all(" " <= ch <= "~" for ch in key)


@pytest.mark.parametrize(("method", "call", "result"), V3_WRITES, ids=V3_IDS)
async def test_v3_write_carries_a_key(
    client: ResultsClient,
    mode: AuthMode,
    mock: MockPortal,
    method: str,
    call: ItemCall,
    result: object,
) -> None:
    url = mode.url("v3", method)
    mock.post(url, payload=ok(result), repeat=True)

    await call(client)
    await call(client)

    keys = [s.headers.get("Idempotency-Key") for s in mock.sent_to(url)]
    assert len(keys) == 2
    assert all(k is not None and is_valid_key(k) for k in keys)
    # Two logical calls: two keys. The key is a header, never part of the body.
    assert keys[0] != keys[1]
    assert all("Idempotency-Key" not in s.json for s in mock.sent_to(url))


@pytest.mark.parametrize(("method", "call", "result"), V2_CALLS, ids=[c[0] for c in V2_CALLS])
async def test_v2_call_carries_no_key(
    client: ResultsClient,
    mode: AuthMode,
    mock: MockPortal,
    method: str,
    call: ItemCall,
    result: object,
) -> None:
    url = mode.url("v2", method)
    mock.post(url, payload=ok(result))

    await call(client)

    [sent] = mock.sent_to(url)
    assert "Idempotency-Key" not in sent.headers


async def test_own_key_is_sent(client: ResultsClient, mode: AuthMode, mock: MockPortal) -> None:
    url = mode.url("v3", "tasks.task.result.add")
    mock.post(url, payload=ok({"item": item()}))

    await client.add(42, "Done", idempotency_key="row-17 of import.csv")

    [sent] = mock.sent_to(url)
    assert sent.headers["Idempotency-Key"] == "row-17 of import.csv"


@pytest.mark.parametrize(("method", "call", "result"), V3_WRITES, ids=V3_IDS)
async def test_retry_reuses_the_key(
    client: ResultsClient,
    mode: AuthMode,
    mock: MockPortal,
    method: str,
    call: ItemCall,
    result: object,
) -> None:
    # A 5xx may have executed the call; the retry carries the same key so the
    # portal replays instead of executing twice (api-facts §4.1, design §2.4).
    url = mode.url("v3", method)
    mock.post(url, status=500, payload=v2_error("INTERNAL_SERVER_ERROR", "Internal server error"))
    mock.post(url, payload=ok(result), headers={"Idempotent-Replayed": "true"})

    await call(client)

    sent = mock.sent_to(url)
    assert len(sent) == 2
    assert sent[0].raw == sent[1].raw
    keys = {s.headers.get("Idempotency-Key") for s in sent}
    assert len(keys) == 1
    assert None not in keys
    assert client.statistics().retries.get("server_error") == 1


async def test_key_stable_across_several_failures(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    url = mode.url("v3", "tasks.task.result.add")
    mock.post(url, status=503, payload=v2_error("QUERY_LIMIT_EXCEEDED", "Too many requests"))
    mock.post(url, status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    mock.post(url, status=500, payload=v2_error("INTERNAL_SERVER_ERROR"))
    mock.post(url, payload=ok({"item": item(9)}))

    result = await client.add(42, "Done")

    assert result.id == 9
    sent = mock.sent_to(url)
    assert len(sent) == 4
    assert len({s.headers["Idempotency-Key"] for s in sent}) == 1


async def test_keyed_write_gives_up_with_outcome_unknown(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # Retries are capped (4 attempts in these tests); a write that failed
    # ambiguously may have run, so the caller learns the outcome is unknown.
    url = mode.url("v3", "tasks.task.result.add")
    mock.post(url, status=500, payload=v2_error("INTERNAL_SERVER_ERROR"), repeat=True)

    with pytest.raises(OutcomeUnknownError) as info:
        await client.add(42, "Done")

    assert isinstance(info.value.cause, ServerError)
    sent = mock.sent_to(url)
    assert len(sent) == 4
    assert len({s.headers["Idempotency-Key"] for s in sent}) == 1


async def test_v2_write_is_not_resent_after_5xx(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    # No key protects REST v2: a 5xx leaves the outcome unknown and nothing is resent.
    url = mode.url("v2", "tasks.task.result.addFromComment")
    mock.post(url, status=500, payload=v2_error("INTERNAL_SERVER_ERROR"), repeat=True)

    with pytest.raises(OutcomeUnknownError) as info:
        await client.add_from_comment(100)

    assert info.value.method == "tasks.task.result.addFromComment"
    assert isinstance(info.value.cause, ServerError)
    assert len(mock.sent_to(url)) == 1
