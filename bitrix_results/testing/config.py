"""Configuration of the fake portal: the plan, the limits, the time scale and the faults.

Every number that comes from the API is cited to its section of
``docs/api-facts.md`` (``api-facts`` and a section number, below). Everything
the facts leave open is a switch, so a client can be tested under each reading:
batch billing, batch rollback, whether ``time`` carries the operating counters,
the new task card.

Scale: the portal runs on real wall time, and ``scale=S`` divides every *time constant*
by ``S``. Rates are multiplied by ``S``, windows, limits, costs and lifetimes divided by
``S``; the burst threshold (a count, not a time) is unchanged. A realistic ten-minute
run therefore takes ``600 / S`` seconds, and a client configured with the matching
``Limits.scaled(S)`` sees exactly the arithmetic of a real portal.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Faults", "PortalConfig"]

Plan = Literal["standard", "enterprise"]
BatchBilling = Literal["nested", "batch"]
MissingResult = Literal["access_denied", "entity_not_found"]
UnknownSelect = Literal["drop", "error"]
BatchLimitError = Literal["request_validation", "length_exceeded"]
ListWithoutSelect = Literal["id_only", "all_fields"]

# api-facts §1 table: (burst threshold X, drain rate Y per second) per plan.
_PLANS: Mapping[str, tuple[int, float]] = {
    "standard": (50, 2.0),
    "enterprise": (250, 5.0),
}


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Seeded fault injection; each probability is drawn per HTTP request (0 = never).

    Args:
        fail_before: A JSON 500 ``INTERNAL_SERVER_ERROR`` before anything runs.
        drop_after: The call runs and is recorded, then the TCP connection is closed
            with no HTTP response (the client cannot know whether it ran).
        slow: The call runs, then the answer waits ``slow_seconds`` of real time
            (not scaled: it exists to trip client timeouts, which are real). A slow
            *answer*.
        html_503: A ``text/html`` 503 page before anything runs (api-facts §6:
            proxies answer with HTML bodies).
        redirect: A 302 domain-change redirect before anything runs, to the same
            path on ``redirect_to`` (api-facts §7 "Domain change").
        slow_execution: A slow *execution*: the request is admitted, authenticated
            and its Idempotency-Key looked up on arrival, but the call itself runs
            only ``slow_execution_seconds`` of real time later, and the answer
            follows. A same-key request sent meanwhile finds no stored answer and
            runs too: api-facts §4.1, two requests with the same key at the same
            time may both run.
        slow_seconds: How long a ``slow`` answer waits, in real seconds.
        slow_execution_seconds: How long a ``slow_execution`` call waits, in real
            seconds.
        redirect_to: The origin redirects lead to. Requests that already arrive on
            it are served, so a client that re-posts there succeeds. None
            redirects to the request's own origin, and the re-post of a redirected
            request (same client, URL and body) is served: following always makes
            progress.
        methods: The REST method names (lower case, ``"batch"`` for batches) the
            faults apply to; None means every method.

    Raises:
        ValueError: A probability is outside [0, 1], or a delay is negative.

    Example:
        ```python
        faults = Faults(drop_after=0.1, methods=frozenset({"tasks.task.result.add"}))
        portal = FakePortal(PortalConfig(scale=20, faults=faults))
        ```
    """

    fail_before: float = 0.0
    drop_after: float = 0.0
    slow: float = 0.0
    html_503: float = 0.0
    redirect: float = 0.0
    slow_execution: float = 0.0
    slow_seconds: float = 1.0
    slow_execution_seconds: float = 1.0
    redirect_to: str | None = None
    methods: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("fail_before", "drop_after", "slow", "slow_execution", "html_503", "redirect"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {value!r}")
        if self.slow_seconds < 0 or self.slow_execution_seconds < 0:
            raise ValueError("Faults.slow_seconds and slow_execution_seconds must not be negative")
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.lower() for m in self.methods))

    def applies_to(self, method: str) -> bool:
        """Whether faults may hit a call of ``method`` (lower-case REST name)."""
        return self.methods is None or method in self.methods


@dataclass(frozen=True, kw_only=True)
class PortalConfig:
    """Everything that shapes the fake portal's behaviour, in *unscaled* (real API) units.

    Read the ``effective_*`` properties for the values the portal actually applies at
    the configured ``scale``.
    """

    # -- limits ---------------------------------------------------------------------
    plan: Plan = "standard"
    #: Override the plan's burst threshold X (api-facts §1).
    burst: int | None = None
    #: Override the plan's drain rate Y, requests per second (api-facts §1).
    drain_per_second: float | None = None
    #: api-facts §2.2: the cloud limit is 480 s of execution time per method.
    operating_limit: float = 480.0
    #: api-facts §2.2: summed over ten one-minute baskets, a 600 s window.
    operating_window: float = 600.0
    #: Time compression factor (see the module docstring).
    scale: float = 1.0

    # -- simulated processing cost (charged to the operating budget, never slept) -----
    default_cost: float = 0.1
    #: Uniform jitter, as a fraction of the cost (0.2 = ±20%). 0 makes costs exact.
    cost_jitter: float = 0.2
    #: Per-method cost override, keyed by lower-case REST method name.
    method_costs: Mapping[str, float] = field(default_factory=dict)

    # -- unsettled facts, as switches (api-facts §2.2, §3.2, summary 3) -------------------
    batch_billing: BatchBilling = "nested"
    batch_rollback: bool = True
    #: False: omit ``operating``/``operating_reset_at`` from ``time`` (self-hosted, api-facts §2.1).
    report_operating: bool = True
    #: True: the new task card (tasks 25.700.0+): v2 comment methods refuse (api-facts §5).
    new_task_card: bool = False
    #: A result that does not exist (update/delete): the method pages document 403
    #: ACCESSDENIEDEXCEPTION on ``id``, the common table 400 ENTITYNOTFOUNDEXCEPTION
    #: (api-facts §4.2, §5.5). Both readings; a client must cope with either.
    missing_result: MissingResult = "entity_not_found"
    #: An unknown field of the result itself in ``select``: silently dropped (api-facts
    #: §4.2) or UNKNOWNDTOPROPERTYEXCEPTION like a related field ("error").
    unknown_select: UnknownSelect = "drop"
    #: A REST 3.0 batch of more commands than allowed: the docs give no code (api-facts
    #: §3.2), so either a REST 3.0 request validation error or the v2 system code
    #: ERROR_BATCH_LENGTH_EXCEEDED (400, api-facts §3.1, §6). A v2 batch always gives
    #: the documented v2 code.
    batch_limit_error: BatchLimitError = "request_validation"
    #: v3 ``tasks.task.result.list`` without ``select``: the docs say "the default
    #: fields"; the sibling ``tasks.task.list`` returns only ``id`` (api-facts §4.3).
    #: "id_only" is the pessimistic reading a client must survive.
    list_without_select: ListWithoutSelect = "id_only"

    # -- transport --------------------------------------------------------------------
    #: Real seconds added before every /rest answer (not scaled: it is the network).
    latency: float = 0.0
    #: A second tenant behind every client address, requests per second (unscaled).
    neighbour_rate: float = 0.0
    faults: Faults = field(default_factory=Faults)

    # -- credentials and lifetimes ----------------------------------------------------
    webhook_user: int = 1
    webhook_code: str = "f4k3w3bh00kc0d31"
    #: A webhook of an administrator (user 2), for the admin-only paths.
    admin_webhook_code: str = "f4k3adm1nh00kc0d"
    client_id: str = "local.fake0app0000000.00000001"
    client_secret: str = "fakeClientSecret0000000000000000000000000000000000"
    member_id: str = "f4k3m3mb3r1d0000000000000000000a"
    #: api-facts §7: an access token is valid 1 hour.
    token_lifetime: float = 3600.0
    #: api-facts §7: a refresh token lives 180 days.
    refresh_token_lifetime: float = 180 * 86400.0
    #: api-facts §4.1: Idempotency-Key responses are kept 24 h.
    idempotency_ttl: float = 86400.0

    # -- shapes -----------------------------------------------------------------------
    #: api-facts §4.3: the v3 result list has no documented page size; like tasks.task.list
    #: we default to 50 and silently cap larger requests, so clients must cope.
    list_page_cap: int = 50
    #: api-facts §3.1/§3.2: at most 50 commands per batch.
    max_batch_commands: int = 50
    #: UTC offset of the portal's ISO-8601 dates, in hours.
    utc_offset_hours: float = 3.0

    def __post_init__(self) -> None:
        if self.plan not in _PLANS:
            raise ValueError(f"plan must be one of {sorted(_PLANS)}, got {self.plan!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        if self.batch_billing not in ("nested", "batch"):
            raise ValueError(
                f"batch_billing must be 'nested' or 'batch', got {self.batch_billing!r}"
            )
        choices: dict[str, tuple[str, ...]] = {
            "missing_result": ("access_denied", "entity_not_found"),
            "unknown_select": ("drop", "error"),
            "batch_limit_error": ("request_validation", "length_exceeded"),
            "list_without_select": ("id_only", "all_fields"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.cost_jitter < 1.0:
            raise ValueError("cost_jitter must be in [0, 1)")
        positive = ("operating_limit", "operating_window", "token_lifetime", "idempotency_ttl")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.drain_per_second is not None and self.drain_per_second <= 0:
            raise ValueError("drain_per_second must be positive")
        if self.latency < 0 or self.neighbour_rate < 0 or self.default_cost < 0:
            raise ValueError("latency, neighbour_rate and default_cost must not be negative")
        if self.list_page_cap < 1 or self.max_batch_commands < 1:
            raise ValueError("list_page_cap and max_batch_commands must be at least 1")
        # Freeze the mapping too, and normalise method names to the lower case we key on.
        costs = {name.lower(): float(cost) for name, cost in self.method_costs.items()}
        object.__setattr__(self, "method_costs", costs)

    def replace(self, **changes: Any) -> PortalConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # -- values as applied at this scale -----------------------------------------------
    @property
    def effective_burst(self) -> int:
        """Burst threshold X: a count, so not scaled."""
        return self.burst if self.burst is not None else _PLANS[self.plan][0]

    @property
    def effective_drain(self) -> float:
        """Drain rate Y × scale, requests per real second."""
        rate = self.drain_per_second if self.drain_per_second is not None else _PLANS[self.plan][1]
        return rate * self.scale

    @property
    def effective_window(self) -> float:
        """Operating window W ÷ scale, real seconds."""
        return self.operating_window / self.scale

    @property
    def effective_limit(self) -> float:
        """Operating limit L ÷ scale, in the same compressed seconds costs are charged in."""
        return self.operating_limit / self.scale

    @property
    def effective_basket(self) -> float:
        """Basket width (W / 10) ÷ scale: api-facts §2.2, ten baskets per window."""
        return self.effective_window / 10

    @property
    def effective_token_lifetime(self) -> float:
        return self.token_lifetime / self.scale

    @property
    def effective_refresh_lifetime(self) -> float:
        return self.refresh_token_lifetime / self.scale

    @property
    def effective_idempotency_ttl(self) -> float:
        return self.idempotency_ttl / self.scale

    @property
    def effective_neighbour_rate(self) -> float:
        return self.neighbour_rate * self.scale

    def base_cost(self, method: str) -> float:
        """The unscaled, unjittered cost of one call of ``method``."""
        return self.method_costs.get(method.lower(), self.default_cost)
