"""The public API is pinned: a curated, sorted ``__all__`` whose names all resolve."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

import bitrix_results
import bitrix_results.errors
import bitrix_results.sync

from ._portal import MockPortal, item, ok, webhook_client


def test_all_is_sorted_and_unique() -> None:
    names = list(bitrix_results.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_public_name_resolves() -> None:
    for name in bitrix_results.__all__:
        assert getattr(bitrix_results, name) is not None, name


def test_no_private_name_is_public() -> None:
    assert [n for n in bitrix_results.__all__ if n.startswith("_") and n != "__version__"] == []


def test_every_error_is_public() -> None:
    # The whole tree of errors.py is reachable from the package root (STYLE "Errors are API").
    errors = {n for n in bitrix_results.errors.__all__ if n[0].isupper()}
    assert errors <= set(bitrix_results.__all__)
    for name in errors:
        cls = getattr(bitrix_results, name)
        assert cls is getattr(bitrix_results.errors, name)
        assert issubclass(cls, bitrix_results.BitrixError)


def test_input_errors_are_value_errors() -> None:
    assert issubclass(bitrix_results.InvalidInputError, ValueError)


def test_sync_module_exports_the_client() -> None:
    assert bitrix_results.sync.__all__ == ["ResultsClient"]
    assert bitrix_results.sync.ResultsClient is not bitrix_results.ResultsClient


def test_version() -> None:
    assert isinstance(bitrix_results.__version__, str)
    assert bitrix_results.__version__.count(".") >= 1


def test_scheduler_and_backends_are_public() -> None:
    # docs/rate-limits.md builds a shared Redis scheduler from these top-level names.
    from bitrix_results import MemoryBackend, RedisBackend, Scheduler
    from bitrix_results import _scheduler as private

    assert Scheduler is private.Scheduler
    assert MemoryBackend is private.MemoryBackend
    assert RedisBackend is private.RedisBackend
    assert {"Scheduler", "MemoryBackend", "RedisBackend"} <= set(bitrix_results.__all__)
    scheduler = Scheduler(bitrix_results.Limits.standard(), backend=MemoryBackend())
    assert scheduler is not None


def test_rate_limits_doc_imports_only_public_names() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "rate-limits.md").read_text(encoding="utf-8")
    assert "bitrix_results._" not in doc
    assert "from bitrix_results import Limits, RedisBackend, ResultsClient, Scheduler" in doc


# -- follow_redirects_to: one host or several -------------------------------------------

OLD = "https://a.bitrix24.com"
MOVED = "https://portal.example.org"


def _add_url(origin: str) -> str:
    return f"{origin}/rest/api/1/abc123/tasks.task.result.add"


@pytest.mark.parametrize(
    "allowed",
    [
        pytest.param("portal.example.org", id="one-string"),
        pytest.param("Portal.Example.ORG", id="case"),
        pytest.param(["portal.example.org"], id="list"),
        pytest.param(("other.example", "portal.example.org"), id="tuple"),
        pytest.param(frozenset({"portal.example.org"}), id="set"),
        pytest.param("https://portal.example.org", id="url"),
    ],
)
async def test_follow_redirects_to_one_string_is_one_host(
    mock: MockPortal, allowed: str | Iterable[str]
) -> None:
    mock.post(_add_url(OLD), status=302, headers={"Location": _add_url(MOVED)})
    mock.post(_add_url(MOVED), payload=ok({"item": item(7)}))
    async with webhook_client(url=f"{OLD}/rest/1/abc123/", follow_redirects_to=allowed) as client:
        assert (await client.add(42, "Done")).id == 7
    assert len(mock.sent_to(_add_url(MOVED))) == 1


async def test_follow_redirects_to_a_string_does_not_allow_its_letters(
    mock: MockPortal,
) -> None:
    # Before: "portal.example.org" was read as the hosts "p", "o", "r", ...
    mock.post(_add_url(OLD), status=302, headers={"Location": "https://o/x"}, repeat=True)
    async with webhook_client(
        url=f"{OLD}/rest/1/abc123/", follow_redirects_to="portal.example.org"
    ) as client:
        with pytest.raises(bitrix_results.RedirectRefusedError):
            await client.add(42, "Done")
    assert mock.sent_to("https://o/x") == []


@pytest.mark.parametrize("allowed", ["", "  ", [""], [42], None, 42])
def test_follow_redirects_to_rejects_non_hosts(mock: MockPortal, allowed: object) -> None:
    with pytest.raises(bitrix_results.InvalidInputError) as info:
        webhook_client(url=f"{OLD}/rest/1/abc123/", follow_redirects_to=allowed)
    assert info.value.field == "follow_redirects_to"
