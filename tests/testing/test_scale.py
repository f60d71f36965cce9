"""``scale=S`` divides every time constant by S and leaves the burst alone."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_results.testing import FakePortal, PortalConfig, PortalRequest

from ._helpers import T0, Clock, add, make, v2, v3


def test_config_exposes_every_scaled_constant() -> None:
    config = PortalConfig(scale=20, neighbour_rate=0.5)
    assert config.effective_burst == 50  # a count: unchanged
    assert config.effective_drain == 40.0  # 2/s × 20
    assert config.effective_window == 30.0  # 600 s ÷ 20
    assert config.effective_limit == 24.0  # 480 s ÷ 20
    assert config.effective_basket == 3.0  # (600 s / 10) ÷ 20
    assert config.effective_token_lifetime == 180.0  # 3600 s ÷ 20
    assert config.effective_idempotency_ttl == 4320.0  # 86400 s ÷ 20
    assert config.effective_neighbour_rate == 10.0


def test_plan_and_overrides() -> None:
    assert (
        PortalConfig(plan="enterprise").effective_burst,
        PortalConfig(plan="enterprise").effective_drain,
    ) == (250, 5.0)
    custom = PortalConfig(burst=10, drain_per_second=1.0, scale=3)
    assert (custom.effective_burst, custom.effective_drain) == (10, 3.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"scale": 0},
        {"scale": -1.0},
        {"plan": "free"},
        {"batch_billing": "both"},
        {"operating_limit": 0},
        {"burst": 0},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        PortalConfig(**bad)


def ping(portal: FakePortal) -> int:
    return v2(portal, "tasks.task.result.list", {"taskId": 1}).status


def test_scaled_bucket_drains_scale_times_faster() -> None:
    portal, clock = make(Clock(0.0), scale=10)
    assert [ping(portal) for _ in range(51)] == [200] * 50 + [503]
    clock.advance(0.05)  # 2/s × 10 = 20/s: one slot per 0.05 s
    assert [ping(portal), ping(portal)] == [200, 503]


def test_scaled_costs_limit_and_window() -> None:
    portal, clock = make(
        scale=10, plan="enterprise", method_costs={"tasks.task.result.list": 100.0}
    )

    def listing() -> Any:
        return v3(portal, "tasks.task.result.list", {"filter": [["taskId", 1]]})

    # Cost 100 s ÷ 10 = 10 s per call, limit 480 ÷ 10 = 48 s: five calls, then blocked.
    operating = [listing().json()["time"]["operating"] for _ in range(5)]
    assert operating == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert listing().status == 429
    clock.now = T0 + 59.9  # window 600 ÷ 10 = 60 s
    assert listing().status == 429
    clock.now = T0 + 60
    assert listing().status == 200


def test_scaled_reset_at_keeps_its_fraction() -> None:
    portal, _clock = make(Clock(T0 + 0.25), scale=8)
    reset_at = add(portal, 1, "x").json()["time"]["operating_reset_at"]
    assert isinstance(reset_at, float)
    assert reset_at == T0 + 0.25 + 600 / 8


def test_scaled_token_lifetime() -> None:
    portal, clock = make(scale=100)
    access, _refresh = portal.issue_oauth_tokens()

    def call() -> int:
        payload = {"filter": [["taskId", 1]], "auth": access}
        return portal.handle(
            PortalRequest.post_json("/rest/api/tasks.task.result.list", payload)
        ).status

    clock.now = T0 + 35.9  # 3600 s ÷ 100 = 36 s
    assert call() == 200
    clock.now = T0 + 36
    assert call() == 401


def test_scaled_idempotency_ttl() -> None:
    portal, clock = make(scale=100)
    headers = {"Idempotency-Key": "same"}
    add(portal, 1, "x", headers=headers)
    clock.now = T0 + 863.9  # 86400 s ÷ 100 = 864 s
    assert add(portal, 1, "x", headers=headers).headers.get("Idempotent-Replayed") == "true"
    clock.now = T0 + 864
    assert "Idempotent-Replayed" not in add(portal, 1, "x", headers=headers).headers
    assert len(portal.ledger.created) == 2
