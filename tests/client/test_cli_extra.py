"""``rich`` is the command line's dependency only (the ``cli`` extra), not the library's.

Each check runs a fresh interpreter in which ``rich`` cannot be imported, as
if it were not installed: a ``sitecustomize`` on ``PYTHONPATH`` puts a finder
first on ``sys.meta_path`` that refuses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from bitrix_results.__main__ import INSTALL_HINT

ROOT = Path(__file__).parents[2]

BLOCK_RICH = textwrap.dedent(
    """
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name == "rich" or name.startswith("rich."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


@pytest.fixture
def without_rich(tmp_path: Path) -> dict[str, str]:
    """The environment of a process where ``import rich`` fails."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_RICH, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env.pop("BITRIX_WEBHOOK_URL", None)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_block_works(without_rich: dict[str, str]) -> None:
    # Guards the other tests: they prove nothing if rich still imports.
    done = _run([sys.executable, "-c", "import rich"], without_rich)
    assert done.returncode != 0
    assert "No module named 'rich'" in done.stderr


def test_python_m_says_how_to_install_the_cli_extra(without_rich: dict[str, str]) -> None:
    done = _run([sys.executable, "-m", "bitrix_results", "--help"], without_rich)
    assert done.returncode == 2
    assert INSTALL_HINT in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_console_script_says_how_to_install_the_cli_extra(
    without_rich: dict[str, str],
) -> None:
    script = Path(sys.executable).parent / "bitrix-results"
    if not script.exists():
        pytest.skip("the bitrix-results script is not installed next to this interpreter")
    done = _run([str(script), "demo"], without_rich)
    assert done.returncode == 2
    assert "pip install 'bitrix_results[cli]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_library_works_without_rich(without_rich: dict[str, str]) -> None:
    code = textwrap.dedent(
        """
        import sys
        import bitrix_results, bitrix_results.bulk, bitrix_results.sync, bitrix_results.testing
        client = bitrix_results.ResultsClient.from_webhook("https://p.example/rest/1/abc/")
        assert repr(client) == "ResultsClient(portal='p.example')", repr(client)
        assert not any(m == "rich" or m.startswith("rich.") for m in sys.modules)
        """
    )
    done = _run([sys.executable, "-c", code], without_rich)
    assert done.returncode == 0, done.stderr


def test_with_rich_the_entry_runs_the_command_line() -> None:
    done = _run([sys.executable, "-m", "bitrix_results", "--help"], dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "usage: " in done.stdout


def test_rich_is_an_extra_and_the_script_goes_through_the_fallback() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0] for r in requirements}

    assert "rich" not in names(project["dependencies"])
    assert "rich" in names(project["optional-dependencies"]["cli"])
    assert "rich" in names(project["optional-dependencies"]["dev"])
    assert project["scripts"]["bitrix-results"] == "bitrix_results.__main__:main"
