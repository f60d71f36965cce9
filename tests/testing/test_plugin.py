"""The pytest plugin: fixtures, the marker, and loading it as a real plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

import bitrix_results.testing
from bitrix_results.testing import PortalConfig, RunningPortal
from bitrix_results.testing.plugin import DEFAULT_TEST_SCALE, MakeFakePortal


async def test_fake_portal_fixture_serves_a_fast_portal(fake_portal: RunningPortal) -> None:
    assert fake_portal.portal.config.scale == DEFAULT_TEST_SCALE
    url = fake_portal.webhook_url.replace("/rest/", "/rest/api/") + "tasks.task.result.add"
    payload = {"fields": {"taskId": 1, "text": "hi"}}
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as response:
        assert response.status == 200
    assert [r.text for r in fake_portal.portal.ledger.created] == ["hi"]
    assert fake_portal.portal.stats().executed == 1


@pytest.mark.fake_portal(plan="enterprise", batch_rollback=False, seed=3)
def test_marker_tweaks_the_config(fake_portal: RunningPortal) -> None:
    config = fake_portal.portal.config
    assert (config.plan, config.batch_rollback, config.scale) == (
        "enterprise",
        False,
        DEFAULT_TEST_SCALE,
    )


def test_factory_makes_independent_portals(make_fake_portal: MakeFakePortal) -> None:
    one = make_fake_portal()
    two = make_fake_portal(config=PortalConfig(scale=5), report_operating=False)
    assert one.port != two.port
    assert (two.portal.config.scale, two.portal.config.report_operating) == (5, False)


def test_plugin_loads_from_its_module_name(tmp_path: Path) -> None:
    """Run pytest in a subprocess with the plugin loaded by name, as the entry point does."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from bitrix_results.testing import PortalConfig

            @pytest.fixture
            def fake_portal_config():
                return PortalConfig(scale=7)
            """
        )
    )
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import json
            import urllib.request

            import pytest

            def test_user_code(fake_portal):
                assert fake_portal.portal.config.scale == 7
                url = fake_portal.webhook_url + "tasks.task.result.list?taskId=1"
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert json.loads(response.read())["result"] == []

            @pytest.mark.fake_portal(new_task_card=True)
            def test_marker(fake_portal):
                assert fake_portal.portal.config.new_task_card
            """
        )
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n"
    )
    package_root = Path(bitrix_results.testing.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            # If the package is installed its entry point would load the same module under
            # the name ``bitrix_results``; block that name and load it by module instead.
            "-p",
            "no:bitrix_results",
            "-p",
            "bitrix_results.testing.plugin",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
