"""Idempotency-Key on REST 3.0 writes (api-facts §4.1)."""

from __future__ import annotations

import pytest

from bitrix_results.testing import PortalRequest

from ._helpers import ADMIN_V3, T0, V2, V3, add, error_code, make, v2, v3

KEY = {"Idempotency-Key": "import-42/row-7"}


def test_replay_is_byte_for_byte_and_not_executed_again() -> None:
    portal, clock = make()
    first = add(portal, 1, "once", headers=KEY)
    clock.advance(10)
    second = add(portal, 1, "once", headers=KEY)
    assert second.status == 200
    assert second.body == first.body  # including the original ``time``
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(portal.ledger.created) == 1
    assert len(portal.ledger.calls_of("tasks.task.result.add")) == 1
    assert portal.ledger.created[0].idempotency_key == "import-42/row-7"
    stats = portal.stats()
    assert (stats.executed, stats.replays, stats.duplicates) == (1, 1, 0)


def test_replay_counts_in_the_bucket_but_costs_no_operating_time() -> None:
    portal, _clock = make()
    add(portal, 1, "once", headers=KEY)
    before = portal.operating("tasks.task.result.add").operating
    add(portal, 1, "once", headers=KEY)
    assert portal.operating("tasks.task.result.add").operating == before
    assert portal.bucket_level() == 2


def test_same_key_with_another_body_is_key_reused() -> None:
    portal, _clock = make()
    add(portal, 1, "once", headers=KEY)
    response = add(portal, 1, "different", headers=KEY)
    assert response.status == 422
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_IDEMPOTENCYKEYREUSEDEXCEPTION"
    assert len(portal.ledger.created) == 1


def test_key_order_in_the_body_does_not_matter() -> None:
    portal, _clock = make()
    add(portal, 1, "once", headers=KEY)
    reordered = PortalRequest.post_json(
        V3 + "tasks.task.result.add", {"fields": {"text": "once", "taskId": 1}}, headers=KEY
    )
    assert portal.handle(reordered).headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("key", ["", "x" * 256, "ключ", "tab\there"])
def test_malformed_key_is_refused_before_execution(key: str) -> None:
    portal, _clock = make()
    response = add(portal, 1, "x", headers={"Idempotency-Key": key})
    assert response.status == 400
    assert error_code(response) == "BITRIX_REST_V3_EXCEPTION_INVALIDIDEMPOTENCYKEYEXCEPTION"
    assert portal.ledger.calls == ()


def test_longest_valid_key() -> None:
    portal, _clock = make()
    assert add(portal, 1, "x", headers={"Idempotency-Key": "~" * 255}).status == 200


def test_errors_are_not_stored() -> None:
    portal, _clock = make()
    assert add(portal, 777_777, "x", headers=KEY).status == 400  # Task not found
    portal.add_task(777_777)
    retry = add(portal, 777_777, "x", headers=KEY)
    assert retry.status == 200
    assert "Idempotent-Replayed" not in retry.headers


def test_keys_are_scoped_per_method_and_per_credential() -> None:
    portal, _clock = make()
    add(portal, 1, "x", headers=KEY)
    other_user = add(portal, 1, "x", headers=KEY, base=ADMIN_V3)
    assert "Idempotent-Replayed" not in other_user.headers
    sent = v3(
        portal, "tasks.task.chat.message.send", {"fields": {"taskId": 1, "text": "x"}}, headers=KEY
    )
    assert sent.status == 200
    assert "Idempotent-Replayed" not in sent.headers
    assert len(portal.ledger.created) == 2


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("tasks.task.result.update", {"id": 1, "fields": {"text": "edited"}}),
        ("tasks.task.result.delete", {"id": 1}),
        ("tasks.task.chat.message.send", {"fields": {"taskId": 1, "text": "hi"}}),
    ],
)
def test_every_v3_write_replays(method: str, payload: object) -> None:
    portal, _clock = make()
    add(portal, 1, "x")
    first = v3(portal, method, payload, headers=KEY)
    second = v3(portal, method, payload, headers=KEY)
    assert first.status == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(portal.ledger.calls_of(method)) == 1


def test_reads_ignore_the_header() -> None:
    portal, _clock = make()
    payload = {"filter": [["taskId", 1]]}
    v3(portal, "tasks.task.result.list", payload, headers={"Idempotency-Key": ""})
    response = v3(portal, "tasks.task.result.list", payload, headers={"Idempotency-Key": ""})
    assert response.status == 200


def test_v2_ignores_the_header() -> None:
    portal, _clock = make()
    comment = portal.add_comment(1)
    request = PortalRequest.post_json(
        V2 + "tasks.task.result.addFromComment", {"commentId": comment}, headers=KEY
    )
    assert portal.handle(request).status == 200
    again = portal.handle(request)
    assert again.status == 400  # executed again: "Result already exists."
    assert "Idempotent-Replayed" not in again.headers
    assert v2(portal, "tasks.task.result.list", {"taskId": 1}).status == 200


def test_replay_survives_a_token_refresh() -> None:
    portal, _clock = make()
    first_token, refresh = portal.issue_oauth_tokens()
    fields = {"taskId": 1, "text": "x"}
    path = "/rest/api/tasks.task.result.add"
    portal.handle(
        PortalRequest.post_json(path, {"fields": fields, "auth": first_token}, headers=KEY)
    )
    second_token, _ = portal.issue_oauth_tokens()
    retry = portal.handle(
        PortalRequest.post_json(path, {"fields": fields, "auth": second_token}, headers=KEY)
    )
    # ``auth`` is not part of the request identity: a refreshed token still replays.
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert refresh


def test_entries_expire_after_24_hours() -> None:
    portal, clock = make()
    add(portal, 1, "x", headers=KEY)
    clock.now = T0 + 86_399
    assert add(portal, 1, "x", headers=KEY).headers.get("Idempotent-Replayed") == "true"
    clock.now = T0 + 86_400
    assert "Idempotent-Replayed" not in add(portal, 1, "x", headers=KEY).headers


def test_a_batch_replays_as_a_whole() -> None:
    portal, _clock = make()
    commands = [
        {"method": "tasks.task.result.add", "query": {"fields": {"taskId": 1, "text": f"r{n}"}}}
        for n in range(3)
    ]
    first = v3(portal, "batch", commands, headers=KEY)
    second = v3(portal, "batch", commands, headers=KEY)
    assert second.body == first.body
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(portal.ledger.created) == 3
    changed = v3(portal, "batch", commands[:2], headers=KEY)
    assert changed.status == 422
