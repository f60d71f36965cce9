"""``BulkOptions``: one typed set of bulk options, refused when misspelt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitrix_results import BulkOptions
from bitrix_results._bulk.types import check_options

ROOT = Path(__file__).parents[2]


def test_the_options_are_the_documented_six_and_all_optional() -> None:
    assert set(BulkOptions.__annotations__) == {
        "batch",
        "concurrency",
        "journal",
        "on_progress",
        "job_id",
        "verify",
    }
    assert BulkOptions.__required_keys__ == frozenset()


def test_a_misspelt_option_is_a_type_error_naming_it() -> None:
    check_options({"batch": True, "journal": None})
    with pytest.raises(TypeError, match=r"bulk_add\(\) got an unexpected keyword argument 'btach'"):
        check_options({"btach": True})


def test_mypy_refuses_misspelt_and_mistyped_bulk_options() -> None:
    # tests/typing/bulk_options.py marks each bad call with a type: ignore that
    # --strict reports as unused unless mypy did find the error.
    pytest.importorskip("mypy")
    checked = ROOT / "tests" / "typing" / "bulk_options.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(checked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
