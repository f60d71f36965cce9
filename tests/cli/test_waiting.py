"""What the progress bar says while the import waits for the limits (no I/O)."""

from __future__ import annotations

import time

from bitrix_results import Limits
from bitrix_results._cli.importing import waiting_for
from bitrix_results._scheduler import SchedulerStatistics
from bitrix_results._scheduler.stats import BucketStatistics, BudgetStatistics

ADD = "tasks.task.result.add"


def _budget(**fields: object) -> BudgetStatistics:
    base: dict[str, object] = {
        "credential": "webhook:1",
        "method": ADD,
        "operating": 10.0,
        "reset_at": None,
        "cost": 0.1,
        "cost_bound": 0.1,
        "held_until": None,
        "in_flight_units": 0,
        "tracked": True,
    }
    base.update(fields)
    return BudgetStatistics(**base)  # type: ignore[arg-type]


def _stats(budget: BudgetStatistics, level: float = 0.0) -> SchedulerStatistics:
    bucket = BucketStatistics("p.example", level, 48.0, 2.0, 2.0)
    return SchedulerStatistics(budgets={("webhook:1", ADD): budget}, buckets={"p.example": bucket})


def test_a_held_budget_is_named_with_its_end() -> None:
    now = 1_000_000.0
    text = waiting_for(_stats(_budget(held_until=now + 42)), Limits.standard(), now)
    clock = time.strftime("%H:%M:%S", time.localtime(now + 42))
    assert text == f"waiting for the operating budget of result.add until {clock} (42 s)"


def test_a_spent_budget_waits_for_its_reset() -> None:
    now = 1_000_000.0
    spent = _budget(operating=480.0, reset_at=now + 7)
    assert "until" in waiting_for(_stats(spent), Limits.standard(), now)
    # Spent but already reset, or not spent: nothing to say about the budget.
    assert (
        waiting_for(_stats(_budget(operating=480.0, reset_at=now - 1)), Limits.standard(), now)
        == ""
    )
    assert waiting_for(_stats(_budget(reset_at=now + 7)), Limits.standard(), now) == ""


def test_a_full_bucket_is_named() -> None:
    text = waiting_for(_stats(_budget(), level=47.5), Limits.standard(), 0.0)
    assert text == "pacing: request bucket full, 2 requests/s"
