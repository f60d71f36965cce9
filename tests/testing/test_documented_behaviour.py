"""The fake portal answers as the method pages document (issue 10's list of deviations).

Each test quotes, paraphrased, the documented behaviour it checks, with the facts
section it comes from. Where the documentation is ambiguous the portal has a switch
(``PortalConfig``), and each reading is checked here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_results.testing import FakePortal, PortalResponse

from ._helpers import add, error_code, make, v2, v3

PREFIX = "BITRIX_REST_V3_EXCEPTION_"
LIST = "tasks.task.result.list"


def v3_code(response: PortalResponse) -> str:
    return error_code(response).removeprefix(PREFIX)


def created(portal: FakePortal, task_id: int = 1, text: str = "x") -> int:
    return int(add(portal, task_id, text).json()["result"]["item"]["id"])


# -- writes: DTO validation ----------------------------------------------------------------


def test_update_with_file_ids_is_dto_validation() -> None:
    # api-facts §5.4 (update page): `fileIds` is not available for filling, which is
    # DTOVALIDATIONEXCEPTION, not an unknown property; other fields are unknown ones.
    portal, _ = make()
    result_id = created(portal)
    files = {"id": result_id, "fields": {"text": "y", "fileIds": [3]}}
    response = v3(portal, "tasks.task.result.update", files)
    assert (response.status, v3_code(response)) == (400, "VALIDATION_DTOVALIDATIONEXCEPTION")
    assert "not available for filling" in response.json()["error"]["message"]
    other = v3(portal, "tasks.task.result.update", {"id": result_id, "fields": {"title": "y"}})
    assert v3_code(other) == "UNKNOWNDTOPROPERTYEXCEPTION"
    assert portal.results_of(1)[0]["text"] == "x"


def test_add_without_task_id_is_dto_validation() -> None:
    # api-facts §5.2 (add page): a required field that is missing is
    # DTOVALIDATIONEXCEPTION; `taskId` of the wrong type is request validation.
    portal, _ = make()
    missing = v3(portal, "tasks.task.result.add", {"fields": {"text": "x"}})
    assert v3_code(missing) == "VALIDATION_DTOVALIDATIONEXCEPTION"
    wrong = v3(portal, "tasks.task.result.add", {"fields": {"taskId": "1", "text": "x"}})
    assert v3_code(wrong) == "VALIDATION_REQUESTVALIDATIONEXCEPTION"
    assert portal.ledger.created == ()


# -- v3 list: filter, order, select --------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [["authorId", "=", "one"], ["id", ">", True], ["messageId", "=", 1.5], ["status", "=", 1]],
)
def test_list_filter_value_of_the_wrong_type_is_request_validation(condition: list[Any]) -> None:
    # api-facts §5.6 (v3 list page): a filter value of the wrong type is
    # REQUESTVALIDATIONEXCEPTION (not INVALIDFILTEREXCEPTION), whatever the field.
    portal, _ = make()
    response = v3(portal, LIST, {"filter": [["taskId", 1], condition]})
    assert (response.status, v3_code(response)) == (400, "VALIDATION_REQUESTVALIDATIONEXCEPTION")


def test_list_unknown_field_in_order_is_unknown_dto_property() -> None:
    # api-facts §5.6: "Unknown field … for entity ResultDto" is
    # UNKNOWNDTOPROPERTYEXCEPTION; INVALIDORDEREXCEPTION stays for a bad direction or
    # a known field that cannot sort.
    portal, _ = make()
    unknown = v3(portal, LIST, {"filter": [["taskId", 1]], "order": {"colour": "ASC"}})
    assert v3_code(unknown) == "UNKNOWNDTOPROPERTYEXCEPTION"
    assert "ResultDto" in unknown.json()["error"]["message"]
    not_sortable = v3(portal, LIST, {"filter": [["taskId", 1]], "order": {"text": "ASC"}})
    assert v3_code(not_sortable) == "INVALIDORDEREXCEPTION"
    direction = v3(portal, LIST, {"filter": [["taskId", 1]], "order": {"id": "UP"}})
    assert v3_code(direction) == "INVALIDORDEREXCEPTION"


def test_list_without_select_returns_only_id_by_default() -> None:
    # api-facts §4.3: tasks.task.list returns only `id` when `select` is omitted; the
    # pessimistic reading for the result list, which a client must survive.
    portal, _ = make()
    result_id = created(portal)
    items = v3(portal, LIST, {"filter": [["taskId", 1]]}).json()["result"]["items"]
    assert items == [{"id": result_id}]


def test_list_without_select_all_fields_reading() -> None:
    # api-facts §5.6: "Without `select`, the default fields are returned."
    portal, _ = make(list_without_select="all_fields")
    created(portal)
    items = v3(portal, LIST, {"filter": [["taskId", 1]]}).json()["result"]["items"]
    assert set(items[0]) == {
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


def test_list_honours_select() -> None:
    # api-facts §4.3, §5.6: `select` names the fields of each item.
    portal, _ = make()
    result_id = created(portal, text="chosen")
    query = {"filter": [["taskId", 1]], "select": ["text", "id", "status"]}
    items = v3(portal, LIST, query).json()["result"]["items"]
    assert items == [{"text": "chosen", "id": result_id, "status": "open"}]


def test_unknown_select_field_is_dropped_or_refused_by_the_switch() -> None:
    # api-facts §4.2: an unknown field of the object itself is silently dropped (200);
    # the other reading refuses it like a related field (UNKNOWNDTOPROPERTYEXCEPTION).
    query = {"filter": [["taskId", 1]], "select": ["id", "colour"]}
    dropping, _ = make()
    result_id = created(dropping)
    assert v3(dropping, LIST, query).json()["result"]["items"] == [{"id": result_id}]
    refusing, _ = make(unknown_select="error")
    created(refusing)
    assert v3_code(v3(refusing, LIST, query)) == "UNKNOWNDTOPROPERTYEXCEPTION"


@pytest.mark.parametrize(
    ("reading", "status", "code"),
    [
        ("entity_not_found", 400, "ENTITYNOTFOUNDEXCEPTION"),
        ("access_denied", 403, "ACCESSDENIEDEXCEPTION"),
    ],
)
@pytest.mark.parametrize("method", ["tasks.task.result.update", "tasks.task.result.delete"])
def test_missing_result_reading(reading: str, status: int, code: str, method: str) -> None:
    # api-facts §4.2 (ENTITYNOTFOUND, 400) vs api-facts §5.5 (the page lists only 403 on `id`).
    portal, _ = make(missing_result=reading)
    response = v3(portal, method, {"id": 424242, "fields": {"text": "y"}})
    assert (response.status, v3_code(response)) == (status, code)


# -- v2 list --------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", [0, "0", -1])
def test_v2_list_task_id_zero_is_access_denied(task_id: object) -> None:
    # api-facts §5.6 (v2 list page): code "0", "Access denied." for no access or no
    # such task; 0 is an int, so it is not the "100" wrong-type error.
    portal, _ = make()
    response = v2(portal, LIST, {"taskId": task_id})
    assert response.status == 400
    assert response.json() == {"error": "0", "error_description": "Access denied."}


def test_v2_list_is_newest_first() -> None:
    # The v2 list page's example lists the newest result first.
    portal, clock = make()
    ids = []
    for text in ("old", "middle", "new"):
        ids.append(created(portal, text=text))
        clock.advance(1)
    listed = v2(portal, LIST, {"taskId": 1}).json()["result"]
    assert [item["id"] for item in listed] == ids[::-1]


# -- Idempotency-Key echo -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("tasks.task.result.add", {"fields": {"taskId": 1, "text": "k"}}),
        ("tasks.task.chat.message.send", {"fields": {"taskId": 1, "text": "k"}}),
        (
            "batch",
            [{"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": "k"}}}],
        ),
    ],
)
def test_writes_echo_the_idempotency_key_first_and_on_replay(method: str, payload: Any) -> None:
    # api-facts §4.1: a REST 3.0 write answers with the Idempotency-Key it was sent,
    # on the first answer and on the replay (which adds Idempotent-Replayed: true).
    portal, _ = make()
    headers = {"Idempotency-Key": "echo-me-1"}
    first = v3(portal, method, payload, headers=headers)
    assert first.status == 200
    assert first.headers["Idempotency-Key"] == "echo-me-1"
    assert "Idempotent-Replayed" not in first.headers
    replay = v3(portal, method, payload, headers=headers)
    assert replay.headers["Idempotency-Key"] == "echo-me-1"
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.body == first.body


def test_update_and_delete_echo_the_key_and_reads_do_not() -> None:
    portal, _ = make()
    result_id = created(portal)
    headers = {"Idempotency-Key": "u-1"}
    update = v3(
        portal,
        "tasks.task.result.update",
        {"id": result_id, "fields": {"text": "z"}},
        headers=headers,
    )
    assert update.headers["Idempotency-Key"] == "u-1"
    delete = v3(
        portal, "tasks.task.result.delete", {"id": result_id}, headers={"Idempotency-Key": "d-1"}
    )
    assert delete.headers["Idempotency-Key"] == "d-1"
    # An error answer of a keyed write carries it too (errors are not stored: api-facts §4.1).
    refused = v3(
        portal, "tasks.task.result.delete", {"id": result_id}, headers={"Idempotency-Key": "d-2"}
    )
    assert refused.status >= 400
    assert refused.headers["Idempotency-Key"] == "d-2"
    listed = v3(portal, LIST, {"filter": [["taskId", 1]]}, headers={"Idempotency-Key": "l-1"})
    assert "Idempotency-Key" not in listed.headers


# -- batches ----------------------------------------------------------------------------------


def test_v2_batch_totals_only_for_methods_with_a_total_and_operating_always() -> None:
    # api-facts §3.1: `result_total` carries totals of list methods that have one (the
    # v2 result list is a plain array, api-facts §5.6), serialised [] when empty;
    # api-facts §2.1: `time`
    # carries `operating`, also when every command failed.
    portal, _ = make()
    created(portal)
    ok = v2(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=1"}}).json()
    assert ok["result"]["result_total"] == []
    assert "operating" in ok["time"]
    failed = v2(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=424242"}}).json()
    assert failed["result"]["result"] == []
    assert set(failed["result"]["result_error"]) == {"a"}
    assert "operating" in failed["time"]
    assert "operating_reset_at" in failed["time"]


def test_v2_batch_envelope_operating_under_batch_billing() -> None:
    portal, _ = make(batch_billing="batch")
    body = v2(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=1"}}).json()
    assert body["time"]["operating"] > 0


def test_batch_nested_in_a_v3_batch_is_405() -> None:
    # api-facts §3.1, §6: a nested batch is forbidden since rest 24.0.0 and answered
    # 405 ERROR_BATCH_METHOD_NOT_ALLOWED; nothing runs.
    portal, _ = make()
    commands = [
        {"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": "no"}}},
        {"method": "batch", "query": {}},
    ]
    response = v3(portal, "batch", commands)
    assert response.status == 405
    assert response.json()["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert portal.ledger.calls == ()


@pytest.mark.parametrize(
    ("reading", "status", "code"),
    [
        ("request_validation", 400, PREFIX + "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ("length_exceeded", 400, "ERROR_BATCH_LENGTH_EXCEEDED"),
    ],
)
def test_v3_batch_limit_code_reading(reading: str, status: int, code: str) -> None:
    # api-facts §3.2: the REST 3.0 batch limit has no documented code; api-facts §3.1/§6 give the
    # v2 one. Both readings, nothing runs.
    portal, _ = make(batch_limit_error=reading, max_batch_commands=2)
    command = {"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": "n"}}}
    response = v3(portal, "batch", [command] * 3)
    assert (response.status, error_code(response)) == (status, code)
    assert portal.ledger.calls == ()


def test_config_refuses_unknown_readings() -> None:
    with pytest.raises(ValueError, match="list_without_select"):
        make(list_without_select="some")
    with pytest.raises(ValueError, match="missing_result"):
        make(missing_result="404")
