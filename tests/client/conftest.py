"""Fixtures for the client-layer tests (helpers live in ``_portal.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bitrix_results import ResultsClient

from ._portal import OAUTH, WEBHOOK, AuthMode, MockPortal


@pytest.fixture
def mock() -> Iterator[MockPortal]:
    with MockPortal() as m:
        yield m


@pytest.fixture(params=[WEBHOOK, OAUTH], ids=lambda mode: mode.name)
def mode(request: pytest.FixtureRequest) -> AuthMode:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def client(mode: AuthMode, mock: MockPortal) -> AsyncIterator[ResultsClient]:
    async with mode.make() as c:
        yield c
