"""docs/scripts/plot_run.py still runs against the client's statistics and draws a sound SVG."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from ._blocks import ROOT

SVG = "{http://www.w3.org/2000/svg}"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plot_run", ROOT / "docs/scripts/plot_run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_plot_run_draws_three_panels(tmp_path: Path) -> None:
    out = tmp_path / "run.svg"
    assert _script().main(["--items", "120", "--scale", "100", "--out", str(out)]) == 0
    root = ET.fromstring(out.read_text(encoding="utf-8"))
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    for title in ("Bucket level", "Operating budget", "Requests sent per second"):
        assert any(t.startswith(title) for t in texts), title
    assert "result.add" in texts  # the method the imports spent their budget on
    lines = root.findall(f".//{SVG}polyline")
    assert len(lines) >= 6
    # Every point is a pair of finite numbers inside the picture.
    width = float(root.get("width", "0"))
    height = float(root.get("height", "0"))
    for line in lines:
        for point in (line.get("points") or "").split():
            x, y = map(float, point.split(","))
            assert 0 <= x <= width
            assert 0 <= y <= height


def test_committed_picture_is_the_scripts_output() -> None:
    picture = (ROOT / "docs/img/scheduler-run.svg").read_text(encoding="utf-8")
    assert picture.startswith("<svg ")
    assert "How the scheduler sees the demo run" in picture
    assert "img/scheduler-run.svg" in (ROOT / "docs/rate-limits.md").read_text(encoding="utf-8")
