"""Make the plugin available even when the package is not installed (no entry point).

When it is installed, the ``pytest11`` entry point has already registered the very same
module object, and this does nothing.
"""

from __future__ import annotations

import pytest

from bitrix_results.testing import plugin


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "bitrix_results.testing.plugin")
