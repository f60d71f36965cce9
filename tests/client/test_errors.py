"""Portal error bodies become typed errors: code first, HTTP status second (api-facts §4.2, §6).

The mapping is tested directly through ``portal_error`` and the codec's
``decode_reply`` (the one place bodies become errors), then end to end through
the client for errors the scheduler does not retry.
"""

from __future__ import annotations

import pytest

from bitrix_results import (
    AccessDeniedError,
    AuthError,
    BatchError,
    BitrixError,
    ExpiredTokenError,
    IdempotencyKeyError,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
    OperatingLimitError,
    PortalError,
    RateLimitError,
    ServerError,
    ServiceBlockedError,
    ValidationDetail,
)
from bitrix_results._transport.codec import decode_reply
from bitrix_results.errors import portal_error

from ._portal import WEBHOOK, MockPortal, item, ok, v2_error, v3_error

V3 = "BITRIX_REST_V3_EXCEPTION_"

# (code, HTTP status, message, class) for every documented code (api-facts §4.2, §5, §6).
DOCUMENTED: list[tuple[str, int, str, type[PortalError]]] = [
    ("QUERY_LIMIT_EXCEEDED", 503, "Too many requests", RateLimitError),
    (
        "OPERATION_TIME_LIMIT",
        429,
        "Method is blocked due to operation time limit.",
        OperatingLimitError,
    ),
    ("expired_token", 401, "The access token provided has expired.", ExpiredTokenError),
    ("NO_AUTH_FOUND", 401, "Wrong authorization data", InvalidCredentialsError),
    ("insufficient_scope", 403, "The request requires higher privileges", InvalidCredentialsError),
    ("INVALID_CREDENTIALS", 403, "Invalid request credentials", InvalidCredentialsError),
    ("ACCESS_DENIED", 403, "REST API is available only on commercial plans", AccessDeniedError),
    (
        "user_access_error",
        403,
        "The user does not have access to the application",
        AccessDeniedError,
    ),
    ("OVERLOAD_LIMIT", 503, "REST API is blocked due to overload", ServiceBlockedError),
    ("PORTAL_DELETED", 500, "Portal was deleted", ServiceBlockedError),
    ("ERROR_METHOD_NOT_FOUND", 404, "Method not found!", NotFoundError),
    ("ERROR_MANIFEST_IS_NOT_AVAILABLE", 404, "Manifest is not available", NotFoundError),
    ("ERROR_BATCH_LENGTH_EXCEEDED", 400, "Max batch length exceeded", BatchError),
    ("ERROR_BATCH_METHOD_NOT_ALLOWED", 405, "Method is not allowed for batch usage", BatchError),
    ("INVALID_REQUEST", 400, "Https required.", InvalidRequestError),
    ("INTERNAL_SERVER_ERROR", 500, "Internal server error", ServerError),
    ("ERROR_UNEXPECTED_ANSWER", 500, "Server returned an unexpected response", ServerError),
    (V3 + "VALIDATION_REQUESTVALIDATIONEXCEPTION", 400, "Validation error", InvalidRequestError),
    (V3 + "VALIDATION_DTOVALIDATIONEXCEPTION", 400, "Validation error", InvalidRequestError),
    (V3 + "INVALIDJSONEXCEPTION", 400, "Invalid JSON", InvalidRequestError),
    (V3 + "UNKNOWNDTOPROPERTYEXCEPTION", 400, "Unknown field", InvalidRequestError),
    (V3 + "INVALIDPAGINATIONEXCEPTION", 400, "Bad pagination", InvalidRequestError),
    (V3 + "ACCESSDENIEDEXCEPTION", 403, "Access denied", AccessDeniedError),
    (V3 + "INSUFFICIENTSCOPEEXCEPTION", 403, "Insufficient scope", InvalidCredentialsError),
    (V3 + "ENTITYNOTFOUNDEXCEPTION", 400, "Entity not found", NotFoundError),
    (V3 + "METHODNOTFOUNDEXCEPTION", 404, "Method not found", NotFoundError),
    (V3 + "IDEMPOTENCYKEYREUSEDEXCEPTION", 422, "Key reused", IdempotencyKeyError),
    (V3 + "INVALIDIDEMPOTENCYKEYEXCEPTION", 400, "Invalid key", IdempotencyKeyError),
    # REST v2 task methods: numeric codes as strings, the text tells "0" apart (api-facts §5.6-5.8).
    ("0", 400, "Access denied.", AccessDeniedError),
    ("0", 400, "Comment not found.", NotFoundError),
    ("0", 400, "Result already exists.", InvalidRequestError),
    ("100", 400, "Wrong type of parameter", InvalidRequestError),
    ("ERROR_CORE", 400, "TASKS_ERROR_EXCEPTION_#4; Action is not allowed", InvalidRequestError),
]


@pytest.mark.parametrize(
    ("code", "status", "message", "cls"),
    DOCUMENTED,
    ids=[f"{c}-{s}-{m[:12]}" for c, s, m, _ in DOCUMENTED],
)
def test_portal_error_documented_codes(
    code: str, status: int, message: str, cls: type[PortalError]
) -> None:
    error = portal_error(code=code, message=message, status=status, method="m.x")

    assert type(error) is cls
    assert isinstance(error, PortalError)
    assert isinstance(error, BitrixError)
    assert (error.code, error.status, error.message, error.method) == (code, status, message, "m.x")
    assert error.validation == ()
    assert str(error) == f"m.x: {code} (HTTP {status}): {message}"


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        # b24pysdk sees these under other statuses than the docs (api-facts §6); the code decides.
        ("insufficient_scope", 401, InvalidCredentialsError),
        ("INVALID_CREDENTIALS", 401, InvalidCredentialsError),
        ("PORTAL_DELETED", 410, ServiceBlockedError),
        # A code contradicting its status: the code wins.
        ("QUERY_LIMIT_EXCEEDED", 500, RateLimitError),
        ("OPERATION_TIME_LIMIT", 503, OperatingLimitError),
        ("OVERLOAD_LIMIT", 503, ServiceBlockedError),
        ("expired_token", 400, ExpiredTokenError),
        ("ACCESS_DENIED", 500, AccessDeniedError),
        (V3 + "ENTITYNOTFOUNDEXCEPTION", 400, NotFoundError),
        (V3 + "IDEMPOTENCYKEYREUSEDEXCEPTION", 400, IdempotencyKeyError),
        (V3 + "SOMENEWEXCEPTION", 500, InvalidRequestError),
    ],
)
def test_code_wins_over_status(code: str, status: int, cls: type[PortalError]) -> None:
    assert type(portal_error(code=code, message="m", status=status)) is cls


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, InvalidCredentialsError),
        (403, AccessDeniedError),
        (404, NotFoundError),
        (405, BatchError),
        (410, ServiceBlockedError),
        (422, InvalidRequestError),
        (429, OperatingLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (418, PortalError),
    ],
)
@pytest.mark.parametrize("code", ["SOMETHING_NEW", ""])
def test_unknown_code_falls_back_to_status(code: str, status: int, cls: type[PortalError]) -> None:
    assert type(portal_error(code=code, message="m", status=status)) is cls


def test_error_tree() -> None:
    assert issubclass(ExpiredTokenError, AuthError)
    assert issubclass(InvalidCredentialsError, AuthError)
    for cls in (
        RateLimitError,
        OperatingLimitError,
        AuthError,
        AccessDeniedError,
        NotFoundError,
        InvalidRequestError,
        IdempotencyKeyError,
        BatchError,
        ServiceBlockedError,
        ServerError,
    ):
        assert issubclass(cls, PortalError)
        assert issubclass(cls, BitrixError)


# -- the codec: bodies to errors ---------------------------------------------------------


def test_decode_v3_validation_error_with_and_without_field() -> None:
    body = ok_bytes(
        v3_error(
            V3 + "VALIDATION_REQUESTVALIDATIONEXCEPTION",
            "Validation error",
            validation=[
                {"field": "taskId", "message": "Required field `taskId` is missing"},
                {"message": "At least one required field must be filled: id, filter"},
            ],
        )
    )
    with pytest.raises(InvalidRequestError) as info:
        decode_reply(body, status=400, method="tasks.task.result.add")

    error = info.value
    assert error.validation == (
        ValidationDetail(message="Required field `taskId` is missing", field="taskId"),
        ValidationDetail(message="At least one required field must be filled: id, filter"),
    )
    assert error.validation[1].field is None
    assert str(error) == (
        "tasks.task.result.add: BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION"
        " (HTTP 400): Validation error [taskId: Required field `taskId` is missing;"
        " At least one required field must be filled: id, filter]"
    )


@pytest.mark.parametrize(("code", "status", "message", "cls"), DOCUMENTED[:17])
def test_decode_v2_style_system_errors(
    code: str, status: int, message: str, cls: type[PortalError]
) -> None:
    body = ok_bytes(v2_error(code, message))
    with pytest.raises(cls) as info:
        decode_reply(body, status=status, method="tasks.task.result.list")
    assert type(info.value) is cls
    assert (info.value.code, info.value.message) == (code, message)


@pytest.mark.parametrize(
    ("description", "cls"),
    [
        ("Access denied.", AccessDeniedError),
        ("Comment not found.", NotFoundError),
        ("Result already exists.", InvalidRequestError),
    ],
)
def test_decode_v2_code_zero(description: str, cls: type[PortalError]) -> None:
    with pytest.raises(cls) as info:
        decode_reply(ok_bytes(v2_error("0", description)), status=400, method="m")
    assert info.value.code == "0"


def test_decode_error_body_on_http_200() -> None:
    # An error body wins even when the status says OK.
    with pytest.raises(RateLimitError):
        decode_reply(ok_bytes(v2_error("QUERY_LIMIT_EXCEEDED")), status=200, method="m")


def test_decode_status_without_error_body() -> None:
    # A 4xx/5xx with a JSON body that carries no error: the status decides.
    with pytest.raises(NotFoundError) as info:
        decode_reply(b"{}", status=404, method="m")
    assert info.value.status == 404


def ok_bytes(body: object) -> bytes:
    import msgspec

    return msgspec.json.encode(body)


# -- end to end through the client --------------------------------------------------------


async def test_client_validation_error(mock: MockPortal) -> None:
    body = v3_error(
        V3 + "VALIDATION_REQUESTVALIDATIONEXCEPTION",
        "Task not found",
        validation=[{"field": "taskId", "message": "Task not found"}, {"message": "Check input"}],
    )
    mock.post(WEBHOOK.url("v3", "tasks.task.result.add"), status=400, payload=body)

    async with WEBHOOK.make() as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.add(42, "Done")

    assert info.value.status == 400
    assert info.value.method == "tasks.task.result.add"
    assert [d.field for d in info.value.validation] == ["taskId", None]
    # A refusal is final: not retried.
    assert len(mock.sent()) == 1


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, V3 + "ACCESSDENIEDEXCEPTION", AccessDeniedError),
        (400, V3 + "ENTITYNOTFOUNDEXCEPTION", NotFoundError),
        (422, V3 + "IDEMPOTENCYKEYREUSEDEXCEPTION", IdempotencyKeyError),
        (400, V3 + "INVALIDIDEMPOTENCYKEYEXCEPTION", IdempotencyKeyError),
        (404, "ERROR_METHOD_NOT_FOUND", NotFoundError),
        (401, "NO_AUTH_FOUND", InvalidCredentialsError),
        (403, "insufficient_scope", InvalidCredentialsError),
        (403, "ACCESS_DENIED", AccessDeniedError),
    ],
)
async def test_client_v3_errors(
    mock: MockPortal, status: int, code: str, cls: type[PortalError]
) -> None:
    body = v3_error(code, "refused") if code.startswith(V3) else v2_error(code, "refused")
    mock.post(WEBHOOK.url("v3", "tasks.task.result.delete"), status=status, payload=body)

    async with WEBHOOK.make() as client:
        with pytest.raises(cls) as info:
            await client.delete(7)

    assert type(info.value) is cls
    assert (info.value.code, info.value.status) == (code, status)
    assert len(mock.sent()) == 1


@pytest.mark.parametrize(
    ("description", "cls"),
    [
        ("Access denied.", AccessDeniedError),
        ("Comment not found.", NotFoundError),
        ("Result already exists.", InvalidRequestError),
    ],
)
async def test_client_v2_errors(mock: MockPortal, description: str, cls: type[PortalError]) -> None:
    mock.post(
        WEBHOOK.url("v2", "tasks.task.result.addFromComment"),
        status=400,
        payload=v2_error("0", description),
    )
    async with WEBHOOK.make() as client:
        with pytest.raises(cls) as info:
            await client.add_from_comment(100)
    assert info.value.message == description
    assert len(mock.sent()) == 1


async def test_client_v2_type_error(mock: MockPortal) -> None:
    mock.post(
        WEBHOOK.url("v2", "tasks.task.result.list"), status=400, payload=v2_error("100", "bad type")
    )
    async with WEBHOOK.make() as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.list_legacy(42)
    assert info.value.code == "100"


async def test_client_service_blocked_is_not_retried(mock: MockPortal) -> None:
    # OVERLOAD_LIMIT is a 503 like the rate limit, but only support can lift it (api-facts §6).
    mock.post(
        WEBHOOK.url("v3", "tasks.task.result.list"),
        status=503,
        payload=v2_error("OVERLOAD_LIMIT", "REST API is blocked due to overload"),
        repeat=True,
    )
    async with WEBHOOK.make() as client:
        with pytest.raises(ServiceBlockedError):
            await client.list(42)
    assert len(mock.sent()) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "QUERY_LIMIT_EXCEEDED"), (429, "OPERATION_TIME_LIMIT")],
)
async def test_client_limit_error_then_success(mock: MockPortal, status: int, code: str) -> None:
    # Refused before executing: the scheduler sends the call again (design §2.4).
    url = WEBHOOK.url("v3", "tasks.task.result.list")
    mock.post(url, status=status, payload=v2_error(code, "limit"))
    mock.post(url, payload=ok({"items": [item(1)]}))

    async with WEBHOOK.make() as client:
        results = await client.list(42)
        stats = client.statistics()

    assert [r.id for r in results] == [1]
    assert len(mock.sent()) == 2
    assert (stats.rate_limit_hits, stats.operating_limit_hits) == (
        (1, 0) if status == 503 else (0, 1)
    )
