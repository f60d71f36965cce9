"""Both batch forms and the two unsettled switches: rollback and billing (api-facts §3, §2.2)."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_results.testing import FakePortal

from ._helpers import add, error_code, make, v2, v3


def add_cmd(task_id: int, text: str, alias: str | None = None) -> dict[str, Any]:
    command: dict[str, Any] = {
        "method": "tasks.task.result.add",
        "query": {"fields": {"taskId": task_id, "text": text}},
    }
    if alias:
        command["as"] = alias
    return command


def operating(portal: FakePortal, method: str) -> float:
    return portal.operating(method).operating


# -- v3 ------------------------------------------------------------------------------------


def test_v3_batch_results_come_back_in_order() -> None:
    portal, _ = make()
    commands = [
        add_cmd(1, "first", alias="a"),
        {
            "method": "tasks.task.result.update",
            "query": {"id": {"$ref": "a.item.id"}, "fields": {"text": "first, edited"}},
        },
        {
            "method": "tasks.task.result.list",
            "query": {"filter": [["taskId", 1]], "select": ["id", "text"]},
        },
    ]
    response = v3(portal, "batch", commands)
    assert response.status == 200
    body = response.json()
    assert isinstance(body["result"], list)
    created, updated, listed = body["result"]
    assert created["item"]["text"] == "first"
    assert updated["item"]["text"] == "first, edited"
    assert [i["text"] for i in listed["items"]] == ["first, edited"]
    assert body["time"]["processing"] == pytest.approx(0.3)  # the whole batch


def test_v3_batch_ref_array() -> None:
    portal, _ = make()
    add(portal, 1, "a")
    add(portal, 1, "b")
    commands = [
        {"method": "tasks.task.result.list", "query": {"filter": [["taskId", 1]]}, "as": "l"},
        {
            "method": "tasks.task.result.list",
            "query": {"filter": [["taskId", 1], ["id", "in", {"$refArray": "l.items.id"}]]},
        },
    ]
    second = v3(portal, "batch", commands).json()["result"][1]
    assert [i["id"] for i in second["items"]] == [1, 2]


def test_v3_batch_limit_is_50() -> None:
    portal, _ = make()
    assert v3(portal, "batch", [add_cmd(1, f"r{n}") for n in range(50)]).status == 200
    too_many = v3(portal, "batch", [add_cmd(1, f"s{n}") for n in range(51)])
    assert too_many.status == 400
    assert error_code(too_many) == "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION"
    assert len(portal.ledger.created) == 50


def test_v2_cmd_format_on_rest_api_is_invalid_select() -> None:
    portal, _ = make()
    response = v3(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=1"}})
    assert response.status == 400
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_INVALIDSELECTEXCEPTION"


@pytest.mark.parametrize(
    ("commands", "status", "code"),
    [
        (
            [{"method": "tasks.task.result.addFromComment", "query": {"commentId": 1}}],
            404,
            "METHODNOTFOUNDEXCEPTION",
        ),
        ([{"query": {}}], 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        (
            [{"method": "tasks.task.result.list", "query": []}],
            400,
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
        ),
    ],
)
def test_v3_batch_is_validated_before_anything_runs(
    commands: list[Any], status: int, code: str
) -> None:
    portal, _ = make()
    response = v3(portal, "batch", [add_cmd(1, "never"), *commands])
    assert response.status == status
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_" + code
    assert portal.ledger.calls == ()


def test_v3_batch_must_be_a_non_empty_array() -> None:
    portal, _ = make()
    for body in ([], {"method": "tasks.task.result.list"}):
        response = v3(portal, "batch", body)
        assert (
            error_code(response) == "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION"
        )


def test_v3_batch_bad_reference_is_invalid_select() -> None:
    portal, _ = make(batch_rollback=True)
    commands = [
        add_cmd(1, "x"),
        {"method": "tasks.task.result.delete", "query": {"id": {"$ref": "nope.item.id"}}},
    ]
    response = v3(portal, "batch", commands)
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_INVALIDSELECTEXCEPTION"
    assert portal.results_of(1) == []


def failing_batch() -> list[dict[str, Any]]:
    return [add_cmd(1, "kept?"), add_cmd(9001, "denied"), add_cmd(1, "never run")]


def test_rollback_true_keeps_nothing_of_a_failing_batch() -> None:
    portal, _ = make(batch_rollback=True)
    response = v3(portal, "batch", failing_batch())
    # The answer is the failing command's own error body.
    assert response.status == 403
    assert set(response.json()) == {"error"}
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_ACCESSDENIEDEXCEPTION"
    assert portal.results_of(1) == []
    assert portal.ledger.created == ()
    calls = portal.ledger.calls
    assert [(c.ok, c.rolled_back) for c in calls] == [(True, True), (False, True)]


def test_rollback_false_keeps_the_commands_before_the_failure() -> None:
    portal, _ = make(batch_rollback=False)
    response = v3(portal, "batch", failing_batch())
    assert response.status == 403
    assert [r["text"] for r in portal.results_of(1)] == ["kept?"]
    assert [r.text for r in portal.ledger.created] == ["kept?"]
    assert len(portal.ledger.calls) == 2  # the third command never ran


def test_rollback_undoes_updates_deletes_and_comments() -> None:
    portal, _ = make(batch_rollback=True)
    add(portal, 1, "original")
    add(portal, 1, "to delete")
    comments_before = portal.comments_of(1)
    commands = [
        {"method": "tasks.task.result.update", "query": {"id": 1, "fields": {"text": "changed"}}},
        {"method": "tasks.task.result.delete", "query": {"id": 2}},
        add_cmd(1, "new"),
        add_cmd(424242, "fails"),
    ]
    assert v3(portal, "batch", commands).status == 400
    assert [r["text"] for r in portal.results_of(1)] == ["original", "to delete"]
    assert portal.comments_of(1) == comments_before


def test_nested_billing_charges_each_method_not_batch() -> None:
    portal, _ = make(batch_billing="nested")
    body = v3(portal, "batch", [add_cmd(1, f"r{n}") for n in range(3)]).json()
    assert operating(portal, "tasks.task.result.add") == pytest.approx(0.3)
    assert operating(portal, "batch") == 0
    assert body["time"]["operating"] == pytest.approx(0.3)


def test_batch_billing_charges_the_batch_key_only() -> None:
    portal, _ = make(batch_billing="batch")
    body = v3(portal, "batch", [add_cmd(1, f"r{n}") for n in range(3)]).json()
    assert operating(portal, "batch") == pytest.approx(0.3)
    assert operating(portal, "tasks.task.result.add") == 0
    assert body["time"]["operating"] == pytest.approx(0.3)


def test_nested_billing_blocks_a_batch_whose_method_is_blocked() -> None:
    portal, _ = make(plan="enterprise", batch_billing="nested", default_cost=200.0)
    for n in range(3):  # 600 > 480: blocked
        add(portal, 1, f"r{n}")
    response = v3(portal, "batch", [add_cmd(1, "x")])
    assert response.status == 429
    assert error_code(response) == "OPERATION_TIME_LIMIT"
    assert len(portal.ledger.created) == 3


def test_batch_billing_blocks_batches_but_not_single_calls() -> None:
    portal, _ = make(plan="enterprise", batch_billing="batch", default_cost=100.0)
    for n in range(3):  # each batch: 2 × 100 s; 600 s after three
        assert v3(portal, "batch", [add_cmd(1, f"a{n}"), add_cmd(1, f"b{n}")]).status == 200
    assert v3(portal, "batch", [add_cmd(1, "x")]).status == 429
    assert add(portal, 1, "single calls have their own budget").status == 200


def test_nested_billing_can_block_mid_batch() -> None:
    portal, _ = make(
        plan="enterprise", batch_billing="nested", batch_rollback=True, default_cost=200.0
    )
    response = v3(portal, "batch", [add_cmd(1, f"r{n}") for n in range(4)])
    # 0, 200, 400 <= 480: three run (the third crosses); the fourth is refused.
    assert response.status == 429
    assert portal.results_of(1) == []
    assert portal.stats().operating_limited == 1


# -- v2 ------------------------------------------------------------------------------------


def test_v2_batch_response_shape() -> None:
    portal, _ = make()
    add(portal, 1, "x")
    comment = portal.add_comment(2)
    cmd = {
        "list": "tasks.task.result.list?taskId=1",
        "pin": f"tasks.task.result.addFromComment?commentId={comment}",
        "bad": "tasks.task.result.list?taskId=9001",
        "v3only": "tasks.task.result.add?fields[taskId]=1&fields[text]=x",
    }
    response = v2(portal, "batch", {"cmd": cmd, "halt": 0})
    assert response.status == 200  # api-facts §3.1: 200 even when sub-requests fail
    body = response.json()
    result = body["result"]
    assert set(result) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert set(result["result"]) == {"list", "pin"}
    assert result["result"]["list"][0]["text"] == "x"
    assert result["result_error"]["bad"] == {"error": "0", "error_description": "Access denied."}
    assert result["result_error"]["v3only"]["error"] == "ERROR_METHOD_NOT_FOUND"
    # api-facts §3.1: `result_total` holds totals of methods that have one; the v2
    # result list is a plain array without a total (api-facts §5.6), so there is none: [].
    assert result["result_total"] == []
    assert result["result_next"] == []
    assert set(result["result_time"]) == {"list", "pin"}
    assert "operating" in result["result_time"]["list"]
    assert {"start", "finish", "operating"} <= set(body["time"])


def test_v2_batch_empty_collections_are_arrays() -> None:
    portal, _ = make()
    body = v2(portal, "batch", {"cmd": {"a": "tasks.task.result.list?taskId=9001"}}).json()
    assert body["result"]["result"] == []
    assert body["result"]["result_total"] == []
    assert body["result"]["result_time"] == []


def test_v2_batch_with_a_command_list_answers_arrays() -> None:
    portal, _ = make()
    cmd = ["tasks.task.result.list?taskId=1", "tasks.task.result.list?taskId=2"]
    result = v2(portal, "batch", {"cmd": cmd}).json()["result"]
    assert result["result"] == [[], []]
    assert result["result_total"] == []


def test_v2_batch_halt_stops_at_the_first_failure() -> None:
    portal, _ = make()
    cmd = {
        "a": "tasks.task.result.list?taskId=1",
        "b": "tasks.task.result.list?taskId=abc",
        "c": "tasks.task.result.list?taskId=1",
    }
    going_on = v2(portal, "batch", {"cmd": cmd, "halt": 0}).json()["result"]
    assert set(going_on["result"]) == {"a", "c"}
    halted = v2(portal, "batch", {"cmd": cmd, "halt": 1}).json()["result"]
    assert set(halted["result"]) == {"a"}
    assert set(halted["result_error"]) == {"b"}


def test_v2_batch_chains_results() -> None:
    portal, _ = make()
    comment = portal.add_comment(3)
    cmd = {
        "pin": f"tasks.task.result.addFromComment?commentId={comment}",
        "unpin": "tasks.task.result.deleteFromComment?commentId=$result[pin][commentId]",
    }
    result = v2(portal, "batch", {"cmd": cmd}).json()["result"]
    assert result["result_error"] == []
    assert portal.results_of(3) == []


def test_v2_batch_over_50_is_length_exceeded() -> None:
    portal, _ = make()
    cmd = {f"c{n}": "tasks.task.result.list?taskId=1" for n in range(51)}
    response = v2(portal, "batch", {"cmd": cmd})
    assert response.status == 400
    assert response.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert portal.stats().executed == 0


def test_v2_nested_batch_is_not_allowed() -> None:
    portal, _ = make()
    response = v2(portal, "batch", {"cmd": {"a": "batch?cmd[b]=tasks.task.result.list"}})
    assert response.status == 405
    assert response.json()["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


def test_v2_batch_counts_once_and_bills_per_switch() -> None:
    cmd = {f"c{n}": "tasks.task.result.list?taskId=1" for n in range(4)}
    nested, _ = make(batch_billing="nested")
    v2(nested, "batch", {"cmd": cmd})
    assert nested.bucket_level() == 1
    assert operating(nested, "tasks.task.result.list") == pytest.approx(0.4)
    billed, _ = make(batch_billing="batch")
    result = v2(billed, "batch", {"cmd": cmd}).json()["result"]
    assert operating(billed, "batch") == pytest.approx(0.4)
    # PR #539: under batch billing every sub-result carries the same operating value.
    assert [t["operating"] for t in result["result_time"].values()] == [pytest.approx(0.4)] * 4


def test_v2_batch_form_encoded() -> None:
    from bitrix_results.testing import PortalRequest

    from ._helpers import V2

    portal, _ = make()
    add(portal, 1, "x")
    body = b"cmd[a]=tasks.task.result.list%3FtaskId%3D1&halt=0"
    request = PortalRequest(
        "POST",
        V2 + "batch",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=body,
    )
    result = portal.handle(request).json()["result"]
    assert result["result"]["a"][0]["text"] == "x"
