"""URL forms, authentication and method resolution (api-facts §4.1, §6)."""

from __future__ import annotations

import pytest

from bitrix_results.testing import PortalRequest

from ._helpers import V2, V3, WEBHOOK_CODE, add, error_code, make, v2, v3

V3_ONLY = [
    "tasks.task.result.add",
    "tasks.task.result.addfromchatmessage",
    "tasks.task.result.update",
    "tasks.task.result.delete",
    "tasks.task.chat.message.send",
]


def test_webhook_v3_and_v2_forms() -> None:
    portal, _ = make()
    assert add(portal, 1, "via /rest/api/").status == 200
    legacy = v2(portal, "tasks.task.result.list", {"taskId": 1})
    assert legacy.status == 200
    assert legacy.json()["result"][0]["text"] == "via /rest/api/"


def test_v2_accepts_the_json_suffix() -> None:
    portal, _ = make()
    assert v2(portal, "tasks.task.result.list.json", {"taskId": 1}).status == 200


def test_v2_method_names_are_case_insensitive() -> None:
    portal, _ = make()
    comment = portal.add_comment(1, author_id=1)
    response = v2(portal, "tasks.task.result.addFromComment", {"commentId": comment})
    assert response.status == 200


@pytest.mark.parametrize(
    "base", ["/rest/1/wrong/", "/rest/api/1/wrong/", f"/rest/7/{WEBHOOK_CODE}/"]
)
def test_bad_webhook_is_no_auth_found(base: str) -> None:
    portal, _ = make()
    response = v2(portal, "tasks.task.result.list", {"taskId": 1}, base=base)
    assert response.status == 401
    assert response.json() == {
        "error": "NO_AUTH_FOUND",
        "error_description": "Wrong authorization data",
    }


@pytest.mark.parametrize("method", V3_ONLY)
def test_v3_only_method_under_rest_is_method_not_found(method: str) -> None:
    portal, _ = make()
    response = v2(portal, method, {"fields": {"taskId": 1, "text": "x"}, "id": 1})
    assert response.status == 404
    assert response.json() == {
        "error": "ERROR_METHOD_NOT_FOUND",
        "error_description": "Method not found!",
    }
    assert portal.stats().executed == 0


def test_v2_only_method_under_rest_api_is_method_not_found() -> None:
    portal, _ = make()
    response = v3(portal, "tasks.task.result.addFromComment", {"commentId": 1})
    assert response.status == 404
    assert response.json()["error"]["code"] == "BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION"


def test_list_exists_in_both_versions_with_different_shapes() -> None:
    portal, _ = make()
    add(portal, 1, "x")
    query = {"filter": [["taskId", 1]], "select": ["id", "status"]}
    modern = v3(portal, "tasks.task.result.list", query).json()["result"]
    legacy = v2(portal, "tasks.task.result.list", {"taskId": 1}).json()["result"]
    assert modern["items"][0]["status"] == "open"
    assert isinstance(legacy, list)
    assert legacy[0]["status"] == 0


@pytest.mark.parametrize("path", ["/rest/", "/rest/a/b/c", "/rest/api/1/x/y/z"])
def test_malformed_rest_paths_are_method_not_found(path: str) -> None:
    portal, _ = make()
    assert portal.handle(PortalRequest.post_json(path, {})).status == 404


def test_unknown_path_outside_rest() -> None:
    portal, _ = make()
    assert portal.handle(PortalRequest("GET", "/index.php")).status == 404
    assert portal.stats().requests == 0  # only /rest/ traffic counts


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"fields[taskId]=1&fields[text]=x"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/json", b"{not json"),
    ],
)
def test_v3_refuses_non_json_bodies(content_type: str, body: bytes) -> None:
    portal, _ = make()
    request = PortalRequest(
        "POST", V3 + "tasks.task.result.add", headers={"Content-Type": content_type}, body=body
    )
    response = portal.handle(request)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "BITRIX_REST_V3_EXCEPTION_INVALIDJSONEXCEPTION"
    assert "result" not in response.json()


def test_v3_ignores_the_query_string() -> None:
    portal, _ = make()
    add(portal, 1, "x")
    response = portal.handle(PortalRequest("GET", V3 + "tasks.task.result.delete", query="id=1"))
    assert response.status == 400
    assert response.json()["error"]["validation"][0]["message"] == (
        "At least one required field must be filled: id, filter"
    )


def test_v2_takes_parameters_from_query_form_or_json() -> None:
    portal, _ = make()
    add(portal, 1, "x")
    by_query = portal.handle(PortalRequest("GET", V2 + "tasks.task.result.list", query="taskId=1"))
    by_form = portal.handle(
        PortalRequest(
            "POST",
            V2 + "tasks.task.result.list",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"taskId=1",
        )
    )
    by_json = v2(portal, "tasks.task.result.list", {"taskId": 1})
    assert by_query.json()["result"] == by_form.json()["result"] == by_json.json()["result"]


def test_oauth_forms_v3_body_auth_and_v2_query_auth() -> None:
    portal, _ = make()
    access, _refresh = portal.issue_oauth_tokens(user_id=1)
    created = portal.handle(
        PortalRequest.post_json(
            "/rest/api/tasks.task.result.add",
            {"fields": {"taskId": 1, "text": "oauth"}, "auth": access},
        )
    )
    assert created.status == 200
    assert created.json()["result"]["item"]["authorId"] == 1
    legacy = portal.handle(
        PortalRequest("GET", "/rest/tasks.task.result.list", query=f"taskId=1&auth={access}")
    )
    assert legacy.json()["result"][0]["text"] == "oauth"
    legacy_body = v2(portal, "tasks.task.result.list", {"taskId": 1, "auth": access}, base="/rest/")
    assert legacy_body.status == 200


def test_v3_oauth_token_in_the_query_is_ignored() -> None:
    portal, _ = make()
    access, _refresh = portal.issue_oauth_tokens()
    response = portal.handle(
        PortalRequest.post_json(
            "/rest/api/tasks.task.result.list", {"filter": [["taskId", 1]]}, query=f"auth={access}"
        )
    )
    assert response.status == 401
    assert error_code(response) == "NO_AUTH_FOUND"


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_missing_or_unknown_token_is_no_auth_found(token: str | None) -> None:
    portal, _ = make()
    payload = {"filter": [["taskId", 1]], **({"auth": token} if token is not None else {})}
    response = portal.handle(PortalRequest.post_json("/rest/api/tasks.task.result.list", payload))
    assert response.status == 401
    assert error_code(response) == "NO_AUTH_FOUND"
