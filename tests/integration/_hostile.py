"""A misbehaving portal on 127.0.0.1: one aiohttp.web handler answers every path.

The fake portal (``bitrix_results.testing``) behaves like a real portal with
chosen faults; this server behaves however a test's handler says, for replies
no real portal sends (a reset ten years ahead, ``expired_token`` for ever).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Hostile:
    """The running server: its base URL and the paths it was asked for, counted."""

    base_url: str
    paths: Counter[str] = field(default_factory=Counter)

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/1/hostilecode/"

    def count(self, prefix: str) -> int:
        return sum(n for path, n in self.paths.items() if path.startswith(prefix))


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Hostile]:
    """Serve ``handler(request, n)`` (n: how many requests came before) on a free port."""
    state: list[Hostile] = []

    async def route(request: web.Request) -> web.StreamResponse:
        hostile = state[0]
        n = sum(hostile.paths.values())
        hostile.paths[request.path] += 1
        return await handler(request, n)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.append(Hostile(base_url=f"http://127.0.0.1:{port}"))
    try:
        yield state[0]
    finally:
        await runner.cleanup()
