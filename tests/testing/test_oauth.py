"""OAuth: access-token expiry, refresh-token rotation, the token endpoint (api-facts §7)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from bitrix_results.testing import FakePortal, PortalConfig, PortalRequest, PortalResponse

from ._helpers import T0, error_code, make

CONFIG = PortalConfig()


def call(portal: FakePortal, token: str) -> PortalResponse:
    payload = {"filter": [["taskId", 1]], "auth": token}
    return portal.handle(PortalRequest.post_json("/rest/api/tasks.task.result.list", payload))


def refresh(portal: FakePortal, refresh_token: str, **overrides: str) -> PortalResponse:
    params = {
        "grant_type": "refresh_token",
        "client_id": CONFIG.client_id,
        "client_secret": CONFIG.client_secret,
        "refresh_token": refresh_token,
        **overrides,
    }
    request = PortalRequest(
        "GET", "/oauth/token/", query=urlencode(params), base_url="http://127.0.0.1:8024"
    )
    return portal.handle(request)


def test_access_token_expires_after_one_hour() -> None:
    portal, clock = make()
    access, _refresh = portal.issue_oauth_tokens()
    clock.now = T0 + 3599
    assert call(portal, access).status == 200
    clock.now = T0 + 3600
    expired = call(portal, access)
    assert expired.status == 401
    assert expired.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired.",
    }
    stats = portal.stats()
    assert (stats.unauthorized, stats.expired_tokens) == (1, 1)


def test_refresh_returns_the_documented_fields_and_rotates() -> None:
    portal, clock = make()
    access, old_refresh = portal.issue_oauth_tokens(user_id=3)
    clock.now = T0 + 4000
    response = refresh(portal, old_refresh)
    assert response.status == 200
    body: dict[str, Any] = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires",
        "expires_in",
        "client_endpoint",
        "server_endpoint",
        "domain",
        "member_id",
        "scope",
        "status",
        "user_id",
    }
    assert body["access_token"] != access
    assert body["refresh_token"] != old_refresh  # api-facts §7: a new value, store it
    assert body["expires_in"] == 3600
    assert body["expires"] == int(T0) + 4000 + 3600
    assert body["client_endpoint"] == "http://127.0.0.1:8024/rest/"
    assert body["user_id"] == 3
    assert body["member_id"] == CONFIG.member_id
    assert call(portal, body["access_token"]).status == 200
    assert portal.stats().refreshes == 1
    # The old refresh token is spent; the new one works exactly once.
    reused = refresh(portal, old_refresh)
    assert reused.status == 400
    assert error_code(reused) == "invalid_grant"
    assert refresh(portal, body["refresh_token"]).status == 200
    assert refresh(portal, body["refresh_token"]).status == 400


def test_refresh_errors() -> None:
    portal, _ = make()
    _access, token = portal.issue_oauth_tokens()
    assert error_code(refresh(portal, "unknown")) == "invalid_grant"
    wrong_secret = refresh(portal, token, client_secret="nope")
    assert (wrong_secret.status, error_code(wrong_secret)) == (401, "invalid_client")
    assert error_code(refresh(portal, token, client_id="other.app")) == "invalid_client"
    assert error_code(refresh(portal, token, grant_type="password")) == "invalid_request"
    assert error_code(refresh(portal, "")) == "invalid_request"
    # None of the failures spent the token.
    assert refresh(portal, token).status == 200
    assert portal.stats().refreshes == 1


def test_refresh_token_expires_after_180_days() -> None:
    portal, clock = make()
    _access, token = portal.issue_oauth_tokens()
    clock.now = T0 + 180 * 86400
    assert error_code(refresh(portal, token)) == "invalid_grant"


def test_old_access_token_stays_valid_until_it_expires() -> None:
    portal, _ = make()
    access, token = portal.issue_oauth_tokens()
    refresh(portal, token)
    assert call(portal, access).status == 200


def test_expire_access_tokens_helper() -> None:
    portal, _ = make()
    access, _token = portal.issue_oauth_tokens()
    portal.expire_access_tokens()
    assert error_code(call(portal, access)) == "expired_token"


def test_scaled_refresh_answer_keeps_fractions() -> None:
    portal, _ = make(scale=8)
    _access, token = portal.issue_oauth_tokens()
    body = refresh(portal, token).json()
    assert body["expires_in"] == 450.0
    assert body["expires"] == T0 + 450.0


def test_budget_is_per_application_across_users() -> None:
    portal, _ = make(plan="enterprise", method_costs={"tasks.task.result.list": 200.0})
    first, _ = portal.issue_oauth_tokens(user_id=1)
    second, _ = portal.issue_oauth_tokens(user_id=3)
    assert [call(portal, first).status, call(portal, second).status] == [200, 200]
    assert call(portal, first).status == 200  # 400 <= 480: runs, crosses
    assert call(portal, second).status == 429  # the app's budget, whoever calls


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_token_endpoint_accepts_query_or_form(method: str) -> None:
    portal, _ = make()
    _access, token = portal.issue_oauth_tokens()
    params = urlencode(
        {
            "grant_type": "refresh_token",
            "client_id": CONFIG.client_id,
            "client_secret": CONFIG.client_secret,
            "refresh_token": token,
        }
    )
    if method == "GET":
        request = PortalRequest("GET", "/oauth/token/", query=params)
    else:
        request = PortalRequest("POST", "/oauth/token/", body=params.encode())
    assert portal.handle(request).status == 200
