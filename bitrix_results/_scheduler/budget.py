"""The operating budget per (credential, method): what we know, and whether a call may go.

The portal sums each method's execution time per application or webhook over
ten one-minute baskets; a basket expires ``W`` after its first call and
``time.operating_reset_at`` is when the oldest one does. Before each call the
portal compares the running total with the limit ``L``: at or below it the call
runs (even if it crosses), above it the call gets 429 ``OPERATION_TIME_LIMIT``
(api-facts §2.2). ``time.operating`` is already that running total (api-facts §2.1,
design §7.1): it is *remembered*, never summed.

This module is pure state and arithmetic, shared by the memory and the Redis
backend: :class:`KeyState` is what we know about one key, :func:`try_admit`
decides whether a call may be sent now (and registers it in flight),
:func:`settle` learns from its outcome. Times are wall-clock Unix seconds from
the scheduler's clock; ``reset_at`` is converted to that clock.

The rule for admission, per key, with ``c`` the learned mean cost of one unit:
send while ``total + (in_flight + units) * 1.5 c <= L``. That keeps our *own*
total at or under ``L`` after every call, whatever the in-flight calls really
cost, with a margin of about one and a half calls at the end of a window (not a
fraction of the limit), so the call after a basket expires is always admitted
by the portal. When nothing is in flight and there is no room, the key
is *held* until the known reset (or one basket, ``W / 10``, when unknown), then
exactly one *probe* call goes to learn the new total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

import msgspec

from ..models import ResponseTime
from .limits import Limits
from .stats import BudgetStatistics

__all__ = [
    "Admission",
    "BudgetKey",
    "BudgetRules",
    "KeyState",
    "Settlement",
    "merge_keys",
    "settle",
    "statistics_of",
    "try_admit",
]

#: (credential fingerprint, REST method): the portal's budget key (api-facts §2.2,
#: "per method, separately for each application or webhook").
BudgetKey = tuple[str, str]

#: Weight of the past in the cost average, per reply: about the last 20 replies
#: count, so the estimate follows a change of cost within a few seconds of traffic.
_DECAY = 0.95
#: Calls are projected at 1.5 times the learned mean cost. Then no mix of
#: in-flight calls whose costs vary by up to ±50% around the mean can push the
#: real total over L before the call we admit runs, or after it: the portal
#: cannot refuse us (the fake portal jitters ±20%). A measured spread would be
#: tighter, but replies overtake each other (one reply's increase then spans
#: several calls), which makes per-reply deviations meaningless. The price is
#: about half a call per window, at the window's end.
_PESSIMISM = 1.5
#: Two reset_at values closer than this are the same basket (floats from JSON).
_SAME = 1e-6


@dataclass(frozen=True, slots=True)
class BudgetRules:
    """The portal's budget rule for one scheduler, from its :class:`Limits`."""

    limit: float
    window: float

    @classmethod
    def from_limits(cls, limits: Limits) -> BudgetRules:
        return cls(limit=float(limits.operating_limit), window=float(limits.operating_window))

    @property
    def basket(self) -> float:
        """One basket, ``W / 10`` (api-facts §2.2: ten one-minute baskets per window)."""
        return self.window / 10

    def slack(self, integral: bool) -> float:
        """How long after a reported reset we wait before probing.

        A real portal sends ``operating_reset_at`` as an int (api-facts §2.1) that may
        be rounded either way, so an integral value gets a whole second more; on
        top, a thousandth of the window (0.6 s of a 600 s window) for clock jitter.
        """
        return (1.0 if integral else 0.0) + self.window / 1000


class Flight(msgspec.Struct, array_like=True):
    """One admitted call not yet settled: its units of this key and its lease."""

    units: int
    #: Wall time after which a crashed process's flight stops counting (Redis).
    expires: float


_UNITS = attrgetter("units")


class KeyState(msgspec.Struct, kw_only=True):
    """Everything known about one budget key. Mutable; owned by a backend."""

    #: None: no reply yet. False: replies carry no ``operating`` (self-hosted
    #: portals, api-facts §2.1), so only 429 is reacted to. True: budgeted.
    tracked: bool | None = None
    #: The latest running total reported by the portal (the highest of the
    #: current basket generation: replies can arrive out of order).
    total: float | None = None
    #: ``operating_reset_at`` as the portal sent it; it only grows as baskets
    #: expire, which is how a stale (overtaken) reply is recognised.
    raw_reset: float | None = None
    #: The same instant on our wall clock (see :func:`_reset_of`).
    reset_at: float | None = None
    reset_integral: bool = False
    #: Ratio-of-sums average of cost per unit: sum of total increases over sum
    #: of units, both decayed by _DECAY per sample.
    cost_num: float = 0.0
    cost_den: float = 0.0
    #: Units replied since the last increase of the total that are not yet
    #: attributed (their replies were overtaken by a later call's).
    pending: int = 0
    #: Until when the key is held (wall time); once passed, one probe may go.
    held_until: float | None = None
    #: The ticket of the probe in flight, if any.
    probe: str | None = None
    flights: dict[str, Flight] = msgspec.field(default_factory=dict)

    @property
    def cost(self) -> float | None:
        """The learned cost of one unit, in operating seconds (None until learned)."""
        return self.cost_num / self.cost_den if self.cost_den > 0 else None

    @property
    def cost_bound(self) -> float | None:
        """The pessimistic cost of one unit used for projections."""
        cost = self.cost
        return None if cost is None else cost * _PESSIMISM

    @property
    def in_flight_units(self) -> int:
        # map + attrgetter sums in C: this runs on every admission.
        return sum(map(_UNITS, self.flights.values()))


class Admission(msgspec.Struct, frozen=True, gc=False):
    """The answer of :func:`try_admit`."""

    # A frozen msgspec Struct rather than a frozen dataclass, like Settlement:
    # one of each is made per call, and a frozen dataclass's
    # __init__ (object.__setattr__ per field) costs about 1 us against 0.2 us.
    # gc=False: it holds only numbers and tuples of strings, never a cycle.

    admitted: bool
    #: When to ask again (wall time); ``math.inf``: when a key's state changes.
    retry_at: float = math.inf
    #: Whether another call settling may make room before ``retry_at`` (False
    #: for a hold: only time ends it). Backends that cannot be woken (Redis)
    #: poll only then, and otherwise sleep straight to ``retry_at``.
    on_change: bool = True
    #: The keys that refused: a change of one of them is worth a new look.
    blocked_by: tuple[BudgetKey, ...] = ()


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """How an admitted call ended, for :func:`settle`."""

    #: replied: a success with its time block. failed: not executed, or unknown.
    #: operating_limit: 429, not executed, the key is over its budget.
    kind: Literal["replied", "failed", "operating_limit"]
    time: ResponseTime | None = None
    #: A replay of a stored Idempotency-Key response: its time block is the
    #: original's and it cost nothing now (api-facts §4.1).
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Verdict:
    admit: bool
    probe: bool = False
    retry_at: float = math.inf
    hold: float | None = None
    on_change: bool = True


# The verdicts without a time, made once: _verdict runs on every admission
# (once per call), and a frozen verdict can be shared.
_ADMIT = _Verdict(admit=True)
_ADMIT_PROBE = _Verdict(admit=True, probe=True)
_REFUSE = _Verdict(admit=False)


def merge_keys(keys: Iterable[tuple[BudgetKey, int]]) -> tuple[tuple[BudgetKey, int], ...]:
    """One entry per key, units added up, in first-seen order."""
    merged: dict[BudgetKey, int] = {}
    for key, units in keys:
        merged[key] = merged.get(key, 0) + max(0, units)
    return tuple(merged.items())


def try_admit(
    states: Mapping[BudgetKey, KeyState],
    ticket: str,
    keys: Sequence[tuple[BudgetKey, int]],
    rules: BudgetRules,
    now: float,
    *,
    lease: float = math.inf,
) -> Admission:
    """Admit the call ``ticket`` on every key at once, or say when to ask again.

    All or nothing: a batch charged to several keys goes only when every one of
    them has room. Admitting registers the call's units in flight on each key.
    A refusal may start a hold (recorded in the state).
    """
    # A plain loop rather than a comprehension and all(generator): fewer
    # temporary objects per admission.
    verdicts = []
    admit = True
    for key, units in keys:
        state = states[key]
        verdict = _verdict(state, units, rules, now)
        admit = admit and verdict.admit
        verdicts.append((state, units, verdict))
    if admit:
        for state, units, verdict in verdicts:
            state.flights[ticket] = Flight(units=units, expires=now + lease)
            if verdict.probe:
                state.probe = ticket
        return Admission(admitted=True, retry_at=now)
    retry_at = math.inf
    on_change = True
    blocked_by: list[BudgetKey] = []
    for (key, _), (state, _, verdict) in zip(keys, verdicts, strict=True):
        if verdict.hold is not None:
            state.held_until = verdict.hold
        if not verdict.admit:
            retry_at = min(retry_at, verdict.retry_at)
            on_change = on_change and verdict.on_change
            blocked_by.append(key)
    return Admission(
        admitted=False, retry_at=retry_at, on_change=on_change, blocked_by=tuple(blocked_by)
    )


def _verdict(state: KeyState, units: int, rules: BudgetRules, now: float) -> _Verdict:
    _expire_flights(state, now)
    if state.held_until is not None:
        if now < state.held_until:
            return _Verdict(admit=False, retry_at=state.held_until, on_change=False)
        # The hold is over: one probe learns the new total, the rest wait for it.
        return _ADMIT_PROBE if state.probe is None else _REFUSE
    if state.tracked is None:
        # Nothing known yet (first call, or no reply so far): one call at a time
        # until a reply says whether the portal reports operating at all. Without
        # this, a 1000-way gather would all be admitted blind.
        return _ADMIT_PROBE if not state.flights else _REFUSE
    if state.tracked is False:
        return _ADMIT
    total = state.total if state.total is not None else 0.0
    cost = state.cost_bound
    if cost is None:
        # Total known, cost not yet. One request runs at most 60 s, one basket,
        # on every key it is charged to (api-facts §1): while the total plus a
        # basket for each call in flight and this one stays within L, the
        # portal admits them all whatever they cost (7 at once after a probe on
        # a fresh budget of 480 s, not one). With nothing in flight our total
        # is exact, and the portal admits at total <= L (api-facts §2.2).
        flying = len(state.flights)
        if total + (flying + 1) * rules.basket <= rules.limit or (
            not flying and total <= rules.limit
        ):
            return _ADMIT
        if flying:
            return _REFUSE
    elif total + (state.in_flight_units + units) * cost <= rules.limit:
        return _ADMIT
    # No room as far as we know.
    reset_deadline = None
    if state.reset_at is not None:
        reset_deadline = state.reset_at + rules.slack(state.reset_integral)
        if now >= reset_deadline:
            # A basket expired since our total was reported: it is stale (too
            # high). One probe finds the real one.
            return _ADMIT_PROBE if state.probe is None else _REFUSE
    if state.flights:
        # Their replies will tell us more; wait for them (or for the reset).
        return _Verdict(admit=False, retry_at=reset_deadline or math.inf)
    hold = reset_deadline if reset_deadline is not None else now + rules.basket
    # Never longer than one window (issue: a hostile reset ten years ahead).
    hold = min(hold, now + rules.window)
    return _Verdict(admit=False, retry_at=hold, hold=hold, on_change=False)


def _expire_flights(state: KeyState, now: float) -> None:
    # Only a crashed process leaves a flight behind (memory flights never expire).
    flights = state.flights
    if flights:
        expired = [ticket for ticket, flight in flights.items() if flight.expires <= now]
        for ticket in expired:
            del flights[ticket]
    if state.probe is not None and state.probe not in state.flights:
        state.probe = None


def settle(
    states: MutableMapping[BudgetKey, KeyState],
    ticket: str,
    keys: Sequence[tuple[BudgetKey, int]],
    settlement: Settlement,
    rules: BudgetRules,
    now: float,
) -> None:
    """Take ``ticket`` out of flight on every key and learn from how it ended."""
    for key, units in keys:
        state = states[key]
        state.flights.pop(ticket, None)
        was_probe = state.probe == ticket
        if was_probe:
            state.probe = None
        if settlement.kind == "replied":
            if settlement.replayed:
                # A replay's time block is the original call's: nothing new.
                continue
            informative = _observe(state, units, settlement.time, rules, now)
            if was_probe and informative:
                state.held_until = None
        elif settlement.kind == "operating_limit":
            _hold_after_429(state, rules, now)


def _hold_after_429(state: KeyState, rules: BudgetRules, now: float) -> None:
    # api-facts §2.2: time the retry from operating_reset_at of the last successful
    # response (429 bodies carry no time); unknown or already past: one basket.
    hold = now + rules.basket
    if state.reset_at is not None:
        deadline = state.reset_at + rules.slack(state.reset_integral)
        if deadline > now:
            hold = deadline
    # No hold outlives one window from now, whatever was held before.
    state.held_until = min(max(state.held_until or hold, hold), now + rules.window)


def _reset_of(time: ResponseTime, now: float, window: float) -> tuple[float | None, float] | None:
    """The reply's reset instant, as the portal wrote it and on our wall clock.

    ``raw - start`` is how long after the call began the basket expires, on the
    portal's own clock; adding it to the time we received the reply removes any
    skew between the two clocks and errs late by the call's duration (safe: a
    probe sent late is still admitted). ``start`` rather than ``finish``: a
    time-compressed fake portal reports a simulated ``finish`` in the future.

    A basket expires at most one window after its first call (api-facts §2.2),
    so a reset further ahead is impossible: from a hostile or broken portal (a
    reset ten years ahead, ``1e12``, ``start = -1e12``) the raw value is dropped
    (None) and our instant clamped to one window, so it can hold the key no
    longer than a real one.

    An integral reset may be a second more: the portal rounds it (api-facts
    §2.1), and a basket opened less than a second before the call then reads
    as ``window + 0.x`` ahead. Taking those as impossible would make every
    reply of that second look like a new basket generation (no cost learned,
    one call at a time). A non-finite reset is no reset; a non-finite clock is
    no clock.
    """
    # NaN and infinities are no numbers; checked inline: this runs on every reply.
    reset = time.operating_reset_at
    if reset is None or not math.isfinite(reset):
        return None
    raw = float(reset)
    start, finish = time.start, time.finish
    if start is not None and math.isfinite(start):
        origin = float(start)
    elif finish is not None and math.isfinite(finish):
        origin = float(finish)
    else:
        # No portal clock to measure from: read raw as our wall clock.
        origin = now
    ahead = raw - origin
    most = window + 1.0 if raw.is_integer() else window
    if ahead > most:
        # Impossible: it names no basket generation. Only when to look again
        # stays, clamped; as a generation, each such reply would start its own,
        # no cost would ever be learned, and a later call's reply would make the
        # earlier ones look stale, their cost lost (found by review).
        return None, now + window
    return raw, now + ahead


def _observe(
    state: KeyState, units: int, time: ResponseTime | None, rules: BudgetRules, now: float
) -> bool:
    """Learn from a reply's time block; False when the reply was stale."""
    operating = None if time is None else time.operating
    if time is None or operating is None or not math.isfinite(operating) or operating < 0:
        # Self-hosted portals may omit the counters (api-facts §2.1, b24jssdk #459).
        # A total that is no number of seconds (NaN, infinite, negative) is no
        # total either: the time block is advisory, so learn nothing from it.
        if state.tracked is None:
            state.tracked = False
        return True
    operating = float(operating)
    state.tracked = True
    reset = _reset_of(time, now, rules.window)
    raw, local = (None, None) if reset is None else reset
    if state.total is None:
        _anchor(state, operating, raw, local)
        return True
    if raw is not None and state.raw_reset is not None:
        if raw < state.raw_reset - _SAME:
            # Executed before a basket expired that a later reply already
            # reported: its total is from the previous generation.
            return False
        if raw > state.raw_reset + _SAME:
            # The oldest basket expired: the total dropped by an amount we
            # cannot attribute to calls, so start counting afresh from here.
            _anchor(state, operating, raw, local)
            return True
        if local is not None and state.reset_at is not None:
            # Every conversion errs late; the earliest is the closest.
            state.reset_at = min(state.reset_at, local)
    elif raw is not None:
        # The first reset after replies without one (or with an impossible one):
        # the total we hold stands unless its own reset instant has passed.
        stale = state.reset_at is not None and now >= state.reset_at
        _anchor(state, operating if stale else max(operating, state.total), raw, local)
        return True
    if operating >= state.total:
        calls = state.pending + units
        # One request runs at most 60 s (api-facts §1), one basket at any time
        # scale: a bigger increase is another tenant of the credential or a
        # broken portal, and learning it whole would make every later call look
        # too expensive to admit for hundreds of replies.
        _learn(state, min(operating - state.total, rules.basket * calls), calls)
        state.pending = 0
        state.total = operating
    elif raw is None:
        # No reset time to tell an expiry from a reordering: trust the latest.
        _anchor(state, operating, None, None)
    else:
        # An earlier call's reply overtaken by a later one: its cost is already
        # in the total; count its units towards the next increase.
        state.pending += units
    return True


def _anchor(state: KeyState, total: float, raw: float | None, local: float | None) -> None:
    state.total = total
    state.raw_reset = raw
    state.reset_at = local
    state.reset_integral = raw is not None and raw.is_integer()
    state.pending = 0


def _learn(state: KeyState, increase: float, units: int) -> None:
    if units <= 0:
        return
    state.cost_num = state.cost_num * _DECAY + increase
    state.cost_den = state.cost_den * _DECAY + units


def statistics_of(key: BudgetKey, state: KeyState) -> BudgetStatistics:
    """A frozen snapshot of one key's state."""
    credential, method = key
    return BudgetStatistics(
        credential=credential,
        method=method,
        operating=state.total,
        reset_at=state.reset_at,
        cost=state.cost,
        cost_bound=state.cost_bound,
        held_until=state.held_until,
        in_flight_units=state.in_flight_units,
        tracked=state.tracked,
    )
