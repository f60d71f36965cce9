"""A faithful fake Bitrix24 cloud portal for the task-results API, and its pytest plugin.

Written from the API facts (``docs/api-facts.md``), never from the client:
it imports nothing of ``bitrix_results`` outside this package, so a wrong field name in
the client cannot be mirrored here. The two sender modules are the exception: they
import the wire types and the transport errors, which name no REST field.

Quick use::

    from bitrix_results.testing import FakePortal, PortalConfig, serve_portal

    portal = FakePortal(PortalConfig(plan="standard", scale=20))
    async with serve_portal(portal) as running:
        print(running.webhook_url)      # http://127.0.0.1:PORT/rest/1/<code>/
        ...                             # point the code under test at it
        print(portal.stats(), portal.ledger.duplicates())

In pytest, the ``fake_portal`` fixture does the same (see :mod:`.plugin`).

Without sockets: :class:`MockSender` replaces a client's HTTP layer with a function
(``ResultsClient.from_webhook(url, sender=MockSender(handler))``), and
:class:`PortalSender` runs a :class:`FakePortal` in-process behind it.
"""

from ._ledger import CreatedResult, ExecutedCall, Ledger, PortalStats
from ._limits import BudgetReading
from ._mock import Handler, MockSender, RawRequest, RawResponse
from ._portal_sender import PortalSender
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
    "Handler",
    "Ledger",
    "MockSender",
    "PortalConfig",
    "PortalRequest",
    "PortalResponse",
    "PortalSender",
    "PortalStats",
    "RawRequest",
    "RawResponse",
    "RunningPortal",
    "run_emulator",
    "serve_portal",
    "serve_portal_in_thread",
]
