"""REST 3.0 methods: shapes, validation and error bodies (api-facts §4.2, §5.1-5.6, §5.9)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bitrix_results.testing import FakePortal, PortalResponse

from ._helpers import ADMIN_V3, add, make, v3

PREFIX = "BITRIX_REST_V3_EXCEPTION_"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00$")


def assert_v3_error(response: PortalResponse, status: int, code: str, message: str = "") -> Any:
    """api-facts §4.2: HTTP 4xx, ``error.code`` with the prefix, and no ``result`` key."""
    assert response.status == status, response.body
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == PREFIX + code
    if message:
        assert message in body["error"]["message"]
    return body["error"]


# -- add -----------------------------------------------------------------------------------


def test_add_returns_the_documented_item() -> None:
    portal, _ = make()
    response = add(portal, 7, "Done: the report is attached")
    assert response.status == 200
    item = response.json()["result"]["item"]
    assert list(item) == [
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
    ]
    assert item["taskId"] == 7
    assert item["text"] == "Done: the report is attached"
    assert item["authorId"] == 1
    assert ISO.match(item["createdAt"])
    assert item["updatedAt"] is None
    assert item["status"] == "open"
    assert item["fileIds"] == []
    assert item["rights"] == {"edit": True, "remove": True}
    assert item["messageId"] is None
    assert [r.text for r in portal.ledger.created] == ["Done: the report is attached"]


def test_add_to_a_completed_task_creates_a_closed_result() -> None:
    portal, _ = make()
    assert add(portal, 995, "late").json()["result"]["item"]["status"] == "closed"
    portal.add_task(5000, completed=True)
    assert add(portal, 5000, "late").json()["result"]["item"]["status"] == "closed"


def test_results_close_when_the_task_completes_and_stay_closed() -> None:
    portal, _ = make()
    add(portal, 3, "first")
    portal.complete_task(3)
    portal.resume_task(3)
    add(portal, 3, "second")
    assert [r["status"] for r in portal.results_of(3)] == ["closed", "open"]


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        ({}, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "`fields`"),
        (
            {"fields": {"taskId": "5", "text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "`taskId`",
        ),
        (
            {"fields": {"taskId": 0, "text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "positive",
        ),
        (
            # api-facts §5.2: a required field that is missing is DTOVALIDATIONEXCEPTION.
            {"fields": {"text": "x"}},
            "VALIDATION_DTOVALIDATIONEXCEPTION",
            "`taskId`",
        ),
        (
            {"fields": {"taskId": True, "text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "`taskId`",
        ),
        ({"fields": {"taskId": 1}}, "VALIDATION_DTOVALIDATIONEXCEPTION", "`text`"),
        ({"fields": {"taskId": 1, "text": ""}}, "VALIDATION_DTOVALIDATIONEXCEPTION", "`text`"),
        ({"fields": {"taskId": 1, "text": 5}}, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "`text`"),
        (
            {"fields": {"taskId": 1, "text": "x", "fileIds": [1]}},
            "VALIDATION_DTOVALIDATIONEXCEPTION",
            "fileIds",
        ),
        (
            {"fields": {"taskId": 1, "text": "x", "title": "y"}},
            "UNKNOWNDTOPROPERTYEXCEPTION",
            "`title`",
        ),
        (
            {"fields": {"taskId": 424242, "text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "Task not found",
        ),
    ],
)
def test_add_validation(payload: Any, code: str, message: str) -> None:
    portal, _ = make()
    response = v3(portal, "tasks.task.result.add", payload)
    assert_v3_error(response, 400, code, message)
    assert portal.ledger.created == ()


def test_add_validation_names_the_field() -> None:
    portal, _ = make()
    error = assert_v3_error(
        add(portal, 424242, "x"), 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "Task not found"
    )
    assert error["validation"] == [{"field": "taskId", "message": "Task not found"}]


def test_add_to_an_inaccessible_task_is_access_denied() -> None:
    portal, _ = make()
    assert_v3_error(add(portal, 9001, "x"), 403, "ACCESSDENIEDEXCEPTION")
    # An administrator sees every task.
    assert add(portal, 9001, "x", base=ADMIN_V3).status == 200


# -- addfromchatmessage --------------------------------------------------------------------


def test_addfromchatmessage_pins_a_task_chat_message() -> None:
    portal, _ = make()
    message = portal.add_chat_message(12, author_id=3, text="Deployed to production")
    response = v3(
        portal, "tasks.task.result.addfromchatmessage", {"fields": {"messageId": message}}
    )
    item = response.json()["result"]["item"]
    assert (item["taskId"], item["text"], item["messageId"]) == (
        12,
        "Deployed to production",
        message,
    )


def test_addfromchatmessage_refuses_a_message_outside_task_chats() -> None:
    portal, _ = make()
    private = portal.add_chat_message(None)
    for message_id in (private, 999_999):
        response = v3(
            portal, "tasks.task.result.addfromchatmessage", {"fields": {"messageId": message_id}}
        )
        assert_v3_error(
            response, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "Message is not from task chat"
        )


def test_addfromchatmessage_errors() -> None:
    portal, _ = make()
    message = portal.add_chat_message(1)
    extra = {"fields": {"messageId": message, "taskId": 1}}
    assert_v3_error(
        v3(portal, "tasks.task.result.addfromchatmessage", extra),
        400,
        "UNKNOWNDTOPROPERTYEXCEPTION",
    )
    hidden = portal.add_chat_message(9002, author_id=3)
    denied = v3(portal, "tasks.task.result.addfromchatmessage", {"fields": {"messageId": hidden}})
    assert_v3_error(denied, 403, "ACCESSDENIEDEXCEPTION")
    # The method page (api-facts §5.3): a missing `messageId` is DTOVALIDATIONEXCEPTION,
    # like any missing required field of a DTO (api-facts §5.2), and `fileIds` is "not available
    # for filling", DTOVALIDATIONEXCEPTION too, not an unknown property.
    missing = v3(portal, "tasks.task.result.addfromchatmessage", {"fields": {}})
    assert_v3_error(missing, 400, "VALIDATION_DTOVALIDATIONEXCEPTION", "`messageId`")
    files = {"fields": {"messageId": message, "fileIds": [1]}}
    assert_v3_error(
        v3(portal, "tasks.task.result.addfromchatmessage", files),
        400,
        "VALIDATION_DTOVALIDATIONEXCEPTION",
        "not available for filling",
    )
    wrong_type = {"fields": {"messageId": "12"}}
    assert_v3_error(
        v3(portal, "tasks.task.result.addfromchatmessage", wrong_type),
        400,
        "VALIDATION_REQUESTVALIDATIONEXCEPTION",
        "`messageId`",
    )
    assert portal.ledger.created == ()


# -- update / delete -----------------------------------------------------------------------


def created_id(portal: FakePortal, task_id: int = 1, text: str = "x") -> int:
    return int(add(portal, task_id, text).json()["result"]["item"]["id"])


def test_update_by_the_author() -> None:
    portal, clock = make()
    result_id = created_id(portal)
    clock.advance(5)
    response = v3(
        portal, "tasks.task.result.update", {"id": result_id, "fields": {"text": "edited"}}
    )
    item = response.json()["result"]["item"]
    assert item["text"] == "edited"
    assert ISO.match(item["updatedAt"])
    assert portal.results_of(1)[0]["text"] == "edited"


def test_update_and_delete_by_someone_else_are_access_denied() -> None:
    portal, _ = make()
    theirs = portal.add_result(1, "colleague's", author_id=3)
    update = v3(portal, "tasks.task.result.update", {"id": theirs, "fields": {"text": "mine now"}})
    assert_v3_error(update, 403, "ACCESSDENIEDEXCEPTION")
    assert_v3_error(
        v3(portal, "tasks.task.result.delete", {"id": theirs}), 403, "ACCESSDENIEDEXCEPTION"
    )
    # Not even an administrator: api-facts §5.4/§5.5 say the author.
    admin = v3(portal, "tasks.task.result.delete", {"id": theirs}, base=ADMIN_V3)
    assert_v3_error(admin, 403, "ACCESSDENIEDEXCEPTION")
    query = {"filter": [["taskId", 1]], "select": ["id", "rights"]}
    listed = v3(portal, "tasks.task.result.list", query)
    assert listed.json()["result"]["items"][0]["rights"] == {"edit": False, "remove": False}


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (
            {"fields": {"text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "At least one required field must be filled: id, filter",
        ),
        (
            {"id": 1, "filter": [], "fields": {"text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "Only one of the values must be provided: id, filter",
        ),
        (
            {"filter": [["id", 1]], "fields": {"text": "x"}},
            "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "Required field `id` is missing",
        ),
        ({"id": "1", "fields": {"text": "x"}}, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "`id`"),
        ({"id": 1}, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "`fields`"),
        (
            {"id": 1, "fields": {"text": "x", "taskId": 2}},
            "UNKNOWNDTOPROPERTYEXCEPTION",
            "`taskId`",
        ),
        ({"id": 1, "fields": {}}, "VALIDATION_DTOVALIDATIONEXCEPTION", "`text`"),
        ({"id": 999, "fields": {"text": "x"}}, "ENTITYNOTFOUNDEXCEPTION", "not found"),
    ],
)
def test_update_validation(payload: Any, code: str, message: str) -> None:
    portal, _ = make()
    created_id(portal)
    assert_v3_error(v3(portal, "tasks.task.result.update", payload), 400, code, message)


def test_delete_by_the_author() -> None:
    portal, _ = make()
    result_id = created_id(portal)
    response = v3(portal, "tasks.task.result.delete", {"id": result_id})
    assert response.status == 200
    assert response.json()["result"] == {"result": True}
    assert portal.results_of(1) == []
    again = v3(portal, "tasks.task.result.delete", {"id": result_id})
    assert_v3_error(again, 400, "ENTITYNOTFOUNDEXCEPTION")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "At least one required field must be filled: id, filter"),
        ({"id": 1, "filter": []}, "Only one of the values must be provided: id, filter"),
        ({"filter": [["id", 1]]}, "Required field `id` is missing"),
    ],
)
def test_delete_validation_messages(payload: Any, message: str) -> None:
    portal, _ = make()
    response = v3(portal, "tasks.task.result.delete", payload)
    error = assert_v3_error(response, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION")
    assert error["validation"][0]["message"] == message


# -- list ----------------------------------------------------------------------------------


def listing(portal: FakePortal, **params: Any) -> PortalResponse:
    params.setdefault("filter", [["taskId", 1]])
    return v3(portal, "tasks.task.result.list", params)


def ids(response: PortalResponse) -> list[int]:
    return [item["id"] for item in response.json()["result"]["items"]]


def seeded(portal: FakePortal, count: int = 5, task_id: int = 1) -> list[int]:
    return [created_id(portal, task_id, f"r{n}") for n in range(count)]


def test_list_returns_items_only() -> None:
    portal, _ = make()
    made = seeded(portal)
    seeded(portal, 2, task_id=2)
    result = listing(portal).json()["result"]
    assert list(result) == ["items"]  # api-facts §4.3: no total, no next
    assert [item["id"] for item in result["items"]] == made


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (["id", 3], [3]),
        (["id", "=", 3], [3]),
        (["id", "!=", 3], [1, 2, 4, 5]),
        (["id", ">", 3], [4, 5]),
        (["id", ">=", 3], [3, 4, 5]),
        (["id", "<", 3], [1, 2]),
        (["id", "<=", 3], [1, 2, 3]),
        (["id", "in", [1, 5]], [1, 5]),
        (["id", "between", [2, 4]], [2, 3, 4]),
        (["authorId", 1], [1, 2, 3, 4, 5]),
        (["status", "closed"], []),
        (["messageId", None], [1, 2, 3, 4, 5]),
    ],
)
def test_list_filter_operators(condition: list[Any], expected: list[int]) -> None:
    portal, _ = make()
    seeded(portal)
    assert ids(listing(portal, filter=[["taskId", 1], condition])) == expected


def test_list_filter_or_group_and_task_in() -> None:
    portal, _ = make()
    seeded(portal, 3, task_id=1)
    seeded(portal, 3, task_id=2)
    or_group = {"logic": "or", "conditions": [["id", 1], ["id", 6]]}
    assert ids(listing(portal, filter=[["taskId", "in", [1, 2]], or_group])) == [1, 6]


def test_list_order_select_and_pagination() -> None:
    portal, _ = make()
    seeded(portal, 5)
    assert ids(listing(portal, order={"id": "DESC"})) == [5, 4, 3, 2, 1]
    selected = listing(portal, select=["id", "text", "noSuchField"]).json()["result"]["items"]
    assert selected[0] == {"id": 1, "text": "r0"}  # unknown own field silently dropped
    with_author = listing(portal, select=["id", "author"]).json()["result"]["items"][0]
    assert with_author["author"]["id"] == 1
    assert ids(listing(portal, pagination={"limit": 2})) == [1, 2]
    assert ids(listing(portal, pagination={"limit": 2, "page": 2})) == [3, 4]
    assert ids(listing(portal, pagination={"limit": 2, "offset": 3})) == [4, 5]


def test_list_silently_caps_the_page() -> None:
    portal, _ = make(plan="enterprise")
    seeded(portal, 60)
    assert len(ids(listing(portal, pagination={"limit": 100}))) == 50
    assert len(ids(listing(portal))) == 50  # default page
    assert ids(listing(portal, pagination={"limit": 50, "page": 2})) == list(range(51, 61))
    small, _ = make(plan="enterprise", list_page_cap=10)
    seeded(small, 12)
    assert len(ids(listing(small, pagination={"limit": 50}))) == 10


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"filter": []}, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ({"filter": [["id", 1]]}, 400, "VALIDATION_REQUESTFILTERVALIDATIONEXCEPTION"),
        ({"filter": [["taskId", "one"]]}, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ({"filter": [["taskId", 1], ["text", "x"]]}, 400, "UNKNOWNDTOPROPERTYEXCEPTION"),
        ({"filter": [["taskId", "like", 1]]}, 400, "UNKNOWNFILTEROPERATOREXCEPTION"),
        ({"filter": [["taskId", 1], ["id", "in", 3]]}, 400, "INVALIDFILTEREXCEPTION"),
        ({"filter": [["taskId", 1], "id"]}, 400, "INVALIDFILTEREXCEPTION"),
        ({"filter": [["taskId", 1]], "order": {"text": "ASC"}}, 400, "INVALIDORDEREXCEPTION"),
        ({"filter": [["taskId", 1]], "order": {"id": "UP"}}, 400, "INVALIDORDEREXCEPTION"),
        ({"filter": [["taskId", 1]], "select": ["task.title"]}, 400, "UNKNOWNDTOPROPERTYEXCEPTION"),
        (
            {"filter": [["taskId", 1]], "pagination": {"limit": "10"}},
            400,
            "INVALIDPAGINATIONEXCEPTION",
        ),
        (
            {"filter": [["taskId", 1]], "pagination": {"limit": 0}},
            400,
            "INVALIDPAGINATIONEXCEPTION",
        ),
        ({"filter": [["taskId", 9001]]}, 403, "ACCESSDENIEDEXCEPTION"),
        ({"filter": [["taskId", 424242]]}, 403, "ACCESSDENIEDEXCEPTION"),
    ],
)
def test_list_errors(params: dict[str, Any], status: int, code: str) -> None:
    portal, _ = make()
    assert_v3_error(v3(portal, "tasks.task.result.list", params), status, code)


def test_list_without_filter_is_request_validation() -> None:
    portal, _ = make()
    response = v3(portal, "tasks.task.result.list", {})
    assert_v3_error(response, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION", "`filter`")


# -- chat.message.send ----------------------------------------------------------------------


def test_chat_message_send_returns_no_message_id() -> None:
    portal, _ = make()
    payload = {"fields": {"taskId": 4, "text": "Result is in the chat"}}
    response = v3(portal, "tasks.task.chat.message.send", payload)
    assert response.status == 200
    assert response.json()["result"] == {"result": True}  # api-facts §5.9: no messageId
    message = portal.chat_messages(4)[-1]
    assert (message["text"], message["authorId"]) == ("Result is in the chat", 1)
    pinned = v3(
        portal, "tasks.task.result.addfromchatmessage", {"fields": {"messageId": message["id"]}}
    )
    assert pinned.json()["result"]["item"]["messageId"] == message["id"]


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"taskId": 4}, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ({"text": "x"}, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ({"taskId": "4", "text": "x"}, 400, "VALIDATION_REQUESTVALIDATIONEXCEPTION"),
        ({"taskId": 9003, "text": "x"}, 403, "ACCESSDENIEDEXCEPTION"),
    ],
)
def test_chat_message_send_errors(fields: dict[str, Any], status: int, code: str) -> None:
    portal, _ = make()
    response = v3(portal, "tasks.task.chat.message.send", {"fields": fields})
    assert_v3_error(response, status, code)
