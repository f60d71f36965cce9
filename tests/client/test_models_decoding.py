"""Decoding real, documentation-shaped answers (issue 10).

The ``time`` block is advisory: a malformed one never costs a reply. Enum values the
client does not know yet are kept. A field the portal did not send is ``None``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from bitrix_results import LegacyTaskResult, ResultsClient, TaskResult
from bitrix_results._transport.codec import decode_reply, decode_result
from bitrix_results.errors import DecodeError, PortalError
from bitrix_results.models import RESULT_FIELDS, ItemBody, ItemsBody

from ._portal import AuthMode, MockPortal, ok

ADD = "tasks.task.result.add"

# The shape of the add page's example answer (api-facts §5.2, §2.1), with the time
# block as one documentation example has it: `operating_reset_at` as a date string.
DOC_ADD_ANSWER: dict[str, Any] = {
    "result": {
        "item": {
            "id": 17,
            "taskId": 8017,
            "text": "Result text",
            "authorId": 503,
            "createdAt": "2025-06-10T12:40:57+03:00",
            "updatedAt": None,
            "status": "open",
            "fileIds": [],
            "rights": {"edit": True, "remove": True},
            "messageId": None,
        }
    },
    "time": {
        "start": 1749548457.0,
        "finish": 1749548457.2,
        "duration": 0.2,
        "processing": 0.17,
        "date_start": "2025-06-10T12:40:57+03:00",
        "date_finish": "2025-06-10T12:40:57+03:00",
        "operating_reset_at": "2025-06-10T12:50:57+03:00",
        "operating": 0,
    },
}


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_date_string_operating_reset_at_still_gives_the_reply() -> None:
    reply = decode_reply(body(DOC_ADD_ANSWER), status=200, method=ADD)
    # The reply survives; the scheduler learns nothing from the malformed block.
    assert reply.time is None
    item = decode_result(reply.result, ItemBody, method=ADD).item
    assert (item.id, item.task_id, item.author_id, item.status) == (17, 8017, 503, "open")


@pytest.mark.parametrize(
    "time",
    [
        {"operating": "a lot", "operating_reset_at": 1749549057},
        {"operating": True},
        {"start": {"at": 1}},
        [1, 2, 3],
        "yesterday",
        42,
    ],
)
def test_any_malformed_time_block_is_dropped_not_fatal(time: Any) -> None:
    answer = {"result": {"result": True}, "time": time}
    reply = decode_reply(body(answer), status=200, method="tasks.task.result.delete")
    assert reply.time is None
    assert msgspec.json.decode(reply.result) == {"result": True}


def test_well_formed_time_block_is_read_as_before() -> None:
    good = {**DOC_ADD_ANSWER, "time": {**DOC_ADD_ANSWER["time"], "operating_reset_at": 1749549057}}
    reply = decode_reply(body(good), status=200, method=ADD)
    assert reply.time is not None
    assert (reply.time.operating, reply.time.operating_reset_at) == (0, 1749549057)


def test_error_body_with_a_malformed_time_is_still_the_typed_error() -> None:
    answer = {
        "error": {"code": "BITRIX_REST_V3_EXCEPTION_ACCESSDENIEDEXCEPTION", "message": "no"},
        "time": {"operating_reset_at": "soon"},
    }
    with pytest.raises(PortalError) as raised:
        decode_reply(body(answer), status=403, method=ADD)
    assert raised.value.code == "BITRIX_REST_V3_EXCEPTION_ACCESSDENIEDEXCEPTION"


def test_a_body_that_is_not_an_envelope_is_still_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_reply(b'{"result": 1, "error": 5}', status=200, method=ADD)


def test_unknown_status_is_kept_as_sent() -> None:
    item = {**DOC_ADD_ANSWER["result"]["item"], "status": "archived"}
    decoded = msgspec.json.decode(body({"item": item}), type=ItemBody).item
    assert decoded.status == "archived"


def test_fields_the_portal_did_not_send_are_none() -> None:
    # An item trimmed to the fields a portal must send: nothing else is invented.
    decoded = msgspec.json.decode(
        body({"items": [{"id": 5, "taskId": 8, "text": "t"}]}), type=ItemsBody
    ).items[0]
    assert decoded == TaskResult(id=5, task_id=8, text="t")
    assert decoded.author_id is None
    assert decoded.status is None
    assert decoded.file_ids is None
    assert decoded.rights is None
    assert decoded.created_at is None


def test_v2_item_fields_not_sent_are_none() -> None:
    # The v2 addFromComment example (api-facts §5.7) has `files: null`; a trimmed item
    # leaves everything else None too, and is not reported closed.
    legacy = msgspec.json.decode(body({"id": 3, "taskId": 8, "files": None}), type=LegacyTaskResult)
    assert (legacy.created_by, legacy.status, legacy.comment_id, legacy.text) == (
        None,
        None,
        None,
        None,
    )
    assert legacy.is_closed is False
    closed = msgspec.json.decode(body({"id": 3, "taskId": 8, "status": 1}), type=LegacyTaskResult)
    assert closed.is_closed is True


def test_result_fields_are_the_documented_ones() -> None:
    # api-facts §5.1: the v3 item's fields.
    assert set(RESULT_FIELDS) == {
        "id",
        "taskId",
        "text",
        "authorId",
        "createdAt",
        "updatedAt",
        "status",
        "fileIds",
        "rights",
        "messageId",
    }


async def test_add_with_the_doc_time_block_returns_the_result(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    mock.post(mode.url("v3", ADD), payload=DOC_ADD_ANSWER)
    result = await client.add(8017, "Result text")
    assert (result.id, result.status) == (17, "open")


async def test_list_keeps_a_new_status(
    client: ResultsClient, mode: AuthMode, mock: MockPortal
) -> None:
    items = [{"id": 1, "taskId": 42, "text": "a", "status": "pending_review"}]
    mock.post(mode.url("v3", "tasks.task.result.list"), payload=ok({"items": items}))
    (result,) = await client.list(42)
    assert result.status == "pending_review"
    assert result.author_id is None
