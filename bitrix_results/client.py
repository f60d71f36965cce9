"""``ResultsClient``: one typed method per task-result REST method.

Each method checks its input, describes the call (method, API generation, body,
retry class, budget keys), hands it to the scheduler, and decodes the reply into
a model. Nothing here paces, retries or touches the wire: that is the
scheduler's and the transport's job.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from os import urandom
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack

import msgspec

from . import _validate as check
from . import bulk
from ._options import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT,
    SENDER_OPTIONS,
    TRANSPORT_OPTIONS,
    ClientOptions,
    check_options,
    scheduler_from,
)
from ._paging import PageRule, keyset_page
from ._scheduler import Scheduler, SchedulerStatistics
from ._transport import (
    AiohttpSender,
    Auth,
    Call,
    HttpSender,
    OAuthAuth,
    RestTransport,
    RetryClass,
    TokenCallback,
    WebhookAuth,
)
from ._transport.auth import DEFAULT_TOKEN_URL
from ._transport.codec import decode_result
from ._transport.types import Api, Reply, Transport
from ._transport.urls import METHOD_NAME, check_origin, parse_portal, parse_webhook
from .errors import DecodeError, InvalidInputError, OutcomeUnknownError
from .models import RESULT_FIELDS, BoolBody, ItemBody, ItemsBody, LegacyTaskResult, TaskResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from .bulk import BulkOptions, BulkReport, Items, Outcome, ResultsOfTask

__all__ = ["ClientOptions", "ResultsClient"]

logger = logging.getLogger("bitrix_results")
_T = TypeVar("_T")

ADD = "tasks.task.result.add"
ADD_FROM_CHAT = "tasks.task.result.addfromchatmessage"
UPDATE = "tasks.task.result.update"
DELETE = "tasks.task.result.delete"
LIST = "tasks.task.result.list"
ADD_FROM_COMMENT = "tasks.task.result.addFromComment"
DELETE_FROM_COMMENT = "tasks.task.result.deleteFromComment"
CHAT_SEND = "tasks.task.chat.message.send"

# Sortable fields of tasks.task.result.list v3 (api-facts §5.6).
_ORDER_FIELDS = ("id", "authorId", "createdAt", "updatedAt", "status", "messageId")
_DIRECTIONS = ("ASC", "DESC")
_STATUSES = ("open", "closed")
# Page size for iter_results. The docs give no default or maximum for this method
# (api-facts §4.3, §5.6); 50 is the page size documented across the REST API.
DEFAULT_PAGE_SIZE = 50
# Last segments of REST v2 method names that only read (for ``call``'s retry class).
_READ_VERBS = frozenset({"list", "get", "fields", "getlist", "getfields"})


def new_idempotency_key() -> str:
    """A fresh key for one logical write; retries of that write reuse it (api-facts §4.1)."""
    # 128 random bits from the OS (uuid4 has 122), at about a third of
    # uuid4().hex's cost (hot path: one key per add). Random, not a counter, so
    # keys stay unique across processes, forks and runs. Same "br-" + 32 hex form.
    return "br-" + urandom(16).hex()


class ResultsClient:
    """Async client for ``tasks.task.result.*`` (REST 3.0 and REST v2).

    Build it with :meth:`from_webhook` or :meth:`from_oauth` and use it as an
    async context manager. Every call goes through one scheduler that keeps the
    portal's request bucket and per-method operating budget from refusing us.

    Besides the errors each method lists, any call that reaches the portal can
    raise these (the troubleshooting page says what to do about each):

    - `AuthError`: the portal refused the credentials (`InvalidCredentialsError`);
    - `OAuthError`: the OAuth server refused to refresh the tokens (OAuth clients);
    - `RateLimitError`: the request bucket still refused after the retry policy's
      attempts (503 `QUERY_LIMIT_EXCEEDED`); nothing executed;
    - `OperatingLimitError`: the method's time budget still refused after the retry
      policy's attempts (429 `OPERATION_TIME_LIMIT`); nothing executed;
    - `LimiterUnavailableError`: the shared Redis limiter was unreachable; nothing
      was sent.
    """

    def __init__(self, transport: Transport, **options: Unpack[ClientOptions]) -> None:
        """Build a client over a ready transport (a fake one in tests, or your own).

        `from_webhook` and `from_oauth` build the transport too; most code uses them.

        Args:
            transport: What sends the calls to the portal and decodes the replies.
            **options: The `ClientOptions`, except the transport's own
                (``timeout``, ``follow_redirects_to``, ``max_body_bytes``, ``trust_env``,
                ``proxy``, ``ssl``, ``insecure_skip_tls_verify``, ``headers``), which
                belong to the transport you pass.

        Raises:
            InvalidInputError: An option is of the wrong type or out of range, is a
                transport option, or ``scheduler`` comes with ``limits``,
                ``concurrency``, ``headroom`` or ``retry``.
            TypeError: An option's name is unknown (a misspelt keyword).
        """
        check_options(options, where="ResultsClient")
        for name in TRANSPORT_OPTIONS:
            if name in options:
                raise InvalidInputError(
                    name,
                    "is an option of the transport from_webhook/from_oauth build; "
                    "set it on the transport you pass instead",
                )
        self._transport = transport
        #: Results per page `iter_results` asks for (the ``page_size`` option).
        self.page_size: int = options.get("page_size", DEFAULT_PAGE_SIZE)
        self._scheduler = scheduler_from(options)
        # When a keyset walk of iter_results ends (api-facts §4.3): learns the
        # largest page this portal returns. Bulk reads keep a rule of their own.
        self._pages = PageRule()

    # -- construction --------------------------------------------------------------

    @classmethod
    def from_webhook(
        cls, url: str, *, sender: HttpSender | None = None, **options: Unpack[ClientOptions]
    ) -> ResultsClient:
        """Build a client for an incoming webhook.

        Nothing is sent until the first call. The webhook code is a secret: it
        never appears in the client's repr, logs or error messages.

        Args:
            url: The webhook URL, ``https://<portal>/rest/<user>/<code>/``.
            sender: Replaces the HTTP layer (aiohttp by default), for example with
                `bitrix_results.testing.MockSender` in tests; ``timeout`` and the
                connection pool are then the sender's business. The client closes it.
            **options: The `ClientOptions`.

        Returns:
            A client; use it as an async context manager so it is closed.

        Raises:
            InvalidInputError: The URL is not a webhook URL; an option is of the wrong
                type or out of range, configures the built-in sender while ``sender``
                is given, or is a scheduler knob given with ``scheduler``.
            TypeError: An option's name is unknown (a misspelt keyword).

        Example:
            ```python
            async with ResultsClient.from_webhook(
                "https://example.bitrix24.ru/rest/1/abc123/", concurrency=8
            ) as client:
                result = await client.add(42, "Done")
            ```
        """
        check_options(options, where="ResultsClient.from_webhook")
        return cls._over(WebhookAuth(parse_webhook(url)), options, sender)

    @classmethod
    def from_oauth(
        cls,
        *,
        portal: str,
        access_token: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        on_tokens: TokenCallback | None = None,
        token_url: str = DEFAULT_TOKEN_URL,
        sender: HttpSender | None = None,
        **options: Unpack[ClientOptions],
    ) -> ResultsClient:
        """Build a client for an OAuth application's tokens on a portal (api-facts §7).

        The access token is refreshed only when the portal answers
        ``expired_token``; the call is then sent again with the new token.

        Args:
            portal: The portal's address, ``https://example.bitrix24.ru``.
            access_token: The current access token.
            refresh_token: The current refresh token.
            client_id: The application's client id.
            client_secret: The application's client secret.
            on_tokens: Called (sync or async) with the new `OAuthTokens` after each
                refresh, so you can store the rotated refresh token; the old one
                stops working.
            token_url: The OAuth server's token endpoint (Bitrix24's own by default).
            sender: As in `from_webhook`; the token refresh goes through it too.
            **options: The `ClientOptions`.

        Returns:
            A client; use it as an async context manager so it is closed.

        Raises:
            InvalidInputError: A token or id is empty or not a string, the portal or
                token URL is not an https origin, or an option is of the wrong type
                or out of range.
            TypeError: An option's name is unknown (a misspelt keyword).
        """
        check_options(options, where="ResultsClient.from_oauth")
        for field, value in (
            ("access_token", access_token),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ):
            check.text(field, value)
        check_origin("token_url", token_url)
        auth = OAuthAuth(
            parse_portal(portal),
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            on_tokens=on_tokens,
        )
        return cls._over(auth, options, sender)

    @classmethod
    def _over(cls, auth: Auth, options: ClientOptions, sender: HttpSender | None) -> ResultsClient:
        """A client over the REST transport for ``auth``, from checked options."""
        scheduler = scheduler_from(options)
        if sender is not None:
            for name in SENDER_OPTIONS:
                if name in options:
                    # These configure the built-in sender; a given sender keeps its own.
                    raise InvalidInputError(
                        name, "is an option of the built-in sender; set it on the sender you pass"
                    )
        if sender is None:
            insecure = options.get("insecure_skip_tls_verify", False)
            if insecure:
                logger.warning(
                    "bitrix_results: TLS certificate checks are OFF (insecure_skip_tls_verify)"
                )
            sender = AiohttpSender(
                timeout=options.get("timeout", DEFAULT_TIMEOUT),
                # One connection per call in flight: the scheduler admits no more, and
                # fewer would queue admitted calls where the scheduler cannot see them.
                max_connections=scheduler.concurrency,
                max_body_bytes=options.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
                trust_env=options.get("trust_env", True),
                proxy=options.get("proxy"),
                ssl=False if insecure else (options.get("ssl") or True),
                headers=options.get("headers"),
            )
        transport = RestTransport(
            auth, sender, follow_redirects_to=options.get("follow_redirects_to", ())
        )
        return cls(
            transport, scheduler=scheduler, page_size=options.get("page_size", DEFAULT_PAGE_SIZE)
        )

    async def __aenter__(self) -> ResultsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session; the client cannot be used afterwards.

        ``async with`` calls it for you. Closing twice is harmless.
        """
        await self._transport.aclose()

    def statistics(self) -> SchedulerStatistics:
        """Take a snapshot of the scheduler's counters.

        Returns:
            Requests sent, waits, retries by reason, limit errors seen and the
                per-method budgets, as they are now (the snapshot does not change).
        """
        return self._scheduler.statistics()

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler every call of this client goes through (given or built)."""
        return self._scheduler

    def __repr__(self) -> str:
        return f"ResultsClient(portal={self._transport.portal!r})"

    # -- plumbing ------------------------------------------------------------------

    async def _run(
        self,
        method: str,
        params: Mapping[str, object],
        *,
        api: Api = "v3",
        retry_class: RetryClass,
        key: str | None = None,
    ) -> msgspec.Raw:
        if retry_class is RetryClass.KEYED_WRITE and key is None:
            key = new_idempotency_key()
        call = Call(
            method=method, api=api, params=params, retry_class=retry_class, idempotency_key=key
        )
        # The scheduler directly, not through execute: one coroutine less per call.
        reply = await self._scheduler.execute(call, self._transport)
        return reply.result

    @property
    def binding(self) -> tuple[str, str]:
        """The portal and the credential's fingerprint (never a secret) a bulk journal
        is bound to; part of the bulk engine's port."""
        return (self._transport.portal, self._transport.credential)

    async def execute(self, call: Call) -> Reply:
        """Run a prepared call through the scheduler (the bulk engine's batches).

        Part of the port the bulk engine uses (``bitrix_results._bulk.port``);
        applications call the typed methods instead.
        """
        return await self._scheduler.execute(call, self._transport)

    async def _item(
        self, method: str, params: Mapping[str, object], key: str | None = None
    ) -> TaskResult:
        # _run inlined (hot path: every add and update): one coroutine less per call.
        if key is None:
            key = new_idempotency_key()
        call = Call(
            method=method,
            api="v3",
            params=params,
            retry_class=RetryClass.KEYED_WRITE,
            idempotency_key=key,
        )
        reply = await self._scheduler.execute(call, self._transport)
        return _written(reply.result, ItemBody, method).item

    # -- REST 3.0 ------------------------------------------------------------------

    async def add(
        self, task_id: int, text: str, *, idempotency_key: str | None = None
    ) -> TaskResult:
        """Add a result to a task (``tasks.task.result.add``, api-facts §5.2).

        Safe to retry: the call carries an Idempotency-Key (a fresh one unless you
        give your own), so a retry after a lost answer is replayed, not repeated.

        Args:
            task_id: The task's id (positive).
            text: The result's text (non-empty).
            idempotency_key: Your own key for this logical write, to make a retry
                across processes safe too; the portal replays the stored answer for
                a key it has seen with the same body (api-facts §4.1).

        Returns:
            The created result.

        Raises:
            InvalidInputError: ``task_id``, ``text`` or ``idempotency_key`` is
                invalid; nothing was sent.
            AccessDeniedError: The user may not add results to this task.
            NotFoundError: No such task.
            InvalidRequestError: The portal's validation refused the fields.
            IdempotencyKeyError: The key was used before with another body.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.

        Example:
            ```python
            result = await client.add(42, "Deployed to production")
            print(result.id, result.created_at)
            ```
        """
        fields = {
            "taskId": check.positive_int("task_id", task_id),
            "text": check.text("text", text),
        }
        if idempotency_key is not None:
            check.key("idempotency_key", idempotency_key)
        return await self._item(ADD, {"fields": fields}, idempotency_key)

    async def add_from_chat_message(self, message_id: int) -> TaskResult:
        """Pin a task-chat message as a result (``addfromchatmessage``, api-facts §5.3).

        Args:
            message_id: The chat message's id (positive).

        Returns:
            The created result; its ``message_id`` is the message's.

        Raises:
            InvalidInputError: ``message_id`` is not a positive int; nothing was sent.
            AccessDeniedError: The user may not pin this message.
            NotFoundError: No such message.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        fields = {"messageId": check.positive_int("message_id", message_id)}
        return await self._item(ADD_FROM_CHAT, {"fields": fields})

    async def update(self, result_id: int, text: str) -> TaskResult:
        """Replace a result's text (``tasks.task.result.update``, api-facts §5.4).

        Only the result's author may update it.

        Args:
            result_id: The result's id (positive).
            text: The new text (non-empty).

        Returns:
            The result as it is after the update.

        Raises:
            InvalidInputError: ``result_id`` or ``text`` is invalid; nothing was sent.
            AccessDeniedError: The user is not the result's author.
            NotFoundError: No such result.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        params = {
            "id": check.positive_int("result_id", result_id),
            "fields": {"text": check.text("text", text)},
        }
        return await self._item(UPDATE, params)

    async def delete(self, result_id: int) -> None:
        """Delete a result (``tasks.task.result.delete``, api-facts §5.5).

        Only the result's author may delete it.

        Args:
            result_id: The result's id (positive).

        Raises:
            InvalidInputError: ``result_id`` is not a positive int; nothing was sent.
            AccessDeniedError: The user is not the result's author.
            NotFoundError: No such result.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        params = {"id": check.positive_int("result_id", result_id)}
        await self._run(DELETE, params, retry_class=RetryClass.KEYED_WRITE)

    async def list(
        self,
        task_id: int,
        *,
        status: Literal["open", "closed"] | None = None,
        author_id: int | None = None,
        order: Mapping[str, Literal["ASC", "DESC"]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> builtins.list[TaskResult]:
        """Read one page of a task's results (``tasks.task.result.list`` v3, api-facts §5.6).

        For every result of a task, page after page, use `iter_results`.

        Args:
            task_id: The task's id (positive).
            status: Only ``"open"`` or only ``"closed"`` results.
            author_id: Only results by this user.
            order: Sort, e.g. ``{"id": "DESC"}``; fields ``id``, ``authorId``,
                ``createdAt``, ``updatedAt``, ``status``, ``messageId``.
            limit: Results per page (the portal's default when omitted).
            offset: Results to skip.

        Returns:
            The page's results; v3 lists carry no total (api-facts §4.3).

        Raises:
            InvalidInputError: An argument is invalid; nothing was sent.
            AccessDeniedError: The user may not see this task.
            NotFoundError: No such task.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            TransportError: The HTTP exchange kept failing (connect error, timeout, lost
                connection) until the retry policy gave up; a read changes nothing.
            ServerError: The portal kept answering 5xx until the retry policy gave up.
            DecodeError: The answer was not the JSON this method returns.
        """
        params = _list_params(task_id, status=status, author_id=author_id)
        if order is not None:
            if not isinstance(order, Mapping) or not order:
                raise InvalidInputError("order", "must be a non-empty mapping of field to ASC/DESC")
            for field, direction in order.items():
                check.choice("order", field, _ORDER_FIELDS)
                check.choice(f"order[{field}]", direction, _DIRECTIONS)
            params["order"] = dict(order)
        pagination: dict[str, int] = {}
        if limit is not None:
            pagination["limit"] = check.positive_int("limit", limit)
        if offset is not None:
            pagination["offset"] = check.non_negative_int("offset", offset)
        if pagination:
            params["pagination"] = pagination
        return await self._list_page(params)

    async def _list_page(self, params: Mapping[str, object]) -> builtins.list[TaskResult]:
        raw = await self._run(LIST, params, retry_class=RetryClass.READ)
        return decode_result(raw, ItemsBody, method=LIST).items

    async def iter_results(
        self,
        task_id: int,
        *,
        status: Literal["open", "closed"] | None = None,
        author_id: int | None = None,
        after_id: int = 0,
        page_size: int | None = None,
    ) -> AsyncIterator[TaskResult]:
        """Yield every result of a task, oldest first, page by page (keyset on ``id``).

        v3 lists carry no total and no "next" (api-facts §4.3), so the walk asks for
        ``id > last`` ordered by id and ends on an empty page or on a page shorter
        than the largest the portal has returned. It cannot loop: each page must
        move ``last`` forward or the walk stops, and no result is yielded twice.

        Args:
            task_id: The task's id (positive).
            status: Only ``"open"`` or only ``"closed"`` results.
            author_id: Only results by this user.
            after_id: Start after this result id (0: from the first).
            page_size: Results per request (default: the client's ``page_size``).

        Yields:
            Each result, in increasing ``id`` order.

        Raises:
            InvalidInputError: An argument is invalid; nothing was sent.
            AccessDeniedError: The user may not see this task.
            NotFoundError: No such task.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            TransportError: The HTTP exchange kept failing (connect error, timeout, lost
                connection) until the retry policy gave up; a read changes nothing.
            ServerError: The portal kept answering 5xx until the retry policy gave up.
            DecodeError: The answer was not the JSON this method returns.

        Example:
            ```python
            async for result in client.iter_results(42, status="open"):
                print(result.id, result.text)
            ```
        """
        base = _list_params(task_id, status=status, author_id=author_id)
        size = self.page_size if page_size is None else check.positive_int("page_size", page_size)
        last = check.non_negative_int("after_id", after_id)
        while True:
            page = await self._list_page(keyset_page(base, last, size))
            # Only ids past ``last`` are new: a portal that ignored the keyset
            # filter (or overlapped pages) must not make us yield a result twice.
            fresh = [result for result in page if result.id > last]
            for result in fresh:
                yield result
            if not fresh or not self._pages.more(len(page), size):
                return
            last = max(result.id for result in fresh)

    async def send_chat_message(self, task_id: int, text: str) -> None:
        """Post a message to the task's chat (``tasks.task.chat.message.send``, api-facts §5.9).

        The portal returns no message id for it (api-facts §5.9), so nothing is
        returned.

        Args:
            task_id: The task's id (positive).
            text: The message (non-empty).

        Raises:
            InvalidInputError: ``task_id`` or ``text`` is invalid; nothing was sent.
            AccessDeniedError: The user may not write to this task's chat.
            NotFoundError: No such task.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        fields = {
            "taskId": check.positive_int("task_id", task_id),
            "text": check.text("text", text),
        }
        raw = await self._run(CHAT_SEND, {"fields": fields}, retry_class=RetryClass.KEYED_WRITE)
        decode_result(raw, BoolBody, method=CHAT_SEND)

    # -- REST v2 -------------------------------------------------------------------

    async def list_legacy(self, task_id: int) -> builtins.list[LegacyTaskResult]:
        """Read a task's results through REST v2 ``tasks.task.result.list`` (api-facts §5.6).

        The v2 method returns all of the task's results at once, in the v2 shape.

        Args:
            task_id: The task's id (positive).

        Returns:
            The task's results.

        Raises:
            InvalidInputError: ``task_id`` is not a positive int; nothing was sent.
            AccessDeniedError: The user may not see this task.
            NotFoundError: No such task.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            TransportError: The HTTP exchange kept failing (connect error, timeout, lost
                connection) until the retry policy gave up; a read changes nothing.
            ServerError: The portal kept answering 5xx until the retry policy gave up.
            DecodeError: The answer was not the JSON this method returns.
        """
        params = {"taskId": check.positive_int("task_id", task_id)}
        raw = await self._run(LIST, params, api="v2", retry_class=RetryClass.READ)
        return decode_result(raw, builtins.list[LegacyTaskResult], method=LIST, strict=False)

    async def add_from_comment(self, comment_id: int) -> LegacyTaskResult:
        """Pin a task comment as a result (REST v2 ``addFromComment``, api-facts §5.7).

        No Idempotency-Key protects REST v2, so if the answer is lost the client
        raises `OutcomeUnknownError` rather than send it again.

        Args:
            comment_id: The comment's id (positive).

        Returns:
            The created result, in the v2 shape.

        Raises:
            InvalidInputError: ``comment_id`` is not a positive int; nothing was sent.
            AccessDeniedError: The user may not pin this comment.
            NotFoundError: No such comment.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        params = {"commentId": check.positive_int("comment_id", comment_id)}
        raw = await self._run(
            ADD_FROM_COMMENT, params, api="v2", retry_class=RetryClass.UNKEYED_WRITE
        )
        return _written(raw, LegacyTaskResult, ADD_FROM_COMMENT, strict=False)

    async def delete_from_comment(self, comment_id: int) -> None:
        """Unpin a comment's result; the comment stays (REST v2 ``deleteFromComment``).

        See api-facts §5.8.

        Args:
            comment_id: The comment's id (positive).

        Raises:
            InvalidInputError: ``comment_id`` is not a positive int; nothing was sent.
            AccessDeniedError: The user may not unpin it.
            NotFoundError: No such comment or result.
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: An attempt may have executed (timeout, lost connection,
                5xx) and the client gave up, or the portal ran the write but its
                answer could not be read; check the portal before sending it again.
            TransportError: The request never reached the portal on any attempt
                (``ConnectError``); nothing was created.
        """
        params = {"commentId": check.positive_int("comment_id", comment_id)}
        await self._run(DELETE_FROM_COMMENT, params, api="v2", retry_class=RetryClass.UNKEYED_WRITE)

    # -- escape hatch --------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        api: Api = "v3",
        idempotent: bool | None = None,
    ) -> Any:
        """Call any REST method through the scheduler and return its decoded ``result``.

        REST 3.0 calls always carry an Idempotency-Key, so they are retried safely.
        REST v2 calls are treated as reads when the method name ends in a read verb
        (``.list``, ``.get``, ``.fields``) and as unprotected writes otherwise.

        Args:
            method: The REST method's name, like ``"tasks.task.get"``.
            params: The call's parameters (JSON values only).
            api: ``"v3"`` (REST 3.0) or ``"v2"``.
            idempotent: For v2 only: True treats the call as a read (retried after
                an ambiguous failure), False as a write (never sent twice); None
                guesses from the method name.

        Returns:
            The ``result`` member of the answer, decoded from JSON as is.

        Raises:
            InvalidInputError: The method name, ``api`` or ``params`` is invalid;
                nothing was sent.
            PortalError: The portal answered with an error (its subclasses:
                ``AccessDeniedError``, ``NotFoundError``, ``InvalidRequestError``...).
            BitrixError: Also the errors any call can meet (credentials, the limits,
                the shared limiter), listed on the class.
            OutcomeUnknownError: A write may have executed and the client gave up.
            TransportError: A read, or a write that never reached the portal, failed
                until the retry policy gave up.

        Example:
            ```python
            task = await client.call("tasks.task.get", {"taskId": 42}, api="v2")
            ```
        """
        if not isinstance(method, str) or not METHOD_NAME.match(method):
            raise InvalidInputError("method", "must be a REST method name like 'tasks.task.get'")
        check.choice("api", api, ("v2", "v3"))
        if params is None:
            params = {}
        elif not isinstance(params, Mapping):
            raise InvalidInputError("params", f"must be a mapping, got {type(params).__name__}")
        else:
            params = dict(params)
            check.json_params("params", params)
        if api == "v3":
            retry_class = RetryClass.KEYED_WRITE
        elif idempotent is None:
            verb = method.rsplit(".", 1)[-1].lower()
            retry_class = RetryClass.READ if verb in _READ_VERBS else RetryClass.UNKEYED_WRITE
        else:
            retry_class = RetryClass.READ if idempotent else RetryClass.UNKEYED_WRITE
        raw = await self._run(method, params, api=api, retry_class=retry_class)
        return decode_result(raw, Any, method=method)

    # -- bulk ----------------------------------------------------------------------

    async def bulk_add(self, items: Items, **options: Unpack[BulkOptions]) -> BulkReport:
        """Add many results and report every outcome, in input order.

        The same as `bitrix_results.bulk.bulk_add` with this client; the guide is
        docs/bulk.md.

        Args:
            items: ``(task_id, text)`` pairs or `NewResult`s, in an iterable (or, on
                the async client, an async iterable).
            **options: The `BulkOptions` (``batch``, ``journal``, ``job_id``,
                ``on_progress``...).

        Returns:
            One `Outcome` per item, counts, and the job's statistics.

        Raises:
            InvalidInputError: An option's value is invalid; nothing was sent. (An
                item with a bad task id or text becomes a failed `Outcome`.)
            TypeError: An option's name is unknown.
            JournalError: The journal cannot be used (another job's, or unreadable);
                nothing was sent.
            BulkAbortedError: An error stopped the job before its input was done (an
                item that is not a pair or a `NewResult`, the limiter unreachable...);
                its ``report`` holds every item settled before, and ``cause`` the
                error.

        Example:
            ```python
            report = await client.bulk_add([(42, "Done"), (43, "Shipped")])
            print(report.created, report.failed)
            ```
        """
        return await bulk.bulk_add(self, items, **options)

    def bulk_add_stream(
        self, items: Items, **options: Unpack[BulkOptions]
    ) -> AsyncIterator[Outcome]:
        """Add many results, yielding each outcome as it settles; memory stays bounded.

        The same as `bitrix_results.bulk.bulk_add_stream` with this client.

        Args:
            items: ``(task_id, text)`` pairs or `NewResult`s, in an iterable (or, on
                the async client, an async iterable); read lazily.
            **options: The `BulkOptions`.

        Returns:
            An async iterator of one `Outcome` per item, in the order they settle
                (``Outcome.index`` is the input position).

        Raises:
            InvalidInputError: An option's value is invalid; nothing was sent.
            TypeError: An option's name is unknown, or an item is not a pair or a
                `NewResult`.
            JournalError: The journal cannot be used.
        """
        return bulk.bulk_add_stream(self, items, **options)

    def results_of_many(
        self,
        task_ids: Iterable[int] | AsyncIterable[int],
        *,
        api: Api = "v3",
        concurrency: int | None = None,
    ) -> AsyncIterator[ResultsOfTask]:
        """Read the results of many tasks through batched list calls, streamed per task.

        Args:
            task_ids: The tasks, in an iterable (or, on the async client, an async
                iterable); read lazily.
            api: ``"v3"`` (`TaskResult`s) or ``"v2"`` (`LegacyTaskResult`s).
            concurrency: Batches in flight at once. Default: as many as the bucket
                admits now, and never fewer than keep its drain busy over the
                measured round trip (at most the client's ``concurrency``).

        Returns:
            An async iterator of one `ResultsOfTask` per task, as each completes; a
                task that failed carries its ``error`` instead of results.

        Raises:
            InvalidInputError: ``api`` or ``concurrency`` is invalid, or a task id is
                not a positive int.
            TypeError: ``task_ids`` is not an iterable.
        """
        return bulk.results_of_many(self, task_ids, api=api, concurrency=concurrency)


def _list_params(task_id: int, *, status: str | None, author_id: int | None) -> dict[str, object]:
    conditions: builtins.list[builtins.list[object]] = [
        ["taskId", "=", check.positive_int("task_id", task_id)]
    ]
    if status is not None:
        conditions.append(["status", "=", check.choice("status", status, _STATUSES)])
    if author_id is not None:
        conditions.append(["authorId", "=", check.positive_int("author_id", author_id)])
    # Always name the fields: without `select` a v3 list may return only `id` (api-facts §4.3).
    return {"filter": conditions, "select": RESULT_FIELDS}


def _written(raw: msgspec.Raw, target: type[_T], method: str, *, strict: bool = True) -> _T:
    """Decode the result of a write the portal said it executed.

    A result we cannot read does not undo the write: the caller must not take
    it as failed and send it again, so it is :class:`OutcomeUnknownError`
    (design §2.3), with the decoding error as its cause.
    """
    try:
        return decode_result(raw, target, method=method, strict=strict)
    except DecodeError as exc:
        raise OutcomeUnknownError(method, exc) from exc
