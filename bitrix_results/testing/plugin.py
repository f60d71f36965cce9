"""pytest plugin: a running fake portal per test (entry point ``bitrix_results``).

Fixtures:

- ``fake_portal``: a :class:`~bitrix_results.testing.RunningPortal` on 127.0.0.1, with
  ``.webhook_url``, ``.portal.ledger`` and ``.portal.stats()``.
- ``fake_portal_config``: the :class:`PortalConfig` it uses. Override this fixture in a
  ``conftest.py`` to change the default for a directory. The default compresses time
  (``scale=DEFAULT_TEST_SCALE``) so the limits bind within a fast test.
- ``make_fake_portal``: a factory, ``make_fake_portal(plan="enterprise", seed=3)``, for
  tests that need several portals or a config chosen at run time.

A marker tweaks one test: ``@pytest.mark.fake_portal(batch_rollback=False, seed=7)``
(keyword arguments are :class:`PortalConfig` fields, plus ``seed``).

The server runs in a background thread with its own event loop, so the fixtures are
plain (sync) fixtures that work in sync tests and under any async test plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from .config import PortalConfig
from .portal import FakePortal
from .server import RunningPortal, serve_portal_in_thread

__all__ = [
    "DEFAULT_TEST_SCALE",
    "MakeFakePortal",
    "fake_portal",
    "fake_portal_config",
    "make_fake_portal",
]

#: Time compression of the fixtures: a 600 s operating window lasts 6 s and the standard
#: bucket drains at 200 requests/s, so limits are reachable but tests stay fast.
DEFAULT_TEST_SCALE = 100.0

MakeFakePortal = Callable[..., RunningPortal]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fake_portal(**options): PortalConfig fields (and seed) for the fake_portal fixture",
    )


def _build(base: PortalConfig, options: dict[str, Any]) -> FakePortal:
    seed = int(options.pop("seed", 0))
    config = base.replace(**options) if options else base
    return FakePortal(config, seed=seed)


@pytest.fixture
def fake_portal_config() -> PortalConfig:
    """The config of ``fake_portal`` and the base of ``make_fake_portal``."""
    return PortalConfig(scale=DEFAULT_TEST_SCALE)


@pytest.fixture
def fake_portal(
    request: pytest.FixtureRequest, fake_portal_config: PortalConfig
) -> Iterator[RunningPortal]:
    """A fake Bitrix24 portal served on 127.0.0.1 for the duration of the test."""
    marker = request.node.get_closest_marker("fake_portal")
    options = dict(marker.kwargs) if marker is not None else {}
    portal = _build(fake_portal_config, options)
    with serve_portal_in_thread(portal) as running:
        yield running


@pytest.fixture
def make_fake_portal(fake_portal_config: PortalConfig) -> Iterator[MakeFakePortal]:
    """A factory of served portals: ``make_fake_portal(**config_fields, seed=0)``.

    Pass ``config=PortalConfig(...)`` to start from another config than
    ``fake_portal_config``. Every portal is stopped at the end of the test.
    """
    with ExitStack() as stack:

        def make(*, config: PortalConfig | None = None, **options: Any) -> RunningPortal:
            portal = _build(config if config is not None else fake_portal_config, options)
            return stack.enter_context(serve_portal_in_thread(portal))

        yield make
