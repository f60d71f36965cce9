"""Shared helpers: a movable clock and one-line calls into the portal core."""

from __future__ import annotations

from typing import Any

from bitrix_results.testing import FakePortal, PortalConfig, PortalRequest, PortalResponse

WEBHOOK_CODE = PortalConfig().webhook_code
ADMIN_CODE = PortalConfig().admin_webhook_code
V2 = f"/rest/1/{WEBHOOK_CODE}/"
V3 = f"/rest/api/1/{WEBHOOK_CODE}/"
ADMIN_V2 = f"/rest/2/{ADMIN_CODE}/"
ADMIN_V3 = f"/rest/api/2/{ADMIN_CODE}/"
T0 = 1_750_000_000.0  # 2025-06-15, a whole second: reset_at arithmetic stays readable


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: Clock | None = None, **config: Any) -> tuple[FakePortal, Clock]:
    """A portal with exact costs (no jitter) unless the test says otherwise."""
    clock = clock or Clock()
    config.setdefault("cost_jitter", 0.0)
    return FakePortal(PortalConfig(**config), clock=clock), clock


def v3(
    portal: FakePortal,
    method: str,
    payload: Any = None,
    *,
    base: str = V3,
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
) -> PortalResponse:
    return portal.handle(
        PortalRequest.post_json(
            base + method, {} if payload is None else payload, headers=headers, client=client
        )
    )


def v2(
    portal: FakePortal,
    method: str,
    payload: Any = None,
    *,
    base: str = V2,
    client: str = "127.0.0.1",
) -> PortalResponse:
    body = {} if payload is None else payload
    return portal.handle(PortalRequest.post_json(base + method, body, client=client))


def add(portal: FakePortal, task_id: int, text: str, **kwargs: Any) -> PortalResponse:
    return v3(
        portal, "tasks.task.result.add", {"fields": {"taskId": task_id, "text": text}}, **kwargs
    )


def error_code(response: PortalResponse) -> str:
    """The code of a v2 or v3 error body."""
    error = response.json()["error"]
    return str(error["code"] if isinstance(error, dict) else error)
