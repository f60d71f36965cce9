"""The fake portal's core: one synchronous ``handle(request) -> response``, no HTTP server.

A request goes through the same gates, in the same order, as on a cloud portal:

1. a domain-change redirect (fault) — the old address answers, the portal never sees it;
2. the leaky bucket (api-facts §1) — *every* HTTP request to /rest counts, before auth;
3. proxy/portal failures before execution (faults: HTML 503, JSON 500);
4. the URL form and authentication (webhook code, OAuth access token; api-facts §4.1, §7);
5. the method (a v3-only method under /rest/ is ERROR_METHOD_NOT_FOUND, api-facts §4.1);
6. Idempotency-Key on v3 writes (api-facts §4.1) — a replay is answered here;
7. the operating budget (api-facts §2.2) — blocked methods are refused, not executed;
8. execution against the world, the cost charged, the ledger written (the
   slow-execution fault postpones steps 7-8: :attr:`Action.EXECUTE_LATER`);
9. faults after execution (dropped connection, slow answer) and latency, which the
   HTTP adapter acts out from :attr:`PortalResponse.action` and ``delay``.

Time comes from the injected ``clock``; nothing here sleeps, so tests move time instead.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from . import _v2, _v3
from ._batch import (
    parse_command_query,
    parse_v2_batch,
    parse_v3_batch,
    php_array,
    resolve_refs,
    substitute_results,
)
from ._faults import FaultInjector, FaultKind
from ._idempotency import IdempotencyStore, StoredResponse, is_valid_key
from ._ledger import CreatedResult, ExecutedCall, Ledger, PortalStats
from ._limits import BudgetReading, LeakyBucket, OperatingBudget
from ._oauth import TokenStore, token_endpoint
from ._v3 import Call, Handler
from ._wire import (
    HTML_503,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_IDEMPOTENCY_KEY,
    INVALID_JSON,
    JSON,
    ApiError,
    Route,
    decode,
    encode,
    fingerprint,
    internal_server_error,
    method_not_found,
    no_auth_found,
    operation_time_limit,
    parse_php_query,
    parse_route,
    query_limit_exceeded,
    time_block,
    v2_error,
    v3_error,
)
from ._world import ADMIN_USER, World
from .config import PortalConfig

__all__ = ["Action", "FakePortal", "PortalRequest", "PortalResponse"]

_JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json; charset=utf-8"}


class Action(enum.Enum):
    """What the HTTP adapter must do with a response besides sending it."""

    #: Send it (after ``delay`` seconds, the configured latency, if any).
    RESPOND = "respond"
    #: The ``slow`` fault: the call ran; send the answer after ``delay`` seconds.
    DELAY = "delay"
    #: The ``drop_after`` fault: the call ran and is in the ledger; close the
    #: connection without sending anything.
    DROP_AFTER = "drop_after"
    #: The ``slow_execution`` fault: the call has *not* run yet. Wait ``delay``
    #: seconds, then call :attr:`PortalResponse.deferred`, which runs it and returns
    #: the real answer to send. It must run even if the client has gone away. The
    #: after-execution faults (drop, slow answer) do not also apply to it.
    EXECUTE_LATER = "execute_later"


@dataclass(frozen=True)
class PortalRequest:
    """One HTTP request, as the portal sees it. Header names are case-insensitive."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The client's address: the bucket key (api-facts §1: portal + source IP).
    client: str = "127.0.0.1"
    #: ``scheme://host[:port]`` the request arrived on (redirects, token endpoints).
    base_url: str = "http://127.0.0.1"

    def __post_init__(self) -> None:
        lowered = {name.lower(): value for name, value in self.headers.items()}
        object.__setattr__(self, "headers", lowered)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @classmethod
    def post_json(
        cls,
        path: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        client: str = "127.0.0.1",
        query: str = "",
    ) -> PortalRequest:
        """A JSON POST, the way both API versions are normally called."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return cls("POST", path, query, all_headers, msgspec.json.encode(payload), client=client)


@dataclass(frozen=True)
class PortalResponse:
    """Status, headers and body bytes, plus what the adapter must act out."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    action: Action = Action.RESPOND
    #: Real seconds to wait before answering (latency, plus ``slow_seconds`` for DELAY,
    #: ``slow_execution_seconds`` before running the call for EXECUTE_LATER).
    delay: float = 0.0
    #: EXECUTE_LATER only: runs the postponed call now and returns its answer.
    deferred: Callable[[], PortalResponse] | None = None

    def json(self) -> Any:
        """The body decoded as JSON (raises on the HTML fault pages)."""
        return msgspec.json.decode(self.body)


@dataclass(frozen=True)
class _Caller:
    user_id: int
    #: Whose budget and idempotency store: ("webhook", code) or ("app", client_id).
    credential: tuple[str, str]


@dataclass
class _RequestRecord:
    """Calls and creations of one HTTP request, written to the ledger at its end."""

    idempotency_key: str | None = None
    calls: list[ExecutedCall] = field(default_factory=list)
    created: list[CreatedResult] = field(default_factory=list)


@dataclass
class _Exec:
    result: JSON
    error: ApiError | None
    cost: float
    reading: BudgetReading | None


@dataclass
class _Counters:
    requests: int = 0
    rate_limited: int = 0
    operating_limited: int = 0
    unauthorized: int = 0
    expired_tokens: int = 0
    executed: int = 0
    replays: int = 0
    refreshes: int = 0
    peak_bucket_level: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)


class FakePortal:
    """A faithful fake of a Bitrix24 cloud portal for the task-results API.

    It keeps the limits (bucket and operating budget), idempotency, tasks, results,
    comments and tokens, and records every call that ran in its ``ledger``.
    Thread-safe: the HTTP adapter may run it in another thread while a test reads
    `stats` and ``ledger``. Serve it with `serve_portal`, or put it behind a
    `PortalSender`.

    Args:
        config: The plan, limits, scale, switches and faults (default
            ``PortalConfig()``).
        clock: The time source, in Unix seconds; inject one to move time in tests.
        seed: Makes costs, faults and tokens reproducible.

    Example:
        ```python
        portal = FakePortal(PortalConfig(plan="standard", scale=20), seed=7)
        portal.add_task(42)
        async with serve_portal(portal) as running:
            ...  # run the code under test against running.webhook_url
        assert portal.ledger.duplicates() == 0
        ```
    """

    def __init__(
        self,
        config: PortalConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self._config = config if config is not None else PortalConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._world = World()
        self._world.seed_default()
        #: Every call that ran and every result created, in order.
        self.ledger: Ledger = Ledger()
        self._buckets: dict[str, LeakyBucket] = {}
        self._budget = OperatingBudget(limit=0.0, window=1.0, basket_width=1.0)
        self._apply_limits()
        self._idempotency = IdempotencyStore()
        self._tokens = TokenStore(seed)
        self._faults = FaultInjector(seed)
        self._cost_rng = random.Random(f"costs:{seed}")
        self._counters = _Counters()
        self._webhooks: dict[str, int] = {
            self._config.webhook_code: self._config.webhook_user,
            self._config.admin_webhook_code: ADMIN_USER,
        }
        self._ran = False
        # Whether the current request rolled the slow-execution fault (_run_or_defer).
        self._late = False
        # Re-posts of redirected requests, served when redirect_to is None (_redirects).
        self._redirected: set[tuple[str, str, str, bytes]] = set()

    # -- configuration ------------------------------------------------------------------
    @property
    def config(self) -> PortalConfig:
        """The configuration in force."""
        return self._config

    def configure(self, **changes: Any) -> None:
        """Change the config of a running portal (e.g. switch faults on mid-test).

        Args:
            **changes: `PortalConfig` fields and their new values.

        Raises:
            TypeError: A name is not a `PortalConfig` field.
        """
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
            self._apply_limits()

    def _apply_limits(self) -> None:
        cfg = self._config
        for bucket in self._buckets.values():
            bucket.burst = cfg.effective_burst
            bucket.drain = cfg.effective_drain
            bucket.neighbour = cfg.effective_neighbour_rate
        self._budget.limit = cfg.effective_limit
        self._budget.window = cfg.effective_window
        self._budget.basket_width = cfg.effective_basket

    # -- seeding and inspection -------------------------------------------------------------
    def add_task(
        self, task_id: int, *, completed: bool = False, members: Iterable[int] | None = None
    ) -> int:
        """Create or replace a task.

        Args:
            task_id: The task's id.
            completed: Create it completed (its results closed).
            members: The users who may see it; None means everyone.

        Returns:
            The task's id.
        """
        with self._lock:
            return self._world.add_task(task_id, completed=completed, members=members).id

    def add_user(self, user_id: int, *, is_admin: bool = False, name: str = "") -> int:
        """Create or replace a user.

        Args:
            user_id: The user's id.
            is_admin: Whether the user is a portal administrator.
            name: The user's name.

        Returns:
            The user's id.
        """
        with self._lock:
            return self._world.add_user(user_id, name=name, is_admin=is_admin).id

    def add_webhook(self, user_id: int, code: str | None = None) -> str:
        """Register another webhook for a user.

        Args:
            user_id: The user the webhook acts for.
            code: The webhook's secret code (a random one when None).

        Returns:
            The code.
        """
        with self._lock:
            code = code or f"wh{self._tokens.new_secret()[:14]}"
            self._webhooks[code] = user_id
            return code

    def add_comment(self, task_id: int, author_id: int = 1, text: str = "A comment") -> int:
        """Add a task comment (for v2 ``addFromComment``).

        Args:
            task_id: The task.
            author_id: The comment's author.
            text: The comment.

        Returns:
            The comment's id.
        """
        with self._lock:
            return self._world.add_comment(task_id, author_id, text).id

    def add_chat_message(
        self, task_id: int | None, author_id: int = 1, text: str = "A chat message"
    ) -> int:
        """Add a message to a task's chat (for ``addfromchatmessage``).

        Args:
            task_id: The task; None puts it in a chat that is not a task chat.
            author_id: The message's author.
            text: The message.

        Returns:
            The message's id.
        """
        with self._lock:
            return self._world.add_message(task_id, author_id, text).id

    def add_result(self, task_id: int, text: str, author_id: int = 1) -> int:
        """Seed an existing result (not an API call: it is not in the ledger).

        Args:
            task_id: The task, which must exist.
            text: The result's text.
            author_id: The result's author.

        Returns:
            The result's id.
        """
        with self._lock:
            task = self._world.tasks[task_id]
            result = self._world.create_result(task, text, author_id, self._clock())
            self._world.take_new_results()
            return result.id

    def complete_task(self, task_id: int) -> None:
        """Complete a task: its results close and stay closed (api-facts §5.1)."""
        with self._lock:
            self._world.complete_task(task_id)

    def resume_task(self, task_id: int) -> None:
        """Reopen a completed task."""
        with self._lock:
            self._world.resume_task(task_id)

    def results_of(self, task_id: int) -> list[dict[str, Any]]:
        """The task's live results as v3 items (rights as seen by the webhook user)."""
        with self._lock:
            call = Call(self._world, self._config, self._config.webhook_user, self._clock())
            return [_v3.render_item(call, r) for r in self._world.results_of(task_id)]

    def chat_messages(self, task_id: int) -> list[dict[str, Any]]:
        """Messages of a task chat (``tasks.task.chat.message.send`` returns no id)."""
        with self._lock:
            return [
                {"id": m.id, "authorId": m.author_id, "text": m.text}
                for m in self._world.messages.values()
                if m.task_id == task_id
            ]

    def comments_of(self, task_id: int) -> list[dict[str, Any]]:
        """Comments of a task, as ``{"id", "authorId", "text"}`` dicts."""
        with self._lock:
            return [
                {"id": c.id, "authorId": c.author_id, "text": c.text}
                for c in self._world.comments.values()
                if c.task_id == task_id
            ]

    def issue_oauth_tokens(self, user_id: int = 1) -> tuple[str, str]:
        """A fresh (access_token, refresh_token) pair, as an app install would get."""
        with self._lock:
            access, refresh, _expires = self._tokens.issue(user_id, self._clock(), self._config)
            return access, refresh

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (the next call gets 401)."""
        with self._lock:
            self._tokens.expire_access_tokens(self._clock())

    def bucket_level(self, client: str = "127.0.0.1") -> float:
        """The bucket level of ``client`` now (0 if it never called)."""
        with self._lock:
            bucket = self._buckets.get(client)
            return 0.0 if bucket is None else bucket.level_at(self._clock())

    def operating(self, method: str, *, webhook_code: str | None = None) -> BudgetReading:
        """A method's running total for a webhook (default: the configured one)."""
        with self._lock:
            code = webhook_code or self._config.webhook_code
            return self._budget.reading((("webhook", code), method.lower()), self._clock())

    def stats(self) -> PortalStats:
        """A frozen snapshot of the counters."""
        with self._lock:
            c = self._counters
            created = self.ledger.created
            return PortalStats(
                requests=c.requests,
                rate_limited=c.rate_limited,
                operating_limited=c.operating_limited,
                unauthorized=c.unauthorized,
                expired_tokens=c.expired_tokens,
                executed=c.executed,
                replays=c.replays,
                refreshes=c.refreshes,
                peak_bucket_level=c.peak_bucket_level,
                results_created=len(created),
                duplicates=self.ledger.duplicates(),
                faults=dict(c.faults),
                by_method=dict(c.by_method),
            )

    def reset_counters(self) -> None:
        """Zero the counters (the ledger, the world and the limits' state stay)."""
        with self._lock:
            self._counters = _Counters()

    # -- the entry point --------------------------------------------------------------------
    def handle(self, request: PortalRequest) -> PortalResponse:
        """Answer one HTTP request."""
        with self._lock:
            now = self._clock()
            path = request.path
            if path.startswith("/_fake/"):
                return self._control(request)
            if path.rstrip("/") == "/oauth/token":
                return self._token_endpoint(request, now)
            if path.startswith("/rest/"):
                return self._rest(request, now)
            return _json(404, {"error": "NOT_FOUND", "error_description": "Not found"})

    # -- /rest/ -----------------------------------------------------------------------------
    def _rest(self, request: PortalRequest, now: float) -> PortalResponse:
        cfg = self._config
        counters = self._counters
        counters.requests += 1
        self._ran = False
        route = parse_route(request.path)
        roll = self._faults.roll(cfg.faults, route.method if route else "")
        self._late = roll.late
        latency = cfg.latency

        if self._redirects(request, rolled=roll.before is FaultKind.REDIRECT):
            counters.faults[FaultKind.REDIRECT.value] += 1
            target = (cfg.faults.redirect_to or request.base_url).rstrip("/")
            location = target + request.path + (f"?{request.query}" if request.query else "")
            # api-facts §7 "Domain change": a 302 to the new address; the POST body is lost
            # by clients that follow it blindly.
            headers = {"Location": location, "Content-Type": "text/html; charset=utf-8"}
            return PortalResponse(302, headers, b"", delay=latency)

        bucket = self._buckets.get(request.client)
        if bucket is None:
            bucket = LeakyBucket(
                burst=cfg.effective_burst,
                drain=cfg.effective_drain,
                neighbour=cfg.effective_neighbour_rate,
                now=now,
            )
            self._buckets[request.client] = bucket
        if not bucket.try_admit(now):
            counters.rate_limited += 1
            return _error(query_limit_exceeded(), latency)
        counters.peak_bucket_level = max(counters.peak_bucket_level, bucket.level)

        if roll.before is FaultKind.HTML_503:
            counters.faults[FaultKind.HTML_503.value] += 1
            headers = {"Content-Type": "text/html; charset=utf-8"}
            return PortalResponse(503, headers, HTML_503, delay=latency)
        if roll.before is FaultKind.FAIL_BEFORE:
            counters.faults[FaultKind.FAIL_BEFORE.value] += 1
            return _error(internal_server_error(), latency)

        try:
            if route is None:
                raise method_not_found("v2")
            response = self._dispatch(route, request, now)
        except ApiError as error:
            if error.status == 401:
                counters.unauthorized += 1
                if error.code == "expired_token":
                    counters.expired_tokens += 1
            response = _error(error, 0.0)
        response = _echo_key(route, request, response)

        if response.action is Action.EXECUTE_LATER:
            counters.faults[FaultKind.SLOW_EXECUTION.value] += 1
            return dataclasses.replace(response, delay=response.delay + latency)
        if not self._ran:
            return dataclasses.replace(response, delay=latency)
        if roll.after is FaultKind.DROP_AFTER:
            counters.faults[FaultKind.DROP_AFTER.value] += 1
            return dataclasses.replace(response, action=Action.DROP_AFTER, delay=latency)
        if roll.after is FaultKind.SLOW:
            counters.faults[FaultKind.SLOW.value] += 1
            delay = latency + cfg.faults.slow_seconds
            return dataclasses.replace(response, action=Action.DELAY, delay=delay)
        return dataclasses.replace(response, delay=latency)

    def _redirects(self, request: PortalRequest, *, rolled: bool) -> bool:
        """Whether to answer with a 302, given whether the request rolled the fault.

        A moved portal's new address never redirects. With ``redirect_to`` set, that is
        its origin. Without it, the new address is this very server, so the re-post of a
        redirected request (same client, URL and body) is what reached the new address:
        it is served, so following a redirect always makes progress.
        """
        target = self._config.faults.redirect_to
        if target is not None:
            return rolled and not _same_origin(request.base_url, target)
        if not rolled and not self._redirected:
            return False
        repost = (request.client, request.path, request.query, request.body)
        if repost in self._redirected:
            self._redirected.discard(repost)
            return False
        if rolled:
            self._redirected.add(repost)
        return rolled

    def _dispatch(self, route: Route, request: PortalRequest, now: float) -> PortalResponse:
        caller = self._webhook_caller(route)
        if route.api == "v3":
            body = self._v3_body(request)
            if caller is None:
                token = body.get("auth") if isinstance(body, dict) else None
                if token is None and isinstance(body, list):
                    # [INFERRED] a v3 batch body is an array, so it cannot carry
                    # ``auth``: take it from the query string instead.
                    token = parse_php_query(request.query).get("auth")
                caller = self._token_caller(token, now)
            if isinstance(body, dict):
                body.pop("auth", None)
            if route.method == "batch":
                return self._v3_batch(request, caller, body, now)
            if not isinstance(body, dict):
                raise v3_error(INVALID_JSON, "Request body must be a JSON object")
            handler = _v3.METHODS.get(route.method)
            if handler is None:
                raise method_not_found("v3")
            return self._single("v3", route.method, handler, caller, body, request, now)

        params = self._v2_params(request)
        token = params.pop("auth", None)
        if caller is None:
            caller = self._token_caller(token, now)
        if route.method == "batch":
            return self._v2_batch(request, caller, params, now)
        v2_handler = _v2.METHODS.get(route.method)
        if v2_handler is None:
            # api-facts §4.1: the v3-only methods (add, update, ...) land here: 404.
            raise method_not_found("v2")
        return self._single("v2", route.method, v2_handler, caller, params, request, now)

    # -- authentication ------------------------------------------------------------------
    def _webhook_caller(self, route: Route) -> _Caller | None:
        if route.webhook_code is None:
            return None
        user_id = self._webhooks.get(route.webhook_code)
        if user_id is None or user_id != route.webhook_user:
            raise no_auth_found()
        return _Caller(user_id, ("webhook", route.webhook_code))

    def _token_caller(self, token: JSON, now: float) -> _Caller:
        if not isinstance(token, str) or not token:
            raise no_auth_found()
        user_id = self._tokens.user_of(token, now)
        # api-facts §2.2: the budget is per application, so all users of the app share it.
        return _Caller(user_id, ("app", self._config.client_id))

    # -- bodies ---------------------------------------------------------------------------
    def _v3_body(self, request: PortalRequest) -> JSON:
        content_type = (request.header("content-type") or "").lower()
        if "form-urlencoded" in content_type or "multipart/form-data" in content_type:
            # api-facts §4.1: a form-data body gives INVALIDJSONEXCEPTION (400).
            raise v3_error(INVALID_JSON, "Request body must be JSON")
        # api-facts §4.1: REST 3.0 ignores the query string; an empty body (a GET) is {}.
        if not request.body.strip():
            return {}
        try:
            return decode(request.body)
        except msgspec.DecodeError:
            raise v3_error(INVALID_JSON, "Request body is not valid JSON") from None

    def _v2_params(self, request: PortalRequest) -> dict[str, JSON]:
        # v2 takes parameters from the query string and the body, JSON or form.
        params = parse_php_query(request.query)
        body = request.body.strip()
        if not body:
            return params
        content_type = (request.header("content-type") or "").lower()
        if "json" in content_type or body[:1] == b"{":
            try:
                decoded = decode(body)
            except msgspec.DecodeError:
                decoded = None  # like PHP: an undecodable body is simply no parameters
            if isinstance(decoded, dict):
                params.update(decoded)
            return params
        params.update(parse_php_query(body.decode("utf-8", "replace")))
        return params

    # -- one call -------------------------------------------------------------------------
    def _single(
        self,
        api: str,
        method: str,
        handler: Handler,
        caller: _Caller,
        params: dict[str, JSON],
        request: PortalRequest,
        now: float,
    ) -> PortalResponse:
        pending: tuple[Hashable, bytes, str] | None = None
        if api == "v3" and method in _v3.WRITES:
            idempotency = self._idempotency_check(request, caller, method, params, now)
            if isinstance(idempotency, PortalResponse):
                return idempotency
            pending = idempotency

        def run(now: float) -> PortalResponse:
            key = (caller.credential, method)
            if self._budget.is_blocked(key, now):
                self._counters.operating_limited += 1
                raise operation_time_limit()
            record = _RequestRecord(idempotency_key=pending[2] if pending else None)
            executed = self._execute(api, method, handler, caller, params, now, record, charge=True)
            self._flush(record, rolled_back=False)
            if executed.error is not None:
                raise executed.error
            time_ = self._time(now, executed.cost, executed.reading)
            response = _json(200, {"result": executed.result, "time": time_})
            if pending is not None:
                self._remember(pending, response, now)
            return response

        return self._run_or_defer(run, request, now)

    def _run_or_defer(
        self, run: Callable[[float], PortalResponse], request: PortalRequest, now: float
    ) -> PortalResponse:
        """Run the call now, or, under the slow-execution fault, hand back a deferral.

        Everything before ``run`` (bucket, auth, the Idempotency-Key lookup) has
        happened on arrival; ``run`` itself (budget check, execution, storing the
        answer under the key) happens only when the adapter calls ``deferred``. A
        same-key request arriving in between finds nothing stored and runs as well
        (api-facts §4.1: two same-key requests at the same time may both run).
        """
        if not self._late:
            return run(now)
        route = parse_route(request.path)

        def deferred() -> PortalResponse:
            with self._lock:
                try:
                    response = run(self._clock())
                except ApiError as error:
                    response = _error(error, 0.0)
                return _echo_key(route, request, response)

        return PortalResponse(
            202,
            {},
            b"",
            action=Action.EXECUTE_LATER,
            delay=self._config.faults.slow_execution_seconds,
            deferred=deferred,
        )

    def _execute(
        self,
        api: str,
        method: str,
        handler: Handler,
        caller: _Caller,
        params: dict[str, JSON],
        now: float,
        record: _RequestRecord,
        *,
        charge: bool,
        in_batch: bool = False,
    ) -> _Exec:
        """Run one method: the world changes, the cost is charged, the record written.

        A call that fails validation still ran on the server, so it is charged too.
        """
        cfg = self._config
        call = Call(self._world, cfg, caller.user_id, now)
        base = cfg.base_cost(method)
        jitter = self._cost_rng.uniform(-cfg.cost_jitter, cfg.cost_jitter) if cfg.cost_jitter else 0
        # Scale compresses time, so a call's cost shrinks with it (config docstring).
        cost = base * (1 + jitter) / cfg.scale
        try:
            result, error = handler(call, params), None
        except ApiError as failure:
            result, error = None, failure
        reading = self._budget.charge((caller.credential, method), now, cost) if charge else None
        self._ran = True
        self._counters.executed += 1
        self._counters.by_method[method] += 1
        record.calls.append(
            ExecutedCall(
                at=now,
                api=api,
                method=method,
                user_id=caller.user_id,
                ok=error is None,
                cost=cost,
                in_batch=in_batch,
                idempotency_key=record.idempotency_key,
            )
        )
        for new in self._world.take_new_results():
            record.created.append(
                CreatedResult(
                    id=new.id,
                    task_id=new.task_id,
                    text=new.text,
                    author_id=new.author_id,
                    method=method,
                    created_at=new.created_at,
                    idempotency_key=record.idempotency_key,
                )
            )
        return _Exec(result, error, cost, reading)

    def _flush(self, record: _RequestRecord, *, rolled_back: bool) -> None:
        calls = record.calls
        if rolled_back:
            calls = [dataclasses.replace(c, rolled_back=True) for c in calls]
        self.ledger.record_calls(calls)
        if not rolled_back:
            self.ledger.record_created(record.created)

    def _time(self, start: float, cost: float, reading: BudgetReading | None) -> JSON:
        cfg = self._config
        return time_block(
            start=start,
            cost=cost,
            reading=reading if cfg.report_operating else None,
            integer_reset=cfg.scale == 1,
            utc_offset_hours=cfg.utc_offset_hours,
        )

    # -- Idempotency-Key (api-facts §4.1) -------------------------------------------------------
    def _idempotency_check(
        self, request: PortalRequest, caller: _Caller, method: str, body: JSON, now: float
    ) -> tuple[Hashable, bytes, str] | PortalResponse | None:
        key = request.header("idempotency-key")
        if key is None:
            return None
        if not is_valid_key(key):
            raise v3_error(
                INVALID_IDEMPOTENCY_KEY,
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
        store_key = (caller.credential, caller.user_id, method, key)
        # ``auth`` is left out: after a token refresh the retry carries a new token.
        print_ = fingerprint(body)
        stored = self._idempotency.get(store_key, now)
        if stored is None:
            return store_key, print_, key
        if stored.fingerprint != print_:
            raise v3_error(
                IDEMPOTENCY_KEY_REUSED,
                "Idempotency-Key was already used with a different request",
                status=422,
            )
        self._counters.replays += 1
        self._ran = True  # answered: the after-faults may hit a replay too
        headers = {**dict(stored.headers), "Idempotent-Replayed": "true"}
        return PortalResponse(stored.status, headers, stored.body)

    def _remember(
        self, pending: tuple[Hashable, bytes, str], response: PortalResponse, now: float
    ) -> None:
        store_key, print_, _key = pending
        self._idempotency.put(
            store_key,
            StoredResponse(
                fingerprint=print_,
                status=response.status,
                headers=tuple(response.headers.items()),
                body=response.body,
                # api-facts §4.1: kept 24 h (scaled).
                expires_at=now + self._config.effective_idempotency_ttl,
            ),
        )

    # -- v3 batch (api-facts §3.2) --------------------------------------------------------------
    def _v3_batch(
        self, request: PortalRequest, caller: _Caller, body: JSON, now: float
    ) -> PortalResponse:
        cfg = self._config
        commands = parse_v3_batch(body, cfg.max_batch_commands, limit_error=cfg.batch_limit_error)
        for command in commands:
            if command.method == "batch":
                # api-facts §3.1, §6: a nested batch is forbidden (rest 24.0.0+) and
                # answered 405 ERROR_BATCH_METHOD_NOT_ALLOWED, the system error of both
                # batch forms.
                raise v2_error(
                    "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405
                )
            if command.method not in _v3.METHODS:
                # [SDK] only v3 methods may run in a v3 batch.
                raise method_not_found("v3")
        idempotency = self._idempotency_check(request, caller, "batch", body, now)
        if isinstance(idempotency, PortalResponse):
            return idempotency

        def run(now: float) -> PortalResponse:
            nested = cfg.batch_billing == "nested"
            batch_key = (caller.credential, "batch")
            if not nested and self._budget.is_blocked(batch_key, now):
                self._counters.operating_limited += 1
                raise operation_time_limit()

            record = _RequestRecord(idempotency_key=idempotency[2] if idempotency else None)
            if cfg.batch_rollback:
                self._world.begin()
            results: list[JSON] = []
            aliases: dict[str, JSON] = {}
            readings: dict[str, BudgetReading] = {}
            total = 0.0
            failure: ApiError | None = None
            for command in commands:
                try:
                    query = resolve_refs(command.query, aliases)
                except ApiError as error:
                    failure = error
                    break
                if nested and self._budget.is_blocked((caller.credential, command.method), now):
                    self._counters.operating_limited += 1
                    failure = operation_time_limit()
                    break
                executed = self._execute(
                    "v3",
                    command.method,
                    _v3.METHODS[command.method],
                    caller,
                    query,
                    now,
                    record,
                    charge=nested,
                    in_batch=True,
                )
                total += executed.cost
                if executed.reading is not None:
                    readings[command.method] = executed.reading
                if executed.error is not None:
                    failure = executed.error
                    break
                results.append(executed.result)
                if command.alias:
                    aliases[command.alias] = executed.result

            rolled_back = failure is not None and cfg.batch_rollback
            if rolled_back:
                # The SDK's reading of api-facts §3.2: all-or-nothing.
                self._world.rollback()
            else:
                # Either it all succeeded, or the switch says earlier commands stay.
                self._world.commit()
            reading = None
            if not nested and record.calls:
                # PR #539's reading (api-facts §2.2): the whole cost goes to the key ``batch``.
                reading = self._budget.charge(batch_key, now, total)
            elif readings:
                # Docs' reading: each nested method was charged; report the fullest one.
                reading = max(readings.values(), key=lambda r: r.operating)
            if reading is None:
                # api-facts §2.1: `time` carries `operating`; no command was charged.
                reading = self._budget.reading(batch_key, now)
            self._flush(record, rolled_back=rolled_back)
            if failure is not None:
                raise failure
            response = _json(200, {"result": results, "time": self._time(now, total, reading)})
            if idempotency is not None:
                self._remember(idempotency, response, now)
            return response

        return self._run_or_defer(run, request, now)

    # -- v2 batch (api-facts §3.1) --------------------------------------------------------------
    def _v2_batch(
        self, request: PortalRequest, caller: _Caller, params: dict[str, JSON], now: float
    ) -> PortalResponse:
        cfg = self._config
        commands, halt = parse_v2_batch(params, cfg.max_batch_commands)

        def run(now: float) -> PortalResponse:
            nested = cfg.batch_billing == "nested"
            batch_key = (caller.credential, "batch")
            if not nested and self._budget.is_blocked(batch_key, now):
                self._counters.operating_limited += 1
                raise operation_time_limit()

            record = _RequestRecord()
            ok: dict[str | int, JSON] = {}
            by_name: dict[str, JSON] = {}
            errors: dict[str | int, JSON] = {}
            totals: dict[str | int, JSON] = {}
            timings: dict[str | int, tuple[float, float, BudgetReading | None]] = {}
            total = 0.0
            for command in commands:
                handler = _v2.METHODS.get(command.method)
                failure: ApiError | None = None
                if handler is None:
                    failure = method_not_found("v2")
                elif nested and self._budget.is_blocked((caller.credential, command.method), now):
                    self._counters.operating_limited += 1
                    failure = operation_time_limit()
                else:
                    query = parse_command_query(substitute_results(command.query, by_name))
                    query.pop("auth", None)
                    executed = self._execute(
                        "v2",
                        command.method,
                        handler,
                        caller,
                        query,
                        now,
                        record,
                        charge=nested,
                        in_batch=True,
                    )
                    timings[command.key] = (now + total, executed.cost, executed.reading)
                    total += executed.cost
                    failure = executed.error
                    if failure is None:
                        ok[command.key] = executed.result
                        by_name[str(command.key)] = executed.result
                        if command.method in _v2.WITH_TOTAL and isinstance(executed.result, list):
                            # api-facts §3.1: totals only for methods that have one.
                            totals[command.key] = len(executed.result)
                if failure is not None:
                    errors[command.key] = failure.body
                    if halt:
                        # api-facts §3.1: halt=1 stops at the first failing sub-request.
                        break

            reading = None
            if not nested and record.calls:
                reading = self._budget.charge(batch_key, now, total)
            self._flush(record, rolled_back=False)
            times: dict[str | int, JSON] = {}
            for key, (start, cost, own) in timings.items():
                if key in ok:
                    # PR #539: under ``batch`` billing every sub-result shows the batch total.
                    times[key] = self._time(start, cost, own if nested else reading)
            if nested and timings:
                reading = max(
                    (r for _s, _c, r in timings.values() if r is not None),
                    key=lambda r: r.operating,
                    default=None,
                )
            if reading is None:
                # api-facts §2.1, §3.1: the envelope's `time` always carries `operating`,
                # even when no command ran (all refused); then it is the batch's own total.
                reading = self._budget.reading(batch_key, now)
            body = {
                "result": {
                    # api-facts §3.1: empty collections are [] (PHP arrays), not {}.
                    "result": php_array(ok),
                    "result_error": php_array(errors),
                    "result_total": php_array(totals),
                    "result_next": [],
                    "result_time": php_array(times),
                },
                "time": self._time(now, total, reading),
            }
            return _json(200, body)

        return self._run_or_defer(run, request, now)

    # -- the OAuth server and the control endpoints ------------------------------------
    def _token_endpoint(self, request: PortalRequest, now: float) -> PortalResponse:
        params = parse_php_query(request.query)
        if request.body:
            params.update(parse_php_query(request.body.decode("utf-8", "replace")))
        try:
            body = token_endpoint(self._tokens, self._config, params, now, request.base_url)
        except ApiError as error:
            return _error(error, 0.0)
        self._counters.refreshes += 1
        return _json(200, body)

    def _control(self, request: PortalRequest) -> PortalResponse:
        if request.path == "/_fake/stats":
            return _json(200, self.stats().as_dict())
        if request.path == "/_fake/ledger":
            created = [dataclasses.asdict(c) for c in self.ledger.created]
            return _json(200, {"created": created, "duplicates": self.ledger.duplicates()})
        if request.path == "/_fake/reset" and request.method == "POST":
            self.reset_counters()
            return _json(200, {"ok": True})
        return _json(404, {"error": "NOT_FOUND", "error_description": "Not found"})


def _echo_key(
    route: Route | None, request: PortalRequest, response: PortalResponse
) -> PortalResponse:
    """A REST 3.0 write answers with the request's ``Idempotency-Key`` header echoed.

    The REST 3.0 page's example answers (api-facts §4.1) carry the key back, on the
    first answer and on a replay alike. The deferred answer of a late execution gets
    it when it is finally sent.
    """
    if route is None or route.api != "v3" or response.action is Action.EXECUTE_LATER:
        return response
    if route.method != "batch" and route.method not in _v3.WRITES:
        return response
    key = request.header("idempotency-key")
    if key is None or not is_valid_key(key):
        return response
    return dataclasses.replace(response, headers={**response.headers, "Idempotency-Key": key})


def _json(status: int, body: JSON) -> PortalResponse:
    return PortalResponse(status, dict(_JSON_HEADERS), encode(body))


def _error(error: ApiError, delay: float) -> PortalResponse:
    return PortalResponse(error.status, dict(_JSON_HEADERS), encode(error.body), delay=delay)


def _same_origin(base_url: str, target: str | None) -> bool:
    if target is None:
        return False
    a, b = urlsplit(base_url), urlsplit(target)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())
