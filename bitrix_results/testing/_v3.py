"""REST 3.0 methods (``/rest/api/``): parameters, validation and result shapes (api-facts §4, §5).

Each handler takes a :class:`Call` and the decoded JSON body and returns the value of
``result`` (``{"item": ...}``, ``{"items": [...]}`` or ``{"result": true}``, api-facts §4.2),
or raises :class:`~._wire.ApiError` with the exact v3 error body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._wire import (
    ACCESS_DENIED,
    DTO_VALIDATION,
    ENTITY_NOT_FOUND,
    INVALID_FILTER,
    INVALID_ORDER,
    INVALID_PAGINATION,
    INVALID_SELECT,
    JSON,
    REQUEST_FILTER_VALIDATION,
    REQUEST_VALIDATION,
    UNKNOWN_DTO_PROPERTY,
    UNKNOWN_FILTER_OPERATOR,
    ApiError,
    as_v3_int,
    iso,
    v3_error,
)
from ._world import Refusal, Result, World, WorldError
from .config import PortalConfig


@dataclass(frozen=True)
class Call:
    """Who calls, when, against which world and config."""

    world: World
    config: PortalConfig
    user_id: int
    now: float


Handler = Callable[[Call, dict[str, JSON]], JSON]


def refusal_to_v3(error: WorldError, field: str, config: PortalConfig) -> ApiError:
    """Map a domain refusal to the v3 error the method pages document (api-facts §5.2-5.5)."""
    refusal = error.refusal
    if refusal in (Refusal.TASK_NOT_FOUND, Refusal.MESSAGE_NOT_IN_TASK_CHAT):
        # api-facts §5.2/§5.3: "Task not found" and "Message is not from task chat" are
        # REQUESTVALIDATIONEXCEPTION, not ENTITYNOTFOUND.
        return v3_error(REQUEST_VALIDATION, refusal.value, field=field)
    if refusal is Refusal.RESULT_NOT_FOUND:
        if config.missing_result == "access_denied":
            # api-facts §5.5: the method page lists only 403 ACCESSDENIEDEXCEPTION on `id`.
            return v3_error(ACCESS_DENIED, f"Access denied: {field}", status=403, field=field)
        # api-facts §4.2: object not found is 400 ENTITYNOTFOUNDEXCEPTION.
        return v3_error(ENTITY_NOT_FOUND, "Result not found")
    return v3_error(ACCESS_DENIED, f"Access denied: {field}", status=403)


# -- item shape (api-facts §5.1) -----------------------------------------------------------

DEFAULT_FIELDS = (
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
)
SELECTABLE = frozenset((*DEFAULT_FIELDS, "author"))


def render_item(call: Call, result: Result, fields: tuple[str, ...] = DEFAULT_FIELDS) -> JSON:
    offset = call.config.utc_offset_hours
    mine = result.author_id == call.user_id
    item: dict[str, JSON] = {
        "id": result.id,
        "taskId": result.task_id,
        "text": result.text,
        "authorId": result.author_id,
        "createdAt": iso(result.created_at, offset),
        "updatedAt": None if result.updated_at is None else iso(result.updated_at, offset),
        "status": "closed" if result.closed else "open",
        "fileIds": list(result.file_ids),
        # api-facts §5.4/§5.5: only the author may edit or delete a result.
        "rights": {"edit": mine, "remove": mine},
        "messageId": result.message_id,
    }
    if "author" in fields:
        # api-facts §5.1: the shape of ``author`` is unconfirmed; id and name are a guess.
        author = call.world.users.get(result.author_id)
        item["author"] = {"id": result.author_id, "name": author.name if author else ""}
    if fields is DEFAULT_FIELDS:
        return item
    return {name: item[name] for name in fields}


# -- helpers ---------------------------------------------------------------------------


def _fields(params: Mapping[str, JSON]) -> dict[str, JSON]:
    fields = params.get("fields")
    if not isinstance(fields, dict):
        raise v3_error(REQUEST_VALIDATION, "Required field `fields` is missing", field="fields")
    return fields


def _only(fields: Mapping[str, JSON], allowed: tuple[str, ...]) -> None:
    for name in fields:
        if name not in allowed:
            raise v3_error(UNKNOWN_DTO_PROPERTY, f"Unknown field `{name}` for entity `ResultDto`")


def _required(fields: Mapping[str, JSON], name: str) -> JSON:
    """A required field of ``fields``: api-facts §5.2, a missing one is DTOVALIDATIONEXCEPTION."""
    value = fields.get(name)
    if value is None:
        raise v3_error(DTO_VALIDATION, f"Required field `{name}` is missing", field=name)
    return value


def _not_fillable(fields: Mapping[str, JSON], name: str) -> None:
    """api-facts §5.2: a read-only field sent for writing is DTOVALIDATIONEXCEPTION."""
    if name in fields:
        raise v3_error(DTO_VALIDATION, f"Field `{name}` is not available for filling", field=name)


def _positive_int(value: JSON, field: str) -> int:
    if value is None:
        raise v3_error(REQUEST_VALIDATION, f"Required field `{field}` is missing", field=field)
    number = as_v3_int(value)
    if number is None or number <= 0:
        raise v3_error(
            REQUEST_VALIDATION, f"Field `{field}` must be a positive integer", field=field
        )
    return number


def _text(fields: Mapping[str, JSON]) -> str:
    text = fields.get("text")
    # api-facts §5.2: a missing required field is DTOVALIDATIONEXCEPTION; a wrong type is a
    # request validation error.
    if text is None or text == "":
        raise v3_error(DTO_VALIDATION, "Required field `text` is missing", field="text")
    if not isinstance(text, str):
        raise v3_error(REQUEST_VALIDATION, "Field `text` must be a string", field="text")
    return text


def _result_id(params: Mapping[str, JSON]) -> int:
    """api-facts §5.5: the documented validation messages of ``id`` / ``filter``."""
    has_id, has_filter = "id" in params, "filter" in params
    if has_id and has_filter:
        raise v3_error(
            REQUEST_VALIDATION,
            "Only one of the values must be provided: id, filter",
            validation=True,
        )
    if not has_id and not has_filter:
        raise v3_error(
            REQUEST_VALIDATION,
            "At least one required field must be filled: id, filter",
            validation=True,
        )
    if not has_id:
        # Deleting by filter is unconfirmed (api-facts §5.5): refuse rather than guess.
        raise v3_error(REQUEST_VALIDATION, "Required field `id` is missing", field="id")
    return _positive_int(params["id"], "id")


# -- methods ---------------------------------------------------------------------------


def add(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.add (api-facts §5.2)."""
    fields = _fields(params)
    # api-facts §5.2 (method page): `fileIds` sent, or a required field missing, is
    # DTOVALIDATIONEXCEPTION; a `taskId` that is not a positive int is request validation.
    _not_fillable(fields, "fileIds")
    _only(fields, ("taskId", "text"))
    task_id = _positive_int(_required(fields, "taskId"), "taskId")
    text = _text(fields)
    try:
        task = call.world.task_for(call.user_id, task_id)
    except WorldError as error:
        raise refusal_to_v3(error, "taskId", call.config) from None
    comment_id = None
    if not call.config.new_task_card:
        # With the old card a result is a pinned comment (api-facts §5), so adding one
        # writes the comment too; v2 list then reports its commentId.
        comment_id = call.world.add_comment(task.id, call.user_id, text).id
    result = call.world.create_result(task, text, call.user_id, call.now, comment_id=comment_id)
    return {"item": render_item(call, result)}


def add_from_chat_message(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.addfromchatmessage (api-facts §5.3)."""
    fields = _fields(params)
    # The method page: `fileIds` is "not available for filling" and a missing
    # `messageId` is DTOVALIDATIONEXCEPTION, like add's (api-facts §5.2, §5.3).
    _not_fillable(fields, "fileIds")
    _only(fields, ("messageId",))
    message_id = _positive_int(_required(fields, "messageId"), "messageId")
    try:
        message, task = call.world.message_for(call.user_id, message_id)
    except WorldError as error:
        raise refusal_to_v3(error, "messageId", call.config) from None
    result = call.world.create_result(
        task, message.text, call.user_id, call.now, message_id=message.id
    )
    return {"item": render_item(call, result)}


def update(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.update (api-facts §5.4): only ``text``, only by the author."""
    result_id = _result_id(params)
    fields = _fields(params)
    # The method page: `fileIds` is DTOVALIDATIONEXCEPTION ("not available for
    # filling"), any other field UNKNOWNDTOPROPERTYEXCEPTION (api-facts §5.4).
    _not_fillable(fields, "fileIds")
    _only(fields, ("text",))
    text = _text(fields)
    try:
        result = call.world.result_for_author(call.user_id, result_id)
    except WorldError as error:
        raise refusal_to_v3(error, "id", call.config) from None
    call.world.update_result(result, text, call.now)
    return {"item": render_item(call, result)}


def delete(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.delete (api-facts §5.5): ``{"result": true}``."""
    result_id = _result_id(params)
    try:
        result = call.world.result_for_author(call.user_id, result_id)
    except WorldError as error:
        raise refusal_to_v3(error, "id", call.config) from None
    call.world.delete_result(result)
    return {"result": True}


def chat_message_send(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.chat.message.send (api-facts §5.9): returns no messageId."""
    fields = _fields(params)
    task_id = _positive_int(fields.get("taskId"), "taskId")
    text = fields.get("text")
    if not isinstance(text, str) or not text:
        raise v3_error(REQUEST_VALIDATION, "Required field `text` is missing", field="text")
    try:
        task = call.world.task_for(call.user_id, task_id)
    except WorldError as error:
        raise refusal_to_v3(error, "taskId", call.config) from None
    call.world.add_message(task.id, call.user_id, text)
    return {"result": True}


# -- list (api-facts §5.6 v3, api-facts §4.3) ------------------------------------------

FILTERABLE = ("taskId", "id", "authorId", "status", "messageId")
OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "in", "between")
ORDERABLE = ("id", "authorId", "createdAt", "updatedAt", "status", "messageId")

Predicate = Callable[[Result], bool]


def _value_of(result: Result, field: str) -> Any:
    match field:
        case "taskId":
            return result.task_id
        case "id":
            return result.id
        case "authorId":
            return result.author_id
        case "status":
            return "closed" if result.closed else "open"
        case "messageId":
            return result.message_id
        case "createdAt":
            return result.created_at
        case "updatedAt":
            return result.updated_at
    raise AssertionError(field)  # pragma: no cover - callers validate field names


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "in":
        return bool(left in right)
    if left is None:
        return False
    if op == "between":
        return bool(right[0] <= left <= right[1])
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    return bool(left <= right)


def _check_value(field: str, value: JSON) -> None:
    # api-facts §5.6 (method page): a filter value of the wrong type is
    # REQUESTVALIDATIONEXCEPTION, for `taskId` and every other field alike.
    if field == "status":
        if not isinstance(value, str):
            raise v3_error(REQUEST_VALIDATION, "Field `status` must be a string", field="status")
        if value not in ("open", "closed"):
            raise v3_error(INVALID_FILTER, "Field `status` must be `open` or `closed`")
        return
    if field == "messageId" and value is None:
        return
    if as_v3_int(value) is None:
        raise v3_error(REQUEST_VALIDATION, f"Field `{field}` must be an integer", field=field)


@dataclass(frozen=True)
class _Condition:
    field: str
    op: str
    value: JSON


def _parse_condition(raw: JSON) -> _Condition:
    if not isinstance(raw, list) or len(raw) not in (2, 3) or not isinstance(raw[0], str):
        raise v3_error(INVALID_FILTER, "A condition is [field, operator, value] or [field, value]")
    field = raw[0]
    op, value = ("=", raw[1]) if len(raw) == 2 else (raw[1], raw[2])
    if field not in FILTERABLE:
        raise v3_error(UNKNOWN_DTO_PROPERTY, f"Unknown field `{field}` for entity `ResultDto`")
    if not isinstance(op, str) or op.lower() not in OPERATORS:
        raise v3_error(UNKNOWN_FILTER_OPERATOR, f"Unknown filter operator `{op}`")
    op = op.lower()
    if op == "in":
        if not isinstance(value, list) or not value:
            raise v3_error(INVALID_FILTER, "Operator `in` needs a non-empty array")
        for item in value:
            _check_value(field, item)
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise v3_error(INVALID_FILTER, "Operator `between` needs [from, to]")
        for item in value:
            _check_value(field, item)
    else:
        _check_value(field, value)
    return _Condition(field, op, value)


def _parse_filter(raw: JSON, conditions: list[_Condition]) -> Predicate:
    """An AND of conditions and ``{"logic": "or"|"and", "conditions": [...]}`` groups.

    Top-level conditions are appended to ``conditions`` (they are what the ``taskId``
    requirement and the access check look at).
    """
    if not isinstance(raw, list):
        raise v3_error(INVALID_FILTER, "Filter must be an array of conditions")
    parts: list[Predicate] = []
    for item in raw:
        if isinstance(item, dict):
            logic = str(item.get("logic", "and")).lower()
            inner = item.get("conditions")
            if logic not in ("and", "or") or not isinstance(inner, list):
                raise v3_error(INVALID_FILTER, "A group is {logic: and|or, conditions: [...]}")
            members = [_parse_filter([c], []) for c in inner]
            parts.append(_any_of(members) if logic == "or" else _all_of(members))
            continue
        condition = _parse_condition(item)
        conditions.append(condition)
        parts.append(_matches(condition))
    return _all_of(parts)


def _matches(condition: _Condition) -> Predicate:
    def predicate(result: Result) -> bool:
        return _compare(condition.op, _value_of(result, condition.field), condition.value)

    return predicate


def _all_of(parts: list[Predicate]) -> Predicate:
    return lambda result: all(part(result) for part in parts)


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda result: any(part(result) for part in parts)


def _parse_order(raw: JSON) -> list[tuple[str, bool]]:
    if raw is None:
        return [("id", False)]
    if not isinstance(raw, dict):
        raise v3_error(INVALID_ORDER, "Order must be an object {field: ASC|DESC}")
    order: list[tuple[str, bool]] = []
    for field, direction in raw.items():
        if field not in SELECTABLE:
            # api-facts §5.6 (method page): a field the entity does not have is
            # UNKNOWNDTOPROPERTYEXCEPTION; a known one that cannot sort is invalid order.
            raise v3_error(UNKNOWN_DTO_PROPERTY, f"Unknown field `{field}` for entity `ResultDto`")
        if field not in ORDERABLE:
            raise v3_error(INVALID_ORDER, f"Field `{field}` is not sortable")
        if not isinstance(direction, str) or direction.upper() not in ("ASC", "DESC"):
            raise v3_error(INVALID_ORDER, "Order direction must be ASC or DESC")
        order.append((field, direction.upper() == "DESC"))
    return order or [("id", False)]


def _parse_select(raw: JSON, config: PortalConfig) -> tuple[str, ...]:
    # api-facts §4.3: tasks.task.list returns only `id` without `select`; the result
    # list's page says "the default fields". The switch picks the reading.
    default = ("id",) if config.list_without_select == "id_only" else DEFAULT_FIELDS
    if raw is None:
        return default
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise v3_error(INVALID_SELECT, "Select must be an array of field names")
    for name in raw:
        if "." in name:
            # api-facts §4.2: a related field in select is UNKNOWNDTOPROPERTYEXCEPTION ...
            raise v3_error(UNKNOWN_DTO_PROPERTY, f"Unknown field `{name}` for entity `ResultDto`")
    # ... while an unknown field of the object itself is silently dropped (or, under
    # the other reading, refused like a related one).
    if config.unknown_select == "error":
        for name in raw:
            if name not in SELECTABLE:
                raise v3_error(
                    UNKNOWN_DTO_PROPERTY, f"Unknown field `{name}` for entity `ResultDto`"
                )
    chosen = tuple(dict.fromkeys(name for name in raw if name in SELECTABLE))
    return chosen or default


def _parse_pagination(raw: JSON, cap: int) -> tuple[int, int]:
    """``(start, limit)`` from ``{page, limit, offset}``; limit silently capped at ``cap``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise v3_error(INVALID_PAGINATION, "Pagination must be an object")
    values: dict[str, int] = {}
    for name, default in (("page", 1), ("limit", cap), ("offset", 0)):
        value = raw.get(name, default)
        number = as_v3_int(value)
        if number is None:
            # api-facts §5.6: "page, limit and offset must be numbers".
            raise v3_error(INVALID_PAGINATION, f"Pagination `{name}` must be a number")
        values[name] = number
    if values["limit"] < 1 or values["page"] < 1 or values["offset"] < 0:
        raise v3_error(INVALID_PAGINATION, "Pagination values out of range")
    # api-facts §4.3: no documented maximum; cap like tasks.task.list does, silently.
    limit = min(values["limit"], cap)
    return (values["page"] - 1) * limit + values["offset"], limit


def _sort_key(field: str) -> Callable[[Result], tuple[bool, Any]]:
    # None (a null messageId/updatedAt) sorts first ascending.
    return lambda r: (_value_of(r, field) is not None, _value_of(r, field))


def list_results(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.list, the v3 one (api-facts §5.6): filter/order/select/pagination."""
    raw_filter = params.get("filter")
    if not raw_filter:
        raise v3_error(REQUEST_VALIDATION, "Required field `filter` is missing", field="filter")
    conditions: list[_Condition] = []
    predicate = _parse_filter(raw_filter, conditions)
    task_conditions = [c for c in conditions if c.field == "taskId"]
    if not task_conditions:
        raise v3_error(
            REQUEST_FILTER_VALIDATION, "Filter must contain `taskId`", field="filter.taskId"
        )
    order = _parse_order(params.get("order"))
    select = _parse_select(params.get("select"), call.config)
    start, limit = _parse_pagination(params.get("pagination"), call.config.list_page_cap)

    world = call.world
    named: set[int] = set()
    for condition in task_conditions:
        if condition.op == "=":
            named.add(int(condition.value))
        elif condition.op == "in":
            named.update(int(v) for v in condition.value)
    for task_id in sorted(named):
        task = world.tasks.get(task_id)
        # api-facts §5.6: 403 ACCESSDENIEDEXCEPTION on taskId (v2 says the same for a task
        # that does not exist: no access).
        if task is None or not world.can_see(call.user_id, task):
            raise v3_error(ACCESS_DENIED, "Access denied: taskId", status=403)
    if named:
        candidates = [r for task_id in sorted(named) for r in world.results_of(task_id)]
    else:
        candidates = [
            r for r in world.results.values() if world.can_see(call.user_id, world.tasks[r.task_id])
        ]
    matching = [r for r in candidates if predicate(r)]
    for field, descending in reversed(order):
        matching.sort(key=_sort_key(field), reverse=descending)
    page = matching[start : start + limit]
    return {"items": [render_item(call, r, select) for r in page]}


# -- registry --------------------------------------------------------------------------

METHODS: Mapping[str, Handler] = {
    "tasks.task.result.add": add,
    "tasks.task.result.addfromchatmessage": add_from_chat_message,
    "tasks.task.result.update": update,
    "tasks.task.result.delete": delete,
    "tasks.task.result.list": list_results,
    "tasks.task.chat.message.send": chat_message_send,
}

#: api-facts §4.1: Idempotency-Key applies to methods that create, modify or delete.
WRITES = frozenset(
    {
        "tasks.task.result.add",
        "tasks.task.result.addfromchatmessage",
        "tasks.task.result.update",
        "tasks.task.result.delete",
        "tasks.task.chat.message.send",
    }
)
