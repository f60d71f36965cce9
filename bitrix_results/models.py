"""Wire shapes of the task-results API as msgspec Structs.

Every shape the portal sends or receives lives here. Field names follow the API
(camelCase on the wire for REST 3.0 items, snake_case in Python); unknown fields
are ignored so a portal that grows new fields does not break old clients. The same
goes for values: an enum value we do not know yet (a new ``status``) is kept as a
plain string, and a field the portal did not send is ``None``, never a made-up value.
Sources: ``docs/api-facts.md`` api-facts §2.1 (``time``), api-facts §4.2 (envelopes),
api-facts §5.1 (result items).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = [
    "RESULT_FIELDS",
    "LegacyTaskResult",
    "NewResult",
    "OAuthTokens",
    "ResponseTime",
    "ResultRights",
    "TaskResult",
    "ValidationDetail",
]

#: The statuses documented today (api-facts §5.1). Decoding does not refuse others:
#: ``TaskResult.status`` is a plain ``str``, so a status added later is kept as sent.
ResultStatus = Literal["open", "closed"]

#: The fields of a REST 3.0 result item (api-facts §5.1), sent as ``select`` by every
#: v3 list the client makes: without ``select`` the sibling ``tasks.task.list`` returns
#: only ``id`` (api-facts §4.3), and a list must not depend on which default applies.
RESULT_FIELDS: tuple[str, ...] = (
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


class _Wire(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Base of REST 3.0 shapes: camelCase on the wire, immutable in Python."""


class ResultRights(_Wire, frozen=True, kw_only=True):
    """What the calling user may do with a result (api-facts §5.1 ``rights``)."""

    #: The user may change the result's text (`ResultsClient.update`).
    edit: bool = False
    #: The user may delete the result (`ResultsClient.delete`).
    remove: bool = False


class TaskResult(_Wire, frozen=True, kw_only=True):
    """A task result as REST 3.0 returns it (api-facts §5.1 "v3 item").

    ``id``, ``task_id`` and ``text`` are what makes a result; every other field is
    ``None`` when the portal did not send it. ``status`` is ``"open"`` or
    ``"closed"`` today and kept as sent if the portal grows another value.
    """

    #: The result's id; ids only grow on a portal.
    id: int
    #: The task the result belongs to.
    task_id: int
    #: The result's text.
    text: str
    #: The user who wrote it.
    author_id: int | None = None
    #: When it was created (timezone-aware).
    created_at: datetime | None = None
    #: When it was last edited; None until the result is first edited (api-facts §5.1).
    updated_at: datetime | None = None
    #: ``"open"`` or ``"closed"``.
    status: str | None = None
    #: Ids of the files attached to it.
    file_ids: list[int] | None = None
    #: What the calling user may do with it.
    rights: ResultRights | None = None
    #: The chat message it was pinned from, if it was (api-facts §5.3).
    message_id: int | None = None


class LegacyTaskResult(_Wire, frozen=True, kw_only=True):
    """A task result as the older REST v2 methods return it (api-facts §5.1 "v2 item").

    ``status`` is numeric here (0 open, 1 closed) and ``files`` is null in the
    ``addFromComment`` response (api-facts §5.7). A field the portal did not send is ``None``.
    """

    #: The result's id.
    id: int
    #: The task the result belongs to.
    task_id: int
    #: The comment it was pinned from, if it was.
    comment_id: int | None = None
    #: The user who wrote it.
    created_by: int | None = None
    #: When it was created, as the portal wrote it (ISO 8601 text).
    created_at: str | None = None
    #: When it was last edited, as the portal wrote it.
    updated_at: str | None = None
    #: 0 open, 1 closed.
    status: int | None = None
    #: The text, BB-code included.
    text: str | None = None
    #: The text rendered to HTML by the portal.
    formatted_text: str | None = None
    #: Ids of the attached files (None in the ``addFromComment`` answer).
    files: list[int] | None = None

    @property
    def is_closed(self) -> bool:
        """True only when the portal said closed (``status`` 1)."""
        return self.status == 1


class ResponseTime(msgspec.Struct, frozen=True, kw_only=True):
    """The ``time`` block of a successful response (api-facts §2.1).

    ``operating`` is the method's running total over the window, already summed
    by the portal; ``operating_reset_at`` is when the oldest one-minute basket
    expires. Both are optional: self-hosted portals omit them (api-facts §2.1, b24jssdk
    issue 459). ``operating_reset_at`` is an int from a real portal and may be a
    fraction from a time-compressed fake one, so it is read as a float.

    The block is advisory: a reply whose ``time`` does not fit this shape (a
    documentation example has ``operating_reset_at`` as a date string) is still a
    reply, decoded with ``time`` None (see ``_transport/codec.py``).
    """

    #: When the portal started the request, in Unix seconds.
    start: float | None = None
    #: When it finished, in Unix seconds.
    finish: float | None = None
    #: Seconds from start to finish.
    duration: float | None = None
    #: Seconds the method itself ran.
    processing: float | None = None
    #: ``start`` as the portal's date text.
    date_start: str | None = None
    #: ``finish`` as the portal's date text.
    date_finish: str | None = None
    #: Seconds of this method's operating budget used over the window (api-facts §2.1).
    operating: float | None = None
    #: When the oldest one-minute share of ``operating`` expires, in Unix seconds.
    operating_reset_at: float | None = None


class ValidationDetail(msgspec.Struct, frozen=True):
    """One entry of a REST 3.0 ``error.validation`` list (api-facts §4.2).

    ``field`` may be absent.
    """

    #: What is wrong.
    message: str
    #: The field it is about, when the portal names one.
    field: str | None = None


class NewResult(msgspec.Struct, frozen=True):
    """One result to add in bulk: the task, the text, and an optional stable key.

    ``key`` names the item across runs (for example a row id from the source
    system); bulk import derives the item's Idempotency-Key from it so a resumed
    or retried item is replayed by the portal instead of created twice. Without a
    key, the job id and the item's position name it.

    Example:
        ```python
        items = [NewResult(42, "Done", key="row-17"), NewResult(43, "Shipped")]
        report = await client.bulk_add(items)
        ```
    """

    #: The task to add the result to (positive).
    task_id: int
    #: The result's text (non-empty).
    text: str
    #: A stable name for the item across runs; the Idempotency-Key derives from it.
    key: str | None = None


# --- envelopes (private: the client unwraps them) ---------------------------------


class _V3Error(msgspec.Struct, frozen=True):
    code: str = ""
    message: str = ""
    validation: list[ValidationDetail] = msgspec.field(default_factory=list)


class Envelope(msgspec.Struct, frozen=True):
    """Any REST response body: ``result`` + ``time`` on success, ``error`` on failure.

    ``result`` stays raw so each method decodes only the shape it expects, with a
    decoder built once. ``error`` is a string in v2 and an object in v3 (api-facts §4.2, §6).
    """

    result: msgspec.Raw = msgspec.Raw(b"null")
    time: ResponseTime | None = None
    error: str | _V3Error | None = None
    error_description: str | None = None


class ItemBody(msgspec.Struct, frozen=True):
    item: TaskResult


class ItemsBody(msgspec.Struct, frozen=True):
    items: list[TaskResult]


class BoolBody(msgspec.Struct, frozen=True):
    result: bool = False


class OAuthTokens(msgspec.Struct, frozen=True, kw_only=True):
    """The token endpoint's answer (api-facts §7). ``refresh_token`` rotates on every refresh."""

    #: The new access token (a secret).
    access_token: str
    #: The new refresh token (a secret); store it, the previous one no longer works.
    refresh_token: str
    # Integers from the real server; a time-compressed fake one sends fractions.
    #: When the access token expires, in Unix seconds.
    expires: float | None = None
    #: Seconds the access token lives.
    expires_in: float | None = None
    #: The portal's REST endpoint, ``https://<portal>/rest/``.
    client_endpoint: str | None = None
    #: The portal's id.
    member_id: str | None = None
    #: The user the tokens act for.
    user_id: int | None = None

    def __repr__(self) -> str:
        # Tokens never reach a repr (design §2.7).
        return f"OAuthTokens(client_endpoint={self.client_endpoint!r}, user_id={self.user_id!r})"
