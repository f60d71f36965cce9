"""The troubleshooting page covers every public error class, and only real ones."""

from __future__ import annotations

import re

import bitrix_results.errors as errors_module

from ._blocks import ROOT

PAGE = ROOT / "docs" / "troubleshooting.md"


def _public_error_classes() -> set[str]:
    return {
        name
        for name in errors_module.__all__
        if isinstance(getattr(errors_module, name), type)
        and issubclass(getattr(errors_module, name), BaseException)
    }


def _sections() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    parts = re.split(r"^### `(\w+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_public_error_class_has_a_section() -> None:
    classes = _public_error_classes()
    assert "BitrixError" in classes
    assert len(classes) > 20
    missing = classes - set(_sections())
    assert missing == set()


def test_no_section_names_an_error_that_does_not_exist() -> None:
    assert set(_sections()) - _public_error_classes() == set()


def test_each_section_says_what_it_means_what_was_created_and_what_to_do() -> None:
    for name, body in _sections().items():
        for label in ("**Means**", "**Created**", "**Do**"):
            assert label in body, f"{name}: no {label}"
