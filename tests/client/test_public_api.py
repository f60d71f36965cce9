"""The public API is pinned: a curated, sorted ``__all__`` whose names all resolve."""

from __future__ import annotations

import bitrix_results
import bitrix_results.errors
import bitrix_results.sync


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
