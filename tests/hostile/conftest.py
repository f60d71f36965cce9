"""A misbehaving HTTP server on 127.0.0.1, scripted per test, for the real aiohttp transport.

Each test starts one or more raw-socket servers (``serve``) with a handler that
gets the parsed request and the socket writer, and writes whatever bytes it
likes: malformed heads, endless bodies, gzip bombs, redirects, echoed secrets.
Every server is closed when the test ends; a handler that writes forever stops
by itself at a byte ceiling, so no test depends on the client to end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The secrets every test here plants, so each can search a whole error chain for them.
CODE = "HOOKCODE9f8e7d6c5b4a"
ACCESS = "ACCESSTOKEN1111aaaa"
REFRESH = "REFRESHTOKEN2222bbbb"
CLIENT_SECRET = "CLIENTSECRET3333cccc"
NEW_ACCESS = "NEWACCESS4444dddd"
NEW_REFRESH = "NEWREFRESH5555eeee"
SECRETS = (CODE, ACCESS, REFRESH, CLIENT_SECRET, NEW_ACCESS, NEW_REFRESH)


@dataclass
class Received:
    """One request as the server read it (header names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """A running server: where it listens, what it got, how many bytes it wrote."""

    origin: str
    received: list[Received] = field(default_factory=list)
    written: int = 0

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.written += len(data)


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length", "0") or 0)
    if length:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            body = await reader.readexactly(length)
    return Received(method, target, headers, body)


ServeFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """``await serve(handler, host=..., tls=...)``: a server for this test; closed at its end."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(
        handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> Server:
        state = Server(origin="")

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                while (request := await _read_request(reader)) is not None:
                    state.received.append(request)
                    await handler(request, writer)
                    if writer.is_closing():
                        break
            except (ConnectionError, OSError, ssl.SSLError):
                pass  # the client hung up: what these tests provoke
            finally:
                writer.close()

        server = await asyncio.start_server(connection, host, 0, ssl=tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        state.origin = f"{'https' if tls else 'http'}://{host}:{port}"
        return state

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl tool), and its key."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("the openssl tool is needed to make a test certificate")
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate: what ``ssl=`` is for."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    reason: str = "OK",
) -> bytes:
    """An HTTP/1.1 response with a Content-Length (unless ``headers`` says otherwise)."""
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update(headers or {})
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"HTTP/1.1 {status} {reason}\r\n{head}\r\n".encode("latin-1") + body
