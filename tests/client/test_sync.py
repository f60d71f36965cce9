"""The blocking facade works from plain code and from inside a running event loop
(Jupyter, Django async views), where ``asyncio.run`` would refuse (SPEC §1)."""

from __future__ import annotations

import asyncio

import pytest

from bitrix_results import InvalidInputError, NotFoundError, TaskResult
from bitrix_results.sync import ResultsClient

from ._portal import WEBHOOK, WEBHOOK_URL, MockPortal, fast_scheduler, item, ok, v3_error

ADD = WEBHOOK.url("v3", "tasks.task.result.add")
LIST = WEBHOOK.url("v3", "tasks.task.result.list")
DELETE = WEBHOOK.url("v3", "tasks.task.result.delete")


def work(mock: MockPortal) -> tuple[TaskResult, list[int], list[int]]:
    """Plain blocking code, as a script or a notebook cell would write it."""
    mock.post(ADD, payload=ok({"item": item(7, text="Done")}))
    # list(), then a two-page walk, then the first page of an abandoned walk.
    for ids in ([1, 2], [1, 2], [3], [1, 2]):
        mock.post(LIST, payload=ok({"items": [item(i) for i in ids]}))
    mock.post(
        DELETE,
        status=400,
        payload=v3_error("BITRIX_REST_V3_EXCEPTION_ENTITYNOTFOUNDEXCEPTION", "Not found"),
    )
    with ResultsClient.from_webhook(WEBHOOK_URL, scheduler=fast_scheduler()) as client:
        added = client.add(42, "Done")
        page = [r.id for r in client.list(42)]
        walked = [r.id for r in client.iter_results(42, page_size=2)]
        # A walk abandoned early closes cleanly.
        first = next(iter(client.iter_results(42, page_size=2)))
        assert first.id == 1
        with pytest.raises(NotFoundError):
            client.delete(7)
        with pytest.raises(InvalidInputError):
            client.add(42, "")
        assert client.statistics().requests_sent >= 5
    return added, page, walked


def check(mock: MockPortal, outcome: tuple[TaskResult, list[int], list[int]]) -> None:
    added, page, walked = outcome
    assert added.id == 7
    assert added.text == "Done"
    assert page == [1, 2]
    assert walked == [1, 2, 3]
    assert mock.sent_to(ADD)[0].json == {"fields": {"taskId": 42, "text": "Done"}}


def test_from_plain_sync_code(mock: MockPortal) -> None:
    check(mock, work(mock))


async def test_from_inside_a_running_loop(mock: MockPortal) -> None:
    # Called from a coroutine through a plain function: the loop is running here.
    asyncio.get_running_loop()
    check(mock, work(mock))


def test_closed_client_refuses(mock: MockPortal) -> None:
    client = ResultsClient.from_webhook(WEBHOOK_URL, scheduler=fast_scheduler())
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError):
        client.add(42, "Done")
    assert mock.requests == {}


def test_bad_webhook_url_raises_in_the_caller(mock: MockPortal) -> None:
    with pytest.raises(InvalidInputError) as info:
        ResultsClient.from_webhook("http://portal.example/rest/1/abc123/")
    assert info.value.field == "webhook_url"
