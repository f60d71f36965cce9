"""ideal_finish_time against design §4's closed forms."""

from __future__ import annotations

import math
import time

import pytest

from bitrix_results._bound import ideal_finish_time
from bitrix_results._scheduler import Limits

STANDARD = Limits.standard()
#: A bucket so large and fast it never binds: only the budget does.
NO_BUCKET = Limits(burst=10**9, drain_per_second=1e9, operating_limit=480, operating_window=600)


@pytest.mark.parametrize("limits", [STANDARD, Limits.enterprise(), STANDARD.scaled(60)])
@pytest.mark.parametrize("requests", [0, 1, 49, 50, 51, 250, 1000, 12_345])
def test_bucket_only_closed_form(limits: Limits, requests: int) -> None:
    expected = max(0.0, (requests - limits.burst) / limits.drain_per_second)
    assert ideal_finish_time(requests, limits) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("cost", [0.1, 0.37, 1.0, 2.0, 7.5, 480.0, 1000.0])
@pytest.mark.parametrize("requests", [1, 2, 100, 1000, 5000])
def test_operating_staircase_closed_form(cost: float, requests: int) -> None:
    # Each window of W admits n = floor(L / c) + 1 calls: the call that crosses
    # the limit still runs (api-facts §2.2), all at the window's first instant.
    per_window = math.floor(NO_BUCKET.operating_limit / cost + 1e-9) + 1
    expected = ((requests - 1) // per_window) * NO_BUCKET.operating_window
    assert ideal_finish_time(requests, NO_BUCKET, cost=cost) == pytest.approx(expected)


def test_batch_units_multiply_the_cost() -> None:
    assert ideal_finish_time(500, NO_BUCKET, cost=0.1, units_per_request=50) == ideal_finish_time(
        500, NO_BUCKET, cost=5.0
    )


def test_cost_none_or_zero_means_the_budget_never_binds() -> None:
    assert ideal_finish_time(5000, STANDARD, cost=None) == ideal_finish_time(5000, STANDARD, cost=0)


def test_bucket_and_budget_together() -> None:
    # 2 s a call: 241 calls per window; 48 at once then 2/s, so each window's
    # calls span its first two baskets, and the bound lies on the staircase.
    t = ideal_finish_time(1000, STANDARD, cost=2.0)
    assert t == pytest.approx(2400.0)
    # Never faster than either limit alone.
    assert t >= ideal_finish_time(1000, STANDARD)
    assert t >= ideal_finish_time(1000, NO_BUCKET, cost=2.0)


def test_monotonic_in_requests_and_cost() -> None:
    times = [ideal_finish_time(r, STANDARD, cost=0.5) for r in range(0, 3000, 97)]
    assert times == sorted(times)
    costs = [ideal_finish_time(2000, STANDARD, cost=c) for c in (0.1, 0.3, 0.5, 1.0, 3.0)]
    assert costs == sorted(costs)


def test_a_hundred_thousand_requests_in_well_under_a_second() -> None:
    start = time.perf_counter()
    t = ideal_finish_time(100_000, STANDARD, cost=0.5)
    assert time.perf_counter() - start < 0.5
    assert t > (100_000 - 50) / 2


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((-1, STANDARD), {}, "requests"),
        ((1.5, STANDARD), {}, "requests"),
        ((10, STANDARD), {"cost": -1.0}, "cost"),
        ((10, STANDARD), {"cost": math.inf}, "cost"),
        ((10, STANDARD), {"units_per_request": 0}, "units_per_request"),
    ],
)
def test_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        ideal_finish_time(*args, **kwargs)  # type: ignore[arg-type]
