"""Every code block of README.md and docs/ runs, or says why it cannot.

Each page gets a fake portal on 127.0.0.1 (``BITRIX_WEBHOOK_URL`` points at it) and a
fresh working directory; its blocks run in order, each in a subprocess, so a page can
write a file in one block and use it in the next. After the page, the portal must have
executed nothing twice. The rules for marking blocks are in ``_blocks.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bitrix_results.testing import FakePortal, PortalConfig, serve_portal_in_thread

from ._blocks import ROOT, Block, blocks, doc_files, problems

BLOCK_TIMEOUT = 240.0
PAGES = [p for p in doc_files() if any(b.kind == "run" and b.lang != "text" for b in blocks(p))]

# A notebook: the cells of a page run one after another inside a running event loop, as
# in Jupyter, where top-level await works and asyncio.run() refuses to start.
_NOTEBOOK = """\
import ast, asyncio, sys

async def main() -> None:
    namespace = {"__name__": "__main__"}
    for path in sys.argv[1:]:
        source = open(path, encoding="utf-8").read()
        code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if asyncio.iscoroutine(result):
            await result

asyncio.run(main())
"""

_PYTEST_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""


def test_every_block_is_run_or_says_why() -> None:
    found = [b for path in doc_files() for b in blocks(path)]
    assert len(found) > 20  # the parser sees the blocks at all
    issues = [issue for b in found for issue in problems(b)]
    assert issues == []


def test_saved_files_are_used() -> None:
    for path in doc_files():
        page = blocks(path)
        for i, block in enumerate(page):
            if block.kind == "run" and block.mode == "save-as":
                later = [b for b in page[i + 1 :] if b.kind == "run" and b.mode != "save-as"]
                stem = block.arg.removesuffix(".py")
                used = re.compile(rf"{re.escape(block.arg)}|\b(?:from|import) {re.escape(stem)}\b")
                assert any(used.search(b.code) for b in later), (
                    f"{block.where}: {block.arg} is saved but no later block uses it"
                )


@pytest.fixture
def redis_url() -> Iterator[str | None]:
    """A throwaway redis-server on 127.0.0.1 if one is installed, else None."""
    server = shutil.which("redis-server")
    if server is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _env(webhook_url: str, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "BITRIX_"))}
    env["BITRIX_WEBHOOK_URL"] = webhook_url
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def _run(block: Block, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.where} did not finish in {BLOCK_TIMEOUT:g} s:\n{exc.stdout}")
    if done.returncode != 0:
        pytest.fail(
            f"{block.where} failed (exit {done.returncode}):\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    needs_redis = any(b.kind == "run" and b.mode == "needs-redis" for b in blocks(page))
    redis_url: str | None = request.getfixturevalue("redis_url") if needs_redis else None
    portal = FakePortal(PortalConfig())
    cells: list[Path] = []
    with serve_portal_in_thread(portal) as running:
        env = _env(running.webhook_url, redis_url)
        page_blocks = [b for b in blocks(page) if b.kind == "run" and b.lang != "text"]
        for n, block in enumerate(page_blocks):
            if block.mode == "needs-redis" and redis_url is None:
                pytest.skip(f"{block.where} needs redis-server, which is not installed")
            if block.mode == "save-as":
                (tmp_path / block.arg).write_text(block.code, encoding="utf-8")
            elif block.mode == "notebook":
                cell = tmp_path / f"cell_{n}.py"
                cell.write_text(block.code, encoding="utf-8")
                cells.append(cell)
                if not any(b.mode == "notebook" for b in page_blocks[n + 1 :]):
                    # The last cell: run the notebook top to bottom in one kernel.
                    runner = tmp_path / "notebook_runner.py"
                    runner.write_text(_NOTEBOOK, encoding="utf-8")
                    _run(block, [sys.executable, str(runner), *map(str, cells)], tmp_path, env)
            elif block.mode == "pytest":
                module = tmp_path / f"test_block_{n}.py"
                module.write_text(block.code, encoding="utf-8")
                (tmp_path / "pytest.ini").write_text(_PYTEST_INI, encoding="utf-8")
                argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                argv += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path)]
                _run(block, [*argv, module.name], tmp_path, env)
            elif block.lang == "python":
                script = tmp_path / f"block_{n}.py"
                script.write_text(block.code, encoding="utf-8")
                _run(block, [sys.executable, script.name], tmp_path, env)
            else:
                _run(block, ["bash", "-e", "-o", "pipefail", "-c", block.code], tmp_path, env)
        stats = portal.stats()
    assert stats.duplicates == 0, f"{page}: the examples created {stats.duplicates} duplicates"
