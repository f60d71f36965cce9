"""Real ``redis-server`` processes for the tests: one server, or a 3-node cluster.

Each server runs on a free 127.0.0.1 port in its own temporary directory with
persistence off (``--save '' --appendonly no``) and is stopped by its PID. The
tests that need Redis must fail, never skip, when it cannot be started: a
missing ``redis-server`` is a broken test environment (``make test`` installs
it), not a reason to pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RedisCluster", "RedisServer", "free_port"]

#: How long a server may take to answer PING after it was started.
_START_TIMEOUT = 15.0


def free_port(*, cluster: bool = False) -> int:
    """A free 127.0.0.1 port; for a cluster node, one whose bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster:
            return port
        # Redis puts a node's cluster bus 10000 ports above it, so at most 55535.
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run `make test` (it installs the Debian package "
            "redis-server) or `apt-get install -y redis-server`"
        )
    return path


def _command(port: int, line: Sequence[str], timeout: float = 2.0) -> bytes:
    """Send one inline command and return the raw reply (no client library needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(line).encode() + b"\r\n")
        chunks = b""
        while not chunks.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks += chunk
        return chunks


class RedisServer:
    """One ``redis-server`` process; :meth:`start` again after :meth:`kill` to restart it."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        cluster: bool = False,
    ):
        self.directory = directory
        self.port = port if port is not None else free_port(cluster=cluster)
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def start(self) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                "redis.log",
                "--daemonize",
                "no",
                *self.args,
            ],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if _command(self.port, ["PING"]).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{self.log}")

    def command(self, *line: str) -> bytes:
        return _command(self.port, line)

    def flush(self) -> None:
        self.command("FLUSHALL")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot exit
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class RedisCluster:
    """Three master nodes, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.servers = [
            RedisServer(
                directory / f"node{i}",
                cluster=True,
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def start(self) -> RedisCluster:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        result = subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout[-2000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(
                b"cluster_state:ok" in server.command("CLUSTER", "INFO") for server in self.servers
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok")

    def flush(self) -> None:
        for server in self.servers:
            server.flush()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
