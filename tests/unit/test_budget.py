"""The operating budget's pure logic: learning, in-flight accounting, holds and probes."""

from __future__ import annotations

import math

import pytest
from scheduler_fakes import ADD

from bitrix_results._scheduler.budget import (
    BudgetKey,
    BudgetRules,
    KeyState,
    Settlement,
    merge_keys,
    settle,
    try_admit,
)
from bitrix_results.models import ResponseTime

RULES = BudgetRules(limit=480.0, window=600.0)
KEY: BudgetKey = ("cred", ADD)
T0 = 1_800_000_000.0
RESET = T0 + 520.5  # a fraction: no integral-rounding second in the slack


def states() -> dict[BudgetKey, KeyState]:
    return {KEY: KeyState()}


def admit(s: dict[BudgetKey, KeyState], ticket: str, now: float = T0, units: int = 1) -> bool:
    return try_admit(s, ticket, [(KEY, units)], RULES, now).admitted


def reply(
    s: dict[BudgetKey, KeyState],
    ticket: str,
    operating: float | None,
    reset: float | None = RESET,
    *,
    now: float = T0,
    units: int = 1,
    start: float | None = None,
    replayed: bool = False,
) -> None:
    time = ResponseTime(start=start, operating=operating, operating_reset_at=reset)
    settle(s, ticket, [(KEY, units)], Settlement("replied", time, replayed), RULES, now)


def fail(s: dict[BudgetKey, KeyState], ticket: str, now: float = T0, kind: str = "failed") -> None:
    settle(s, ticket, [(KEY, 1)], Settlement(kind), RULES, now)  # type: ignore[arg-type]


def learned(total: float, cost: float = 1.0, reset: float = RESET) -> dict[BudgetKey, KeyState]:
    """A key whose total and cost are known: two serial replies."""
    s = states()
    assert admit(s, "a")
    reply(s, "a", total - cost, reset)
    assert admit(s, "b")
    reply(s, "b", total, reset)
    assert s[KEY].cost == pytest.approx(cost)
    return s


# -- learning ---------------------------------------------------------------------


def test_first_call_is_a_probe_until_the_first_reply() -> None:
    s = states()
    assert admit(s, "a")
    decision = try_admit(s, "b", [(KEY, 1)], RULES, T0)
    assert not decision.admitted
    assert decision.retry_at == math.inf  # until the probe settles
    reply(s, "a", 1.0)
    assert s[KEY].tracked is True
    assert admit(s, "b")


def test_before_the_cost_is_known_calls_go_while_a_basket_each_fits() -> None:
    # One request runs at most 60 s, one basket (api-facts §1). After the probe's
    # reply the total is known but no cost yet: with 480 s of budget and 0.5 s
    # used, 7 calls of at most 60 s each (8 with the probe's) fit, the 8th waits
    # for a reply.
    s = states()
    assert admit(s, "probe")
    reply(s, "probe", 0.5)
    assert s[KEY].cost is None
    assert [admit(s, f"c{i}") for i in range(8)] == [True] * 7 + [False]
    decision = try_admit(s, "late", [(KEY, 1)], RULES, T0)
    assert decision.retry_at == math.inf  # until a call settles
    # The first increase teaches the cost; then the projection decides.
    reply(s, "c0", 1.5)
    assert s[KEY].cost == pytest.approx(1.0)
    assert admit(s, "late")


def test_before_the_cost_is_known_a_high_total_allows_one_call_at_a_time() -> None:
    s = states()
    assert admit(s, "probe")
    reply(s, "probe", 450.0)  # under 480, but not a basket below it
    assert admit(s, "alone")  # nothing in flight: the total is exact
    assert not admit(s, "second")


def test_total_is_the_latest_running_total_never_a_sum() -> None:
    s = states()
    for i in range(1, 11):
        assert admit(s, f"t{i}")
        reply(s, f"t{i}", float(i))
    assert s[KEY].total == 10.0  # not 1 + 2 + ... + 10 = 55
    assert s[KEY].cost == pytest.approx(1.0)


def test_cost_is_learned_from_increases_even_when_replies_overtake() -> None:
    s = learned(total=10.0, cost=1.0)
    for ticket in "ABCD":
        assert admit(s, ticket)
    # Executed in order A B C D (totals 11..14); replies arrive C, A, B, D.
    reply(s, "C", 13.0)
    reply(s, "A", 11.0)
    reply(s, "B", 12.0)
    reply(s, "D", 14.0)
    assert s[KEY].total == 14.0
    assert s[KEY].cost == pytest.approx(1.0, rel=0.05)


def test_cost_is_per_unit() -> None:
    s = states()
    assert admit(s, "a", units=50)
    reply(s, "a", 5.0, units=50)
    assert admit(s, "b", units=50)
    reply(s, "b", 10.0, units=50)
    assert s[KEY].cost == pytest.approx(0.1)


def test_basket_expiry_restarts_counting() -> None:
    s = learned(total=400.0, cost=2.0)
    assert admit(s, "x")
    # The oldest basket expired: a new reset, a lower total.
    reply(s, "x", 150.0, RESET + 60)
    assert s[KEY].total == 150.0
    assert s[KEY].raw_reset == RESET + 60
    assert s[KEY].cost == pytest.approx(2.0)  # the drop is not a negative cost


def test_reply_from_before_an_expiry_is_ignored() -> None:
    s = learned(total=400.0)
    assert admit(s, "late")
    assert admit(s, "new")
    reply(s, "new", 150.0, RESET + 60)
    # Executed before the expiry, answered after: an old generation's total.
    reply(s, "late", 401.0, RESET)
    assert s[KEY].total == 150.0
    assert s[KEY].in_flight_units == 0


def test_replayed_reply_costs_nothing() -> None:
    s = learned(total=10.0)
    assert admit(s, "r")
    reply(s, "r", 999.0, replayed=True)
    assert s[KEY].total == 10.0
    assert s[KEY].cost == pytest.approx(1.0)
    assert s[KEY].in_flight_units == 0


def test_reset_is_moved_to_our_clock_by_the_reply_start() -> None:
    s = states()
    assert admit(s, "a")
    # The portal's clock runs 100 s ahead of ours; its basket expires 50 s
    # after the call started.
    portal_now = T0 + 100
    reply(s, "a", 1.0, portal_now + 50, start=portal_now, now=T0)
    assert s[KEY].reset_at == pytest.approx(T0 + 50)


# -- fields absent ------------------------------------------------------------------


@pytest.mark.parametrize(
    "time",
    [None, ResponseTime(start=T0), ResponseTime(operating_reset_at=RESET)],
    ids=["no time block", "no operating", "reset only"],
)
def test_absent_counters_mean_no_budgeting(time: ResponseTime | None) -> None:
    s = states()
    assert admit(s, "a")
    settle(s, "a", [(KEY, 1)], Settlement("replied", time), RULES, T0)
    assert s[KEY].tracked is False
    # Nothing to budget: any number goes at once.
    assert all(admit(s, f"t{i}") for i in range(1000))


def test_operating_without_reset_still_budgets() -> None:
    s = states()
    for i, total in enumerate([470.0, 471.0], start=1):
        assert admit(s, f"t{i}")
        reply(s, f"t{i}", total, reset=None)
    assert admit(s, "x")  # 471 + 1.5 <= 480 ... room for a few
    reply(s, "x", 479.0, reset=None)
    decision = try_admit(s, "y", [(KEY, 1)], RULES, T0)
    # No reset known: held for one basket, W / 10.
    assert not decision.admitted
    assert decision.retry_at == pytest.approx(T0 + RULES.basket)


def test_a_fall_without_reset_is_believed() -> None:
    s = states()
    for i, total in enumerate([470.0, 471.0], start=1):
        assert admit(s, f"t{i}")
        reply(s, f"t{i}", total, reset=None)
    assert admit(s, "x")
    reply(s, "x", 3.0, reset=None)
    assert s[KEY].total == 3.0


# -- in-flight accounting and admission -------------------------------------------


def test_in_flight_units_are_counted_and_released() -> None:
    s = learned(total=10.0)
    assert admit(s, "a", units=2)
    assert admit(s, "b", units=3)
    assert s[KEY].in_flight_units == 5
    reply(s, "a", 12.0, units=2)
    assert s[KEY].in_flight_units == 3
    fail(s, "b")
    assert s[KEY].in_flight_units == 0


def test_admission_projects_calls_in_flight() -> None:
    s = learned(total=470.0, cost=1.0)
    # Each call is projected at 1.5 x the learned cost: 470 + 1.5 n <= 480.
    admitted = [admit(s, f"t{i}") for i in range(10)]
    assert admitted == [True] * 6 + [False] * 4
    decision = try_admit(s, "next", [(KEY, 1)], RULES, T0)
    # Calls are in flight: wait for their replies (or the reset, if sooner).
    assert decision.retry_at == pytest.approx(RESET + RULES.slack(False))
    assert s[KEY].held_until is None


def test_no_room_and_nothing_in_flight_holds_until_the_reset() -> None:
    s = learned(total=479.0)
    decision = try_admit(s, "x", [(KEY, 1)], RULES, T0)
    hold = RESET + RULES.slack(False)
    assert not decision.admitted
    assert decision.retry_at == pytest.approx(hold)
    assert s[KEY].held_until == pytest.approx(hold)
    assert not admit(s, "x", now=hold - 0.01)


def test_after_the_hold_one_probe_then_resume() -> None:
    s = learned(total=479.0)
    assert not admit(s, "x")
    after = RESET + RULES.slack(False)
    assert admit(s, "probe", now=after)
    assert s[KEY].probe == "probe"
    # Everyone else waits for the probe's reply.
    decision = try_admit(s, "other", [(KEY, 1)], RULES, after)
    assert not decision.admitted
    assert decision.retry_at == math.inf
    reply(s, "probe", 120.0, RESET + 60, now=after)
    assert s[KEY].held_until is None
    assert s[KEY].probe is None
    assert admit(s, "other", now=after)


def test_a_failed_probe_hands_probing_to_the_next_call() -> None:
    s = learned(total=479.0)
    assert not admit(s, "x")
    after = RESET + RULES.slack(False)
    assert admit(s, "probe", now=after)
    fail(s, "probe", now=after)
    assert s[KEY].probe is None
    assert admit(s, "second", now=after)
    assert s[KEY].probe == "second"


def test_a_stale_total_after_the_reset_allows_a_probe() -> None:
    s = learned(total=477.5)
    assert admit(s, "a")  # 477.5 + 1.5 <= 480
    assert not admit(s, "b")  # no room for a second
    after = RESET + RULES.slack(False)
    # The reset passed while "a" is still in flight: our total is too high.
    assert admit(s, "probe", now=after)
    assert s[KEY].probe == "probe"
    assert not admit(s, "more", now=after)


def test_integral_reset_gets_a_second_of_slack() -> None:
    assert RULES.slack(True) == pytest.approx(1.0 + RULES.slack(False))
    s = learned(total=479.0, reset=T0 + 500)
    decision = try_admit(s, "x", [(KEY, 1)], RULES, T0)
    assert decision.retry_at == pytest.approx(T0 + 500 + 1.0 + 0.6)


def test_expired_lease_stops_counting() -> None:
    s = learned(total=10.0)
    assert try_admit(s, "dead", [(KEY, 5)], RULES, T0, lease=30.0).admitted
    assert s[KEY].in_flight_units == 5
    assert admit(s, "alive", now=T0 + 31)
    assert s[KEY].in_flight_units == 1


# -- 429 ------------------------------------------------------------------------------


def test_429_holds_until_the_last_known_reset() -> None:
    s = learned(total=100.0)
    assert admit(s, "x")
    fail(s, "x", kind="operating_limit")
    assert s[KEY].held_until == pytest.approx(RESET + RULES.slack(False))


def test_429_without_a_known_reset_holds_one_basket() -> None:
    s = states()
    assert admit(s, "a")
    reply(s, "a", None, None)  # a portal that sends no counters
    assert admit(s, "x", now=T0 + 5)
    fail(s, "x", now=T0 + 5, kind="operating_limit")
    assert s[KEY].held_until == pytest.approx(T0 + 5 + RULES.basket)


def test_429_after_the_known_reset_passed_holds_one_basket() -> None:
    s = learned(total=100.0)
    later = RESET + 100
    assert admit(s, "x", now=later)
    fail(s, "x", now=later, kind="operating_limit")
    assert s[KEY].held_until == pytest.approx(later + RULES.basket)


def test_after_a_429_hold_a_probe_clears_it() -> None:
    s = states()
    assert admit(s, "a")
    reply(s, "a", None, None)
    assert admit(s, "x")
    fail(s, "x", kind="operating_limit")
    assert not admit(s, "y", now=T0 + 1)
    after = T0 + RULES.basket
    assert admit(s, "probe", now=after)
    reply(s, "probe", None, None, now=after)
    assert s[KEY].held_until is None
    assert all(admit(s, f"t{i}", now=after) for i in range(10))


# -- several keys (batches) ---------------------------------------------------------


BATCH: BudgetKey = ("cred", "batch")


def test_batch_is_admitted_on_every_key_or_none() -> None:
    s = {BATCH: KeyState(), KEY: KeyState(held_until=T0 + 100)}
    keys = [(BATCH, 1), (KEY, 50)]
    decision = try_admit(s, "b", keys, RULES, T0)
    assert not decision.admitted
    assert decision.retry_at == T0 + 100
    assert s[BATCH].in_flight_units == 0  # nothing registered on the free key
    assert try_admit(s, "b", keys, RULES, T0 + 100).admitted
    assert s[BATCH].in_flight_units == 1
    assert s[KEY].in_flight_units == 50


def test_batch_reply_is_recorded_under_every_key() -> None:
    s = {BATCH: KeyState(), KEY: KeyState()}
    keys = [(BATCH, 1), (KEY, 50)]
    for ticket, total in (("b1", 5.0), ("b2", 10.0)):
        assert try_admit(s, ticket, keys, RULES, T0).admitted
        time = ResponseTime(operating=total, operating_reset_at=RESET)
        settle(s, ticket, keys, Settlement("replied", time), RULES, T0)
    assert s[BATCH].total == s[KEY].total == 10.0
    assert s[BATCH].cost == pytest.approx(5.0)  # per batch
    assert s[KEY].cost == pytest.approx(0.1)  # per command


def test_merge_keys_adds_units_of_a_repeated_key() -> None:
    assert merge_keys([(KEY, 2), (BATCH, 1), (KEY, 3)]) == ((KEY, 5), (BATCH, 1))


# -- hostile time blocks (issue 9: no hold beyond one window) ----------------------

TEN_YEARS = 10 * 365 * 86400.0


@pytest.mark.parametrize(
    ("reset", "start"),
    [
        (T0 + TEN_YEARS, T0),  # ten years ahead, on the portal's own clock
        (1e12, T0),  # an absurd instant
        (1e12, None),  # ... with no portal clock at all
        (RESET, -1e12),  # a sane reset, measured from an absurd start
        (T0 + TEN_YEARS, float("nan")),  # no usable clock: read as our own
    ],
)
def test_a_reset_far_ahead_holds_at_most_one_window(reset: float, start: float | None) -> None:
    s = states()
    assert admit(s, "hostile")
    reply(s, "hostile", 10_000.0, reset, start=start)  # far over the 480 s limit
    assert s[KEY].reset_at is not None
    # An integral reset may be one rounding second more (see the test below).
    assert s[KEY].reset_at <= T0 + RULES.window + 1
    decision = try_admit(s, "next", [(KEY, 1)], RULES, T0)
    assert not decision.admitted
    assert s[KEY].held_until is not None
    assert s[KEY].held_until <= T0 + RULES.window
    assert decision.retry_at <= T0 + RULES.window
    # Once the window is over, one probe goes, and a sane reply frees the key.
    after = T0 + RULES.window
    assert admit(s, "probe", now=after)
    reply(s, "probe", 5.0, after + 60.5, now=after, start=after)
    assert s[KEY].held_until is None
    assert s[KEY].total == 5.0
    assert admit(s, "free", now=after)


def test_a_429_after_a_hostile_reset_holds_at_most_one_window() -> None:
    s = learned(total=100.0)
    assert admit(s, "hostile")
    reply(s, "hostile", 100.0, 1e12, start=T0)
    assert admit(s, "refused", now=T0 + 1)
    fail(s, "refused", now=T0 + 1, kind="operating_limit")
    assert s[KEY].held_until is not None
    assert s[KEY].held_until <= T0 + 1 + RULES.window


def test_an_earlier_long_hold_is_cut_to_one_window_by_a_429() -> None:
    s = {KEY: KeyState(held_until=T0 + TEN_YEARS)}
    fail(s, "x", now=T0, kind="operating_limit")
    assert s[KEY].held_until == pytest.approx(T0 + RULES.window)


@pytest.mark.parametrize("operating", [float("nan"), float("inf"), -1.0, -1e12])
def test_a_total_that_is_no_number_of_seconds_is_ignored(operating: float) -> None:
    s = learned(total=100.0)
    before = (s[KEY].total, s[KEY].cost, s[KEY].reset_at)
    assert admit(s, "x")
    reply(s, "x", operating, RESET)
    assert (s[KEY].total, s[KEY].cost, s[KEY].reset_at) == before
    assert s[KEY].tracked is True
    assert admit(s, "y")


def test_first_reply_with_no_usable_total_reads_as_untracked() -> None:
    s = states()
    assert admit(s, "a")
    reply(s, "a", float("nan"), float("nan"))
    assert s[KEY].tracked is False
    assert admit(s, "b")
    assert admit(s, "c")


@pytest.mark.parametrize("reset", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_reset_is_no_reset(reset: float) -> None:
    s = states()
    assert admit(s, "a")
    reply(s, "a", 500.0, reset)  # over the limit, reset unknown
    assert s[KEY].reset_at is None
    decision = try_admit(s, "b", [(KEY, 1)], RULES, T0)
    assert decision.retry_at == pytest.approx(T0 + RULES.basket)


def test_a_huge_increase_is_learned_as_at_most_one_basket_per_call() -> None:
    s = learned(total=100.0)
    assert admit(s, "x")
    reply(s, "x", 1e12, RESET)
    cost = s[KEY].cost
    assert cost is not None
    assert cost <= RULES.basket


def test_an_integral_reset_in_the_first_second_of_a_basket_is_one_generation() -> None:
    # A real portal rounds operating_reset_at to an int (api-facts §2.1). Calls
    # in the second after the basket opened at T0 + 0.3 see the reset T0 + 601,
    # a little over one window after their own start. That is rounding, not a
    # hostile value: the replies are one basket generation, so the cost is
    # learned and calls go concurrently. Clamping it to exactly one window gave
    # each reply its own reset, the cost was never learned in that second and
    # calls went one at a time (found by bench_overhead: +17 % CPU per call).
    s = states()
    opened = T0 + 0.3
    reset = math.ceil(opened + RULES.window)
    for i in range(5):
        start = opened + 0.1 * i
        assert admit(s, f"t{i}", now=start)
        reply(s, f"t{i}", 1.0 + i, reset, now=start, start=start)
    assert s[KEY].raw_reset == reset
    assert s[KEY].cost == pytest.approx(1.0)
    now = opened + 0.5
    for ticket in "ABCD":
        assert admit(s, ticket, now=now)


def test_impossible_resets_start_no_generation_so_reordered_replies_lose_no_cost() -> None:
    # A broken portal puts every reset 700 s after its call (over one window):
    # clamped as a generation of its own, each reply would look like a new
    # basket, the cost would never be learned, and the reply of a short call
    # that started after long ones would make theirs stale, their seconds lost:
    # the basket-per-call rule then admitted calls the portal refused (found by
    # review). An impossible reset names no generation; the cost is learned.
    s = states()
    true_total = 0.0
    refused: list[str] = []
    flying: dict[str, tuple[float, float]] = {}

    def send(ticket: str, now: float, cost: float) -> bool:
        if not admit(s, ticket, now=now):
            return False
        if true_total > RULES.limit:
            refused.append(ticket)
        flying[ticket] = (now, cost)
        return True

    def finish(ticket: str, now: float) -> None:
        nonlocal true_total
        start, cost = flying.pop(ticket)
        true_total += cost
        time = ResponseTime(
            start=start, finish=now, operating=true_total, operating_reset_at=start + 700.5
        )
        settle(s, ticket, [(KEY, 1)], Settlement("replied", time), RULES, now)

    now = T0
    assert send("probe", now, 0.5)
    finish("probe", now + 0.1)
    n = 0
    for _ in range(4):
        now += 1
        longs = []
        while send(f"L{n}", now, 59.0):  # long calls, as many as admitted
            longs.append(f"L{n}")
            n += 1
            now += 0.01
        n += 1
        if longs:
            short = longs.pop()  # the last one answers at once
            flying[short] = (flying[short][0], 0.05)
            finish(short, now + 0.05)
        now += 59.5
        for ticket in longs:
            finish(ticket, now)
    assert refused == []
    assert s[KEY].cost is not None
