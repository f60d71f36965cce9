"""The command as a user runs it: ``python -m bitrix_results`` in its own process.

Each test drives the real entry point (exit status, stdout, stderr) against
the fake portal served on 127.0.0.1 by this test process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bitrix_results._cli.exits import AUTH, INTERRUPTED, SOME_FAILED, UNREACHABLE, USAGE
from bitrix_results.testing import RunningPortal

ROOT = Path(__file__).parents[2]


def _env(webhook: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TTY_INTERACTIVE")}
    env.pop("BITRIX_WEBHOOK_URL", None)
    if webhook is not None:
        env["BITRIX_WEBHOOK_URL"] = webhook
    env.update(extra)
    return env


def cli(
    args: Sequence[str], webhook: str | None = None, *, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitrix_results", *args],
        env=_env(webhook, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _rows(path: Path, n: int, *, tasks: int = 5, prefix: str = "row") -> Path:
    path.write_text(
        "".join(
            json.dumps({"task_id": 1 + i % tasks, "text": f"{prefix} {i}"}) + "\n" for i in range(n)
        )
    )
    return path


def _refused_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- item 1/2: a portal that is down, a webhook that is wrong ---------------------------------


@pytest.mark.parametrize("command", [["add", "1", "x"], ["list", "1"], ["import", "FILE"]])
def test_a_refused_port_stops_at_once_as_unreachable(tmp_path: Path, command: list[str]) -> None:
    source = _rows(tmp_path / "in.jsonl", 20)
    args = [str(source) if a == "FILE" else a for a in command]
    webhook = f"http://127.0.0.1:{_refused_port()}/rest/1/secretcode123/"
    # The 60 s timeout is the guard: the default retry policy would take minutes.
    done = cli([*args, "--quiet"] if command[0] == "import" else args, webhook, timeout=60)
    assert done.returncode == UNREACHABLE, done.stderr
    assert done.stderr.startswith("error: cannot reach the portal: ")
    assert "connection refused" in done.stderr
    assert "secretcode123" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_wrong_webhook_code_stops_an_import_before_any_row(
    fake_portal: RunningPortal, tmp_path: Path
) -> None:
    source = _rows(tmp_path / "in.jsonl", 500)
    wrong = fake_portal.webhook_url.replace(fake_portal.portal.config.webhook_code, "wrongcode99")
    done = cli(["import", str(source), "--scale", "100", "--quiet"], wrong)
    assert done.returncode == AUTH, done.stderr
    assert done.stderr.startswith("error: authentication failed: ")
    assert "NO_AUTH_FOUND" in done.stderr
    assert "wrongcode99" not in done.stderr + done.stdout
    # One probe, not 500 failing rows; no failures file to clean up.
    assert fake_portal.portal.stats().requests == 1
    assert fake_portal.portal.stats().results_created == 0
    assert not (tmp_path / "in.jsonl.failed.jsonl").exists()


# -- item 6: scripting --------------------------------------------------------------------------


def test_version_help_and_usage_errors() -> None:
    done = cli(["--version"])
    assert done.returncode == 0
    assert done.stdout.startswith("bitrix-results ")
    helped = cli(["--help"])
    assert helped.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 "):
        assert f"\n  {code}" in helped.stdout
    import_help = cli(["import", "--help"])
    for option in ("--json", "--verbose", "--timeout", "--journal", "--no-journal"):
        assert option in import_help.stdout
    assert "exit status:" in import_help.stdout
    usage = cli(["import"])
    assert usage.returncode == USAGE
    assert "error: the following arguments are required: file" in usage.stderr
    both = cli(["import", "x.jsonl", "--journal", "j", "--no-journal"])
    assert both.returncode == USAGE
    assert "not allowed with argument" in both.stderr
    timeout = cli(["add", "1", "x", "--timeout", "0"])
    assert timeout.returncode == USAGE
    assert "--timeout: must be a positive number of seconds" in timeout.stderr


def test_json_output_and_some_rows_failed(fake_portal: RunningPortal, tmp_path: Path) -> None:
    webhook = fake_portal.webhook_url
    added = cli(["add", "7", "Shipped", "--scale", "100", "--json"], webhook)
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert (result["taskId"], result["text"]) == (7, "Shipped")
    updated = cli(["update", str(result["id"]), "Shipped!", "--scale", "100", "--json"], webhook)
    assert json.loads(updated.stdout)["text"] == "Shipped!"
    listed = cli(["list", "7", "--scale", "100", "--json"], webhook)
    assert [json.loads(line)["text"] for line in listed.stdout.splitlines()] == ["Shipped!"]

    source = _rows(tmp_path / "in.jsonl", 30)
    with source.open("a") as fh:
        fh.write(json.dumps({"task_id": 1, "text": ""}) + "\n")
        fh.write("{oops\n")
    done = cli(["import", str(source), "--scale", "100", "--json"], webhook)
    assert done.returncode == SOME_FAILED, done.stderr
    summary = json.loads(done.stdout)
    assert summary["created"] == 30
    assert summary["created_earlier"] == 0
    assert summary["failed"] == 2
    assert summary["failures_by_reason"] == {"InvalidInputError": 1, "unreadable row": 1}
    assert summary["requests"] >= 1
    assert summary["journal"] == str(source) + ".journal"
    assert summary["failures_file"] == str(source) + ".failed.jsonl"
    assert summary["ratio"] is None or summary["ratio"] >= 1
    assert len(Path(summary["failures_file"]).read_text().splitlines()) == 2


def test_json_error_and_long_messages_stay_on_one_line(tmp_path: Path) -> None:
    webhook = f"http://127.0.0.1:{_refused_port()}/rest/1/secretcode123/"
    done = cli(["add", "1", "x", "--json"], webhook)
    assert done.returncode == UNREACHABLE
    assert json.loads(done.stdout) == {"error": done.stderr[len("error: ") :].strip(), "status": 4}
    # stderr is not a terminal: the message is not wrapped at 80 columns.
    assert len(done.stderr) > 80
    assert done.stderr.count("\n") == 1


def test_verbose_logs_retries(make_fake_portal: Any, tmp_path: Path) -> None:
    # Every other request refused before it runs: the client retries them.
    from bitrix_results.testing import Faults

    running = make_fake_portal(faults=Faults(fail_before=0.3), seed=3)
    source = _rows(tmp_path / "in.jsonl", 40)
    done = cli(
        ["import", str(source), "--scale", "100", "--quiet", "--no-batch", "-v"],
        running.webhook_url,
    )
    assert done.returncode == 0, done.stderr
    assert " INFO bitrix_results" in done.stderr
    assert "retrying tasks.task.result.add" in done.stderr
    assert running.portal.config.webhook_code not in done.stderr


# -- item 4: Ctrl-C, then the same command again ------------------------------------------------


def test_interrupt_then_rerun_creates_nothing_twice(make_fake_portal: Any, tmp_path: Path) -> None:
    running = make_fake_portal(latency=0.05)
    source = _rows(tmp_path / "results.jsonl", 400, tasks=20)
    args = [
        sys.executable, "-m", "bitrix_results", "import", str(source),
        "--scale", "100", "--quiet", "--no-batch", "--concurrency", "4",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args,
        env=_env(running.webhook_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while running.portal.stats().results_created < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == INTERRUPTED, err
    first = running.portal.stats().results_created
    assert 20 <= first < 400
    assert "interrupted: " in err
    assert f"the journal {source}.journal records them" in err
    resume = err.split("Resume (nothing is created twice): ", 1)[1].strip()
    assert (
        resume == f"bitrix-results import {source} --scale 100 --quiet --no-batch --concurrency 4"
    )

    again = cli([*resume.split()[1:], "--json"], running.webhook_url)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert running.portal.ledger.duplicates() == 0
    assert running.portal.stats().results_created == 400
    assert summary["created"] + summary["created_earlier"] == 400
    assert summary["created_earlier"] >= 1


def test_no_journal_says_a_rerun_would_duplicate(make_fake_portal: Any, tmp_path: Path) -> None:
    running = make_fake_portal(latency=0.05)
    source = _rows(tmp_path / "results.jsonl", 300, tasks=20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitrix_results", "import", str(source), "--scale", "100",
         "--quiet", "--no-batch", "--concurrency", "2", "--no-journal"],
        env=_env(running.webhook_url), cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while running.portal.stats().results_created < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == INTERRUPTED
    assert "No journal was kept (--no-journal)" in err
    assert not (tmp_path / "results.jsonl.journal").exists()


# -- item 7: round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_imports_unchanged(make_fake_portal: Any, tmp_path: Path, fmt: str) -> None:
    source, target = make_fake_portal(), make_fake_portal()
    for task in (42, 43):
        for i in range(3):
            source.portal.add_result(task, f'task {task}, result {i}, "quoted", comma')
    exported = tmp_path / f"export.{fmt}"
    done = cli(
        ["export", "--tasks", "43,42,43", "--format", fmt, "--output", str(exported), "--json",
         "--scale", "100"],
        source.webhook_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"] == 2
    if fmt == "jsonl":
        records = [json.loads(line) for line in exported.read_text().splitlines()]
        # Each task once, in the order given.
        assert [r["taskId"] for r in records] == [43, 43, 43, 42, 42, 42]
    imported = cli(["import", str(exported), "--scale", "100", "--quiet"], target.webhook_url)
    assert imported.returncode == 0, imported.stderr + imported.stdout
    for task in (42, 43):
        assert [r["text"] for r in target.portal.results_of(task)] == [
            r["text"] for r in source.portal.results_of(task)
        ]


# -- item 11: pipes, the sync client at exit ------------------------------------------------------


def test_a_closed_pipe_ends_quietly(fake_portal: RunningPortal) -> None:
    for i in range(400):
        fake_portal.portal.add_result(5, f"result number {i} " + "x" * 300)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitrix_results", "list", "5", "--scale", "100"],
        env=_env(fake_portal.webhook_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert json.loads(first)["taskId"] == 5
    assert "Broken pipe" not in err
    assert "Traceback" not in err
    assert err == ""
    assert proc.returncode == 141


def test_an_unclosed_sync_client_closes_quietly_at_exit(fake_portal: RunningPortal) -> None:
    script = (
        "from bitrix_results.sync import ResultsClient\n"
        "from bitrix_results import Limits\n"
        f"client = ResultsClient.from_webhook({fake_portal.webhook_url!r},"
        " limits=Limits.standard().scaled(100))\n"
        "print(client.add(3, 'never closed').task_id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(None, PYTHONWARNINGS="default"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert "Unclosed" not in done.stderr
    assert done.stderr == ""


# -- item 9 and 11: the progress bar ---------------------------------------------------------------

#: rich draws its live bar only on a terminal; these make it draw into the pipe.
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "250"}


def test_the_bar_says_what_it_waits_for(make_fake_portal: Any, tmp_path: Path) -> None:
    # 2 s per add at scale 400: a batch of 50 costs 100 s of the 480 s budget, so
    # the import waits for the budget's window several times.
    running = make_fake_portal(scale=400, default_cost=2.0, cost_jitter=0.0)
    source = _rows(tmp_path / "in.jsonl", 601)
    done = cli(
        ["import", str(source), "--scale", "400", "--no-journal", "-v"],
        running.webhook_url,
        **TERMINAL,
    )
    assert done.returncode == 0, done.stderr
    # -v logs each wait; the bar shows it while it lasts.
    assert "INFO bitrix_results.scheduler: waiting for the operating budget of" in done.stderr
    assert re.search(
        r"waiting for the operating budget of result\.add until \d\d:\d\d:\d\d \(\d+ s\)",
        done.stderr,
    ), done.stderr[-2000:]


def test_the_bar_and_the_summary_agree_on_failures(
    fake_portal: RunningPortal, tmp_path: Path
) -> None:
    source = _rows(tmp_path / "in.jsonl", 60)
    with source.open("a") as fh:
        fh.write(json.dumps({"task_id": 2, "text": "  "}) + "\n")
        fh.write("[not, an, object]\n")
        fh.write(json.dumps({"task_id": 9001, "text": "no access"}) + "\n")
    done = cli(["import", str(source), "--scale", "100"], fake_portal.webhook_url, **TERMINAL)
    assert done.returncode == SOME_FAILED, done.stderr
    bar = re.findall(r"failed (\d+)", done.stderr)
    assert bar
    assert int(bar[-1]) == 3
    table = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert re.search(r"│ failed\s*│ 3  \(", table), table


# -- item 3: the demo explains its numbers ---------------------------------------------------------


def test_the_demo_explains_the_bound_and_its_ratio() -> None:
    done = cli(["demo", "--items", "300", "--scale", "200", "--quiet"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bound: the time an ideal client would need for those same requests" in done.stdout
    assert "It cannot be below 1" in done.stdout
    ratios = [float(r) for r in re.findall(r"\(ratio (\d+\.\d+)\)", done.stdout)]
    assert ratios
    assert all(r >= 1 for r in ratios), ratios
    assert "0 duplicates" in done.stdout

    as_json = cli(["demo", "--items", "120", "--scale", "200", "--json"], timeout=120)
    runs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["run"] for r in runs] == [
        "120 results, one request per result",
        "120 results, batches of 50",
    ]
    assert all(r["created"] == 120 for r in runs)
    assert all(r["ratio"] is None or r["ratio"] >= 1 for r in runs)


# -- item 8: the REST 3.0 form of a webhook URL ---------------------------------------------


def test_the_rest_3_webhook_url_is_accepted(fake_portal: RunningPortal) -> None:
    v3 = fake_portal.webhook_url.replace("/rest/", "/rest/api/", 1)
    assert "/rest/api/1/" in v3
    done = cli(["add", "4", "through the v3 URL", "--scale", "100"], v3)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["taskId"] == 4
    assert [r["text"] for r in fake_portal.portal.results_of(4)] == ["through the v3 URL"]


def test_another_portal_error_is_status_5(fake_portal: RunningPortal) -> None:
    done = cli(["delete", "987654", "--scale", "100"], fake_portal.webhook_url)
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr


def test_an_unwritable_default_journal_says_what_to_do(
    fake_portal: RunningPortal, tmp_path: Path
) -> None:
    source = _rows(tmp_path / "in.jsonl", 3)
    journal = tmp_path / "in.jsonl.journal"
    journal.mkdir()  # the default journal's path is taken by a directory
    done = cli(["import", str(source), "--scale", "100", "--quiet"], fake_portal.webhook_url)
    assert done.returncode == USAGE, done.stderr
    assert done.stderr.startswith("error: journal: ")
    assert "--no-journal" in done.stderr
    assert fake_portal.portal.stats().results_created == 0


# -- item 5 (the summary's part): rows rolled back and sent again ---------------------------------


def test_the_summary_counts_rows_rolled_back_and_resent(
    fake_portal: RunningPortal, tmp_path: Path
) -> None:
    # One row the portal refuses inside a batch: the portal rolls the whole batch
    # back (api-facts §3), so its other rows are sent again.
    source = _rows(tmp_path / "in.jsonl", 120)
    lines = source.read_text().splitlines()
    lines.insert(60, json.dumps({"task_id": 9001, "text": "no access"}))
    source.write_text("\n".join(lines) + "\n")
    done = cli(["import", str(source), "--scale", "100", "--json"], fake_portal.webhook_url)
    assert done.returncode == SOME_FAILED, done.stderr
    summary = json.loads(done.stdout)
    assert summary["created"] == 120
    assert summary["failures_by_reason"] == {"AccessDeniedError": 1}
    assert summary["resent"] >= 1
    assert fake_portal.portal.ledger.duplicates() == 0
    table = cli(
        ["import", str(source), "--scale", "100", "--no-journal", "--quiet"],
        fake_portal.webhook_url,
    )
    assert re.search(r"│ re-sent\s*│ [1-9]\d*  \(rows rolled back", table.stdout), table.stdout


def test_timeout_bounds_each_answer(make_fake_portal: Any) -> None:
    # Every answer takes 3 s; with --timeout 0.3 none comes in time, so the
    # command gives up (after its short retry budget) as unreachable.
    running = make_fake_portal(latency=3.0)
    done = cli(["list", "1", "--scale", "100", "--timeout", "0.3"], running.webhook_url)
    assert done.returncode == UNREACHABLE, done.stderr
    assert done.stderr.startswith("error: the portal did not answer: ")
    assert "no answer in time" in done.stderr
