"""Fixtures shared by every test tier: real ``redis-server`` processes (``redis_servers.py``).

``redis_server`` / ``redis_cluster`` are started once per session and emptied
before each test that asks for them; ``redis_factory`` starts servers a test
may kill, pause and restart. A test that needs Redis fails (it does not skip)
when ``redis-server`` cannot be started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_servers import RedisCluster, RedisServer


def _start(server: RedisServer | RedisCluster) -> None:
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> RedisServer:
    """The session's server, empty."""
    _start(_redis_session)  # restarted if an earlier test stopped it
    _redis_session.flush()
    return _redis_session


@pytest.fixture(scope="session")
def _redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    _start(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(_redis_cluster_session: RedisCluster) -> RedisCluster:
    """The session's 3-node cluster, empty."""
    _redis_cluster_session.flush()
    return _redis_cluster_session


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start servers this test owns (to kill, pause or restart); all stopped after it."""
    started: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}")
        started.append(server)
        _start(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
