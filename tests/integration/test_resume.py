"""Kill -9 in the middle of an import, start it again on the same journal: exact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitrix_results import NewResult

pytestmark = pytest.mark.slow

IMPORTER = Path(__file__).with_name("_importer.py")


def _start(
    running, journal: Path, n: int, batch: bool, *, out=subprocess.PIPE
) -> subprocess.Popen[str]:
    cfg = running.portal.config
    return subprocess.Popen(
        [
            sys.executable,
            str(IMPORTER),
            running.webhook_url,
            str(journal),
            str(n),
            "1" if batch else "0",
            str(cfg.effective_burst),
            str(cfg.effective_drain),
        ],
        stdout=out,
        text=True,
    )


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
def test_sigkill_then_resume_creates_each_item_once(make_fake_portal, tmp_path, batch):
    n = 2000 if batch else 600
    # Slow enough that the kill lands mid-run, with requests in flight (latency).
    running = make_fake_portal(
        scale=100, burst=5, drain_per_second=0.2 if batch else 1.0, latency=0.02
    )
    journal = tmp_path / "import.journal"
    first = _start(running, journal, n, batch, out=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while running.portal.stats().results_created < n // 4:
        assert first.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    created_before = running.portal.stats().results_created
    assert 0 < created_before < n

    second = _start(running, journal, n, batch)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0
    report = json.loads(out)
    assert report == {"created": n, "failed": 0, "job": report["job"]}

    items = [NewResult(1 + i % 37, f"imported {i}") for i in range(n)]
    created = running.portal.ledger.created
    assert len(created) == n
    assert running.portal.ledger.duplicates() == 0
    assert sorted((r.task_id, r.text) for r in created) == sorted(
        (i.task_id, i.text) for i in items
    )
