"""A faithful fake Bitrix24 cloud portal for the task-results API, and its pytest plugin.

Written from the API facts (``reference/bitrix24-api-facts.md``), never from the client:
it imports nothing of ``bitrix_results`` outside this package, so a wrong field name in
the client cannot be mirrored here.

Quick use::

    from bitrix_results.testing import FakePortal, PortalConfig, serve_portal

    portal = FakePortal(PortalConfig(plan="standard", scale=20))
    async with serve_portal(portal) as running:
        print(running.webhook_url)      # http://127.0.0.1:PORT/rest/1/<code>/
        ...                             # point the code under test at it
        print(portal.stats(), portal.ledger.duplicates())

In pytest, the ``fake_portal`` fixture does the same (see :mod:`.plugin`).
"""

from ._ledger import CreatedResult, ExecutedCall, Ledger, PortalStats
from ._limits import BudgetReading
from .config import Faults, PortalConfig
from .portal import Action, FakePortal, PortalRequest, PortalResponse
from .server import RunningPortal, run_emulator, serve_portal, serve_portal_in_thread

__all__ = [
    "Action",
    "BudgetReading",
    "CreatedResult",
    "ExecutedCall",
    "FakePortal",
    "Faults",
    "Ledger",
    "PortalConfig",
    "PortalRequest",
    "PortalResponse",
    "PortalStats",
    "RunningPortal",
    "run_emulator",
    "serve_portal",
    "serve_portal_in_thread",
]
