"""The HTTP face of the fake portal: an aiohttp.web adapter around :class:`FakePortal`.

The adapter only translates: an aiohttp request becomes a :class:`PortalRequest`, the
:class:`PortalResponse` is sent back, and the response's :class:`Action` is acted out
(wait ``delay`` seconds; for ``DROP_AFTER`` close the connection without answering; for
``EXECUTE_LATER`` run the postponed call after the delay, even if the client has gone).

Three ways to run it:

- ``async with serve_portal(portal) as running:`` in the current event loop;
- ``with serve_portal_in_thread(portal) as running:`` in a background thread with its own
  loop, usable from sync code and from any async test framework (the pytest plugin);
- ``await run_emulator(port=8024)``: serve until cancelled (``bitrix-results emulator``).

It binds to 127.0.0.1 unless told otherwise: a fake portal has no business on a network.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from aiohttp import web

from ._addresses import PortalAddresses
from .config import PortalConfig
from .portal import Action, FakePortal, PortalRequest, PortalResponse

__all__ = ["RunningPortal", "run_emulator", "serve_portal", "serve_portal_in_thread"]

# Big enough for 50 commands with long texts; aiohttp's default is 1 MiB.
_MAX_BODY = 16 * 1024 * 1024
# Pending slow answers are abandoned quickly at shutdown: tests must tear down fast.
_SHUTDOWN_TIMEOUT = 0.5


@dataclass(frozen=True)
class RunningPortal(PortalAddresses):
    """A fake portal being served: its addresses and the :class:`FakePortal` itself."""

    portal: FakePortal
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def build_app(portal: FakePortal) -> web.Application:
    """An aiohttp application that serves ``portal`` on every path."""
    # Postponed executions in flight: they outlive a client that gave up (that is the
    # point of the fault), and are cancelled only when the server shuts down.
    late: set[asyncio.Task[PortalResponse]] = set()

    async def run_late(answer: PortalResponse) -> PortalResponse:
        await asyncio.sleep(answer.delay)
        assert answer.deferred is not None
        return answer.deferred()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = portal.handle(
            PortalRequest(
                method=request.method,
                path=request.path,
                # Raw, so PHP-style parsing sees %26 and %3D as data, not separators.
                query=request.rel_url.raw_query_string,
                headers=dict(request.headers),
                body=body,
                client=request.remote or "",
                base_url=f"{request.scheme}://{request.host}",
            )
        )
        if answer.action is Action.EXECUTE_LATER:
            task = asyncio.ensure_future(run_late(answer))
            late.add(task)
            task.add_done_callback(late.discard)
            # Shielded: a cancelled handler (client gone) must not cancel the execution.
            answer = await asyncio.shield(task)
        elif answer.delay > 0:
            await asyncio.sleep(answer.delay)
        if answer.action is Action.DROP_AFTER:
            # The call ran and is in the ledger; the client gets no answer at all.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=answer.status)
        return web.Response(status=answer.status, headers=dict(answer.headers), body=answer.body)

    async def cancel_late(_app: web.Application) -> None:
        for task in list(late):
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(cancel_late)
    return app


async def _start(portal: FakePortal, host: str, port: int) -> tuple[web.AppRunner, RunningPortal]:
    runner = web.AppRunner(
        build_app(portal),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, RunningPortal(portal, host, bound_port)


@asynccontextmanager
async def serve_portal(
    portal: FakePortal, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningPortal]:
    """Serve a fake portal over HTTP in this event loop, for the ``async with`` block.

    Args:
        portal: The portal to serve.
        host: The address to listen on (keep it local).
        port: The port; 0 picks a free one.

    Yields:
        The running portal: its addresses (``webhook_url``...) and the portal.

    Example:
        ```python
        portal = FakePortal(PortalConfig(scale=20))
        async with serve_portal(portal) as running:
            async with ResultsClient.from_webhook(running.webhook_url) as client:
                await client.add(1, "Done")
        ```
    """
    runner, running = await _start(portal, host, port)
    try:
        yield running
    finally:
        await runner.cleanup()


@contextmanager
def serve_portal_in_thread(
    portal: FakePortal, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningPortal]:
    """Serve ``portal`` from a background thread with its own event loop.

    Works from sync code and from any event loop, since the caller's loop is never
    touched. The portal is thread-safe, so the caller may read ``stats()`` meanwhile.

    Args:
        portal: The portal to serve.
        host: The address to listen on (keep it local).
        port: The port; 0 picks a free one.

    Yields:
        The running portal: its addresses (``webhook_url``...) and the portal.

    Example:
        ```python
        with serve_portal_in_thread(FakePortal()) as running:
            with bitrix_results.sync.ResultsClient.from_webhook(running.webhook_url) as client:
                client.add(1, "Done")
        ```
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-bitrix24-portal", daemon=True)
    thread.start()
    try:
        started = asyncio.run_coroutine_threadsafe(_start(portal, host, port), loop)
        runner, running = started.result(timeout=30)
        try:
            yield running
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


async def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 8024,
    plan: str | None = None,
    scale: float | None = None,
    seed: int = 0,
    config: PortalConfig | None = None,
    echo: Callable[[str], None] = print,
    on_ready: Callable[[RunningPortal], None] | None = None,
) -> None:
    """Serve a fake portal until cancelled, printing where (``bitrix-results emulator``).

    Args:
        host: The address to listen on.
        port: The port (0 picks a free one).
        plan: ``"standard"`` or ``"enterprise"``; overrides ``config.plan``.
        scale: The time compression; overrides ``config.scale``.
        seed: Makes costs, faults and tokens reproducible.
        config: The portal's configuration (default ``PortalConfig()``).
        echo: Where the startup lines go.
        on_ready: Called with the running portal once it listens.
    """
    base = config if config is not None else PortalConfig()
    overrides: dict[str, object] = {}
    if plan is not None:
        overrides["plan"] = plan
    if scale is not None:
        overrides["scale"] = scale
    portal = FakePortal(base.replace(**overrides) if overrides else base, seed=seed)
    cfg = portal.config
    async with serve_portal(portal, host=host, port=port) as running:
        echo(
            f"Fake Bitrix24 portal on {running.base_url} "
            f"(plan {cfg.plan}: burst {cfg.effective_burst}, "
            f"{cfg.effective_drain:g} req/s; scale {cfg.scale:g})"
        )
        echo(f"Webhook URL: {running.webhook_url}")
        echo(f"Stats: {running.base_url}/_fake/stats")
        if on_ready is not None:
            on_ready(running)
        await asyncio.Event().wait()
