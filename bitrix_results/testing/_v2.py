"""Old REST (``/rest/``) task-result methods (api-facts §5.6 v2, api-facts §5.7, §5.8).

Errors are v2 bodies ``{"error": "<code>", "error_description": "<text>"}`` with HTTP
400; the codes of these methods are the strings ``"0"`` and ``"100"``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from ._v3 import Call, Handler
from ._wire import JSON, ApiError, as_v2_int, iso, v2_error
from ._world import Refusal, Result, WorldError


def _int_param(params: Mapping[str, JSON], name: str) -> int:
    value = as_v2_int(params.get(name))
    if value is None or value <= 0:
        # api-facts §5.6-5.8: code "100" is a bad type for the parameter.
        raise v2_error("100", f"Wrong type of parameter {name}: integer expected")
    return value


def _refusal_to_v2(error: WorldError) -> ApiError:
    if error.refusal is Refusal.NOTHING_TO_UNPIN:
        # api-facts §5.8: the example ERROR_CORE body.
        return _action_not_allowed()
    if error.refusal in (Refusal.COMMENT_NOT_FOUND, Refusal.RESULT_ALREADY_EXISTS):
        return v2_error("0", error.refusal.value)
    return v2_error("0", "Access denied.")


def _action_not_allowed() -> ApiError:
    return v2_error(
        "ERROR_CORE", "TASKS_ERROR_EXCEPTION_#4; Action is not allowed; 4/TE/ACTION_NOT_ALLOWED"
    )


_BB_TAGS = re.compile(r"\[(/?)(b|i|u|s)\]", re.IGNORECASE)


def _formatted(text: str) -> str:
    """``formattedText``: BB-code rendered as HTML (api-facts §5.1), the common tags only."""
    escaped = html.escape(text, quote=False)
    return _BB_TAGS.sub(lambda m: f"<{m.group(1)}{m.group(2).lower()}>", escaped).replace(
        "\n", "<br />"
    )


def render_item(call: Call, result: Result, *, files: bool = True) -> JSON:
    """api-facts §5.1 v2 item: ``status`` 0/1, ``createdBy``, ``commentId``, ``files``."""
    offset = call.config.utc_offset_hours
    created = iso(result.created_at, offset)
    return {
        "id": result.id,
        "taskId": result.task_id,
        # api-facts §5: with the new task card every result reports commentId 0.
        "commentId": 0 if call.config.new_task_card else (result.comment_id or 0),
        "createdBy": result.author_id,
        "createdAt": created,
        "updatedAt": created if result.updated_at is None else iso(result.updated_at, offset),
        "status": 1 if result.closed else 0,
        "text": result.text,
        "formattedText": _formatted(result.text),
        # api-facts §5.7: ``files`` is null in the addFromComment response.
        "files": list(result.file_ids) if files else None,
    }


def list_results(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.list, the v2 one: a plain array, no paging (api-facts §5.6)."""
    task_id = as_v2_int(params.get("taskId"))
    if task_id is None:
        # api-facts §5.6: code "100" is a parameter of the wrong type.
        raise v2_error("100", "Wrong type of parameter taskId: integer expected")
    task = call.world.tasks.get(task_id)
    if task is None or not call.world.can_see(call.user_id, task):
        # api-facts §5.6: "Access denied." for no access *or* no such task; 0 is an int,
        # so `taskId: 0` is a task nobody can see, not a type error.
        raise v2_error("0", "Access denied.")
    # The method page's example lists the newest result first.
    return [render_item(call, r) for r in reversed(call.world.results_of(task_id))]


def add_from_comment(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.addFromComment (api-facts §5.7)."""
    if call.config.new_task_card:
        # api-facts §5: does not work with the new task card (tasks 25.700.0+).
        raise _action_not_allowed()
    comment_id = _int_param(params, "commentId")
    try:
        result = call.world.pin_comment(call.user_id, comment_id, call.now)
    except WorldError as error:
        raise _refusal_to_v2(error) from None
    return render_item(call, result, files=False)


def delete_from_comment(call: Call, params: dict[str, JSON]) -> JSON:
    """tasks.task.result.deleteFromComment (api-facts §5.8): ``result: null``."""
    if call.config.new_task_card:
        raise _action_not_allowed()
    comment_id = _int_param(params, "commentId")
    try:
        call.world.unpin_comment(call.user_id, comment_id)
    except WorldError as error:
        raise _refusal_to_v2(error) from None
    return None


METHODS: Mapping[str, Handler] = {
    "tasks.task.result.list": list_results,
    "tasks.task.result.addfromcomment": add_from_comment,
    "tasks.task.result.deletefromcomment": delete_from_comment,
}

#: v2 methods whose answer carries a ``total`` (a v2 batch reports ``result_total`` only
#: for these, api-facts §3.1). The result list is a plain array without one (api-facts §5.6).
WITH_TOTAL: frozenset[str] = frozenset()

#: v2 methods that write (no Idempotency-Key protects them: api-facts §4.1, v3 only).
WRITES = frozenset({"tasks.task.result.addfromcomment", "tasks.task.result.deletefromcomment"})
