"""Old REST methods: v2 shapes and the "0"/"100" error bodies (api-facts §5.1, §5.6-5.8)."""

from __future__ import annotations

import pytest

from bitrix_results.testing import FakePortal, PortalResponse

from ._helpers import ADMIN_V2, add, make, v2


def v2_error(response: PortalResponse, code: str, description: str = "") -> None:
    assert response.status == 400, response.body
    body = response.json()
    assert body["error"] == code
    if description:
        assert body["error_description"] == description


def pin(portal: FakePortal, comment_id: object, **kwargs: str) -> PortalResponse:
    return v2(portal, "tasks.task.result.addFromComment", {"commentId": comment_id}, **kwargs)


def unpin(portal: FakePortal, comment_id: object) -> PortalResponse:
    return v2(portal, "tasks.task.result.deleteFromComment", {"commentId": comment_id})


def test_v2_list_is_a_plain_array_of_v2_items() -> None:
    portal, _ = make()
    add(portal, 1, "[b]Done[/b]\nsee <attached>")
    portal.complete_task(1)
    response = v2(portal, "tasks.task.result.list", {"taskId": "1"})  # strings are fine in v2
    assert response.status == 200
    (item,) = response.json()["result"]
    assert set(item) == {
        "id",
        "taskId",
        "commentId",
        "createdBy",
        "createdAt",
        "updatedAt",
        "status",
        "text",
        "formattedText",
        "files",
    }
    assert item["status"] == 1  # closed: the task was completed
    assert item["createdBy"] == 1
    assert item["commentId"] > 0  # with the old card a result is a pinned comment
    assert item["files"] == []
    assert item["formattedText"] == "<b>Done</b><br />see &lt;attached&gt;"


@pytest.mark.parametrize("task_id", ["abc", None, 1.5])
def test_v2_list_bad_type_is_code_100(task_id: object) -> None:
    portal, _ = make()
    v2_error(v2(portal, "tasks.task.result.list", {"taskId": task_id}), "100")


@pytest.mark.parametrize("task_id", [9001, 424242])
def test_v2_list_no_access_or_no_task_is_code_0(task_id: int) -> None:
    portal, _ = make()
    response = v2(portal, "tasks.task.result.list", {"taskId": task_id})
    v2_error(response, "0", "Access denied.")


def own_comment(portal: FakePortal, task_id: int = 2, author_id: int = 1) -> int:
    return portal.add_comment(task_id, author_id=author_id, text=f"Comment by {author_id}")


def test_add_from_comment_pins_an_own_comment() -> None:
    portal, _ = make()
    comment = own_comment(portal)
    response = pin(portal, comment)
    assert response.status == 200
    item = response.json()["result"]
    assert (item["commentId"], item["taskId"], item["createdBy"]) == (comment, 2, 1)
    assert item["status"] == 0
    assert item["files"] is None  # api-facts §5.7: null in this response
    assert portal.ledger.created[0].method == "tasks.task.result.addfromcomment"


def test_add_from_comment_twice_while_open_is_result_already_exists() -> None:
    portal, _ = make()
    comment = own_comment(portal)
    pin(portal, comment)
    v2_error(pin(portal, comment), "0", "Result already exists.")
    portal.complete_task(2)  # the result closes; now it may be pinned again
    assert pin(portal, comment).status == 200


def test_a_v3_added_result_is_a_comment_that_cannot_be_pinned_again() -> None:
    portal, _ = make()
    add(portal, 1, "x")
    comment_id = portal.comments_of(1)[-1]["id"]
    v2_error(pin(portal, comment_id), "0", "Result already exists.")


def test_add_from_comment_of_someone_else() -> None:
    portal, _ = make()
    theirs = own_comment(portal, author_id=3)
    v2_error(pin(portal, theirs), "0", "Access denied.")
    # api-facts §5.7: an administrator may pin anyone's comment and becomes the author.
    response = pin(portal, theirs, base=ADMIN_V2)
    assert response.json()["result"]["createdBy"] == 2


def test_add_from_comment_errors() -> None:
    portal, _ = make()
    v2_error(pin(portal, 987654), "0", "Comment not found.")
    v2_error(pin(portal, "x"), "100")
    hidden = portal.add_comment(9004, author_id=1)  # own comment, but no access to the task
    v2_error(pin(portal, hidden), "0", "Access denied.")


def test_delete_from_comment_only_unpins() -> None:
    portal, _ = make()
    comment = own_comment(portal)
    pin(portal, comment)
    response = unpin(portal, comment)
    assert response.status == 200
    assert response.json()["result"] is None
    assert v2(portal, "tasks.task.result.list", {"taskId": 2}).json()["result"] == []
    assert comment in [c["id"] for c in portal.comments_of(2)]  # the comment stays


def test_delete_from_comment_errors() -> None:
    portal, _ = make()
    comment = own_comment(portal)
    v2_error(unpin(portal, comment), "ERROR_CORE")  # nothing pinned
    v2_error(unpin(portal, 987654), "0", "Comment not found.")
    v2_error(unpin(portal, "x"), "100")
    theirs = own_comment(portal, author_id=3)
    pin(portal, theirs, base=ADMIN_V2)
    v2_error(unpin(portal, theirs), "0", "Access denied.")


def test_new_task_card_refuses_comment_methods_and_zeroes_comment_ids() -> None:
    portal, _ = make(new_task_card=True)
    comment = own_comment(portal)
    v2_error(
        pin(portal, comment),
        "ERROR_CORE",
        "TASKS_ERROR_EXCEPTION_#4; Action is not allowed; 4/TE/ACTION_NOT_ALLOWED",
    )
    v2_error(unpin(portal, comment), "ERROR_CORE")
    add(portal, 2, "from v3")
    (item,) = v2(portal, "tasks.task.result.list", {"taskId": 2}).json()["result"]
    assert item["commentId"] == 0  # api-facts §5: v2 list still works, commentId 0
