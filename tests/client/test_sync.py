"""The blocking facade works from plain code and from inside a running event loop
(Jupyter, Django async views), where ``asyncio.run`` would refuse (design §1)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bitrix_results import InvalidInputError, Limits, NotFoundError, TaskResult
from bitrix_results.sync import ResultsClient
from bitrix_results.testing import PortalConfig
from bitrix_results.testing.plugin import MakeFakePortal

from ._portal import WEBHOOK, WEBHOOK_URL, MockPortal, fast_scheduler, item, ok, v3_error

ADD = WEBHOOK.url("v3", "tasks.task.result.add")
LIST = WEBHOOK.url("v3", "tasks.task.result.list")
DELETE = WEBHOOK.url("v3", "tasks.task.result.delete")


def work(mock: MockPortal) -> tuple[TaskResult, list[int], list[int]]:
    """Plain blocking code, as a script or a notebook cell would write it."""
    mock.post(ADD, payload=ok({"item": item(7, text="Done")}))
    # list(), then a two-page walk, then the first page of an abandoned walk.
    for ids in ([1, 2], [1, 2], [3], [1, 2]):
        mock.post(LIST, payload=ok({"items": [item(i) for i in ids]}))
    mock.post(
        DELETE,
        status=400,
        payload=v3_error("BITRIX_REST_V3_EXCEPTION_ENTITYNOTFOUNDEXCEPTION", "Not found"),
    )
    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as client:
        added = client.add(42, "Done")
        page = [r.id for r in client.list(42)]
        walked = [r.id for r in client.iter_results(42, page_size=2)]
        # A walk abandoned early closes cleanly.
        first = next(iter(client.iter_results(42, page_size=2)))
        assert first.id == 1
        with pytest.raises(NotFoundError):
            client.delete(7)
        with pytest.raises(InvalidInputError):
            client.add(42, "")
        assert client.statistics().requests_sent >= 5
    return added, page, walked


def check(mock: MockPortal, outcome: tuple[TaskResult, list[int], list[int]]) -> None:
    added, page, walked = outcome
    assert added.id == 7
    assert added.text == "Done"
    assert page == [1, 2]
    assert walked == [1, 2, 3]
    assert mock.sent_to(ADD)[0].json == {"fields": {"taskId": 42, "text": "Done"}}


def test_from_plain_sync_code(mock: MockPortal) -> None:
    check(mock, work(mock))


async def test_from_inside_a_running_loop(mock: MockPortal) -> None:
    # Called from a coroutine through a plain function: the loop is running here.
    asyncio.get_running_loop()
    check(mock, work(mock))


def test_closed_client_refuses(mock: MockPortal) -> None:
    client = ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    )
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError):
        client.add(42, "Done")
    assert mock.requests == {}


def test_bad_webhook_url_raises_in_the_caller(mock: MockPortal) -> None:
    with pytest.raises(InvalidInputError) as info:
        ResultsClient.from_webhook("http://portal.example/rest/1/abc123/")
    assert info.value.field == "webhook_url"


# -- one shared event-loop thread per process ------------------------------------------


def test_clients_share_one_daemon_loop_thread(mock: MockPortal) -> None:
    with (
        ResultsClient.from_webhook(
            WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
        ) as a,
        ResultsClient.from_webhook(
            WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
        ) as b,
    ):
        assert a._loop is b._loop
        assert a._loop.thread.daemon
    # Closing the clients leaves the shared loop to the next one.
    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as c:
        assert c._loop is a._loop
        mock.post(ADD, payload=ok({"item": item(7, text="Done")}))
        assert c.add(42, "Done").id == 7
    names = [t.name for t in threading.enumerate()]
    assert names.count("bitrix_results.sync") == 1


@pytest.mark.slow
def test_sync_clients_in_threads_share_one_bucket(make_fake_portal: MakeFakePortal) -> None:
    # Real-time standard limits: burst 50, drain 2/s. 90 adds from three clients in three
    # threads fit only if the three pace against ONE bucket (design §2.1): one bucket per
    # client would each allow a burst of 50, and the portal would answer 503.
    running = make_fake_portal(config=PortalConfig(scale=1))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with ResultsClient.from_webhook(running.webhook_url, limits=Limits.standard()) as c:
                for i in range(30):
                    c.add(1 + n, f"thread {n} #{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=55)
    assert errors == []
    stats = running.portal.stats()
    assert stats.rate_limited == 0
    assert stats.results_created == 90
    assert running.portal.ledger.duplicates() == 0


def test_an_unclosed_client_does_not_hang_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "forgot_close.py"
    script.write_text(
        textwrap.dedent(
            """
            from bitrix_results.sync import ResultsClient
            from bitrix_results.testing import FakePortal, PortalConfig, serve_portal_in_thread

            with serve_portal_in_thread(FakePortal(PortalConfig(scale=100))) as running:
                client = ResultsClient.from_webhook(running.webhook_url)
                print(client.add(1, "hello").id)
                walk = client.iter_results(1)
                print(next(walk).id)  # an abandoned iterator too
            print("done")
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "done"]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 15


async def test_the_callers_running_loop_is_not_touched(mock: MockPortal) -> None:
    caller = asyncio.get_running_loop()
    mock.post(ADD, payload=ok({"item": item(7, text="Done")}))
    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as client:
        assert client.add(42, "Done").id == 7
        assert client._loop.loop is not caller
    assert caller.is_running()


def test_iterators_run_on_the_shared_loop_and_close_when_abandoned(
    mock: MockPortal, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    closed = threading.Event()

    async def walk(*args: object, **kwargs: object) -> AsyncIterator[int]:
        try:
            for i in range(10):
                seen.append(threading.current_thread().name)
                yield i
        finally:
            seen.append(threading.current_thread().name)
            closed.set()

    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as client:
        monkeypatch.setattr(client._client, "iter_results", walk)
        it = client.iter_results(1)
        assert not seen  # nothing runs before the first next()
        assert [next(it), next(it)] == [0, 1]
        assert not closed.is_set()
        it.close()
        assert closed.is_set()
    assert seen == ["bitrix_results.sync"] * 3


def test_a_sync_call_from_the_shared_loop_raises_instead_of_deadlocking(
    mock: MockPortal,
) -> None:
    mock.post(ADD, payload=ok({"item": item(7, text="Done")}), repeat=True)

    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as client:

        async def on_the_shared_loop() -> None:
            with pytest.raises(RuntimeError, match="deadlock"):
                client.add(42, "Done")

        client._loop.run(on_the_shared_loop())

        def on_progress(progress: object) -> None:
            client.list(42)  # called back on the shared loop's thread

        # bulk_add stops on the callback's error; the error (or its cause) says why.
        with pytest.raises(Exception) as info:  # noqa: PT011
            client.bulk_add([(42, "a")], batch=False, on_progress=on_progress)
        chain = [info.value, info.value.__cause__]
        assert any(isinstance(e, RuntimeError) and "deadlock" in str(e) for e in chain), chain
        # The client still works from an ordinary thread.
        assert client.add(42, "Done").id == 7


def test_an_iterator_error_reaches_the_caller(mock: MockPortal) -> None:
    with ResultsClient.from_webhook(
        WEBHOOK_URL, scheduler=fast_scheduler(), sender=mock.sender()
    ) as client:
        walk = client.iter_results(0)
        with pytest.raises(InvalidInputError):
            next(walk)
        with pytest.raises(StopIteration):
            next(walk)
    assert mock.requests == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_its_own_loop_thread(tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from bitrix_results.sync import ResultsClient
            from bitrix_results.testing import FakePortal, PortalConfig, serve_portal_in_thread

            with serve_portal_in_thread(FakePortal(PortalConfig(scale=100))) as running:
                with ResultsClient.from_webhook(running.webhook_url) as parent:
                    parent.add(1, "parent")
                    pid = os.fork()
                    if pid == 0:
                        try:
                            parent.add(1, "inherited")
                        except RuntimeError as exc:
                            print("inherited:", "create a new client" in str(exc))
                        with ResultsClient.from_webhook(running.webhook_url) as child:
                            print("child:", child.add(2, "child").task_id)
                        os._exit(0)
                    os.waitpid(pid, 0)
                    print("parent:", parent.add(3, "after").task_id)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["inherited: True", "child: 2", "parent: 3"]
