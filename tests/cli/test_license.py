"""The licence pyproject.toml names is in the repository, and so in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_mit_licence_is_in_the_repository() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the bitrix_results authors" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"


def test_the_wheel_picks_the_licence_up() -> None:
    # hatchling puts LICEN[CS]E* into the wheel's dist-info unless ``license-files``
    # says otherwise (checked by hand with ``pip wheel``: dist-info/licenses/LICENSE).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    files = project.get("license-files", ["LICEN[CS]E*"])
    assert any(Path("LICENSE").match(pattern) for pattern in files)
