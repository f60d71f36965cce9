"""Issue 9 "Secrets", end to end: server text quoting the webhook code reaches neither the
CLI's stderr nor its ``--failures`` file (the CLI entry point, run as a subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import msgspec

from ._helpers import CODE
from .conftest import Received, ServeFactory, response


async def test_import_failures_file_and_stderr_hold_no_webhook_code(
    serve: ServeFactory, tmp_path: Path
) -> None:
    async def quoting(request: Received, writer: asyncio.StreamWriter) -> None:
        body = {
            "error": {
                "code": "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION",
                "message": f"Task not accepted at {request.target} (code {CODE})",
                "validation": [],
            }
        }
        writer.write(response(400, msgspec.json.encode(body), reason="Bad Request"))
        await writer.drain()

    server = await serve(quoting)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"task_id": 1, "text": "one"}\n{"task_id": 2, "text": "two"}\n')
    failures = tmp_path / "failed.jsonl"
    env = {**os.environ, "BITRIX_WEBHOOK_URL": f"{server.origin}/rest/7/{CODE}/"}
    env.pop("HTTP_PROXY", None)
    env.pop("http_proxy", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitrix_results",
        "import",
        str(rows),
        "--no-batch",
        "--quiet",
        "--failures",
        str(failures),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    assert len(server.received) >= 2
    written = failures.read_text()
    # The rows failed with the portal's message, scrubbed.
    assert "Task not accepted at /rest/api/7/***/tasks.task.result.add" in written
    for text in (stdout.decode(), stderr.decode(), written):
        assert CODE not in text
