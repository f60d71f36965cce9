"""The scheduler package's curated surface, and what the client imports from it."""

from __future__ import annotations

import bitrix_results
from bitrix_results import _scheduler


def test_all_is_sorted_and_complete() -> None:
    names = _scheduler.__all__

    # isort style (ruff RUF022): CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=kind)
    for name in names:
        assert hasattr(_scheduler, name), name


def test_the_package_reexports_the_scheduler_types() -> None:
    assert bitrix_results.Limits is _scheduler.Limits
    assert bitrix_results.RetryPolicy is _scheduler.RetryPolicy
    assert bitrix_results.SchedulerStatistics is _scheduler.SchedulerStatistics


def test_memory_backend_satisfies_the_backend_protocol() -> None:
    backend: _scheduler.Backend = _scheduler.MemoryBackend()
    assert _scheduler.default_backend() is _scheduler.default_backend()
    assert isinstance(backend, _scheduler.MemoryBackend)
