"""The CLI end to end against the fake portal, read as a user reads it."""

from __future__ import annotations

import json

import pytest

from bitrix_results.cli import main


@pytest.fixture
def webhook(fake_portal, monkeypatch):
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", fake_portal.webhook_url)
    return fake_portal


def _code(running) -> str:
    return running.portal.config.webhook_code


def test_add_list_update_delete(webhook, capsys):
    assert main(["add", "5", "Shipped", "--scale", "100"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["taskId"] == 5
    assert added["text"] == "Shipped"
    assert main(["update", str(added["id"]), "Shipped twice", "--scale", "100"]) == 0
    capsys.readouterr()
    assert main(["list", "5", "--scale", "100"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in listed] == ["Shipped twice"]
    assert main(["delete", str(added["id"]), "--scale", "100"]) == 0
    assert webhook.portal.results_of(5) == []


def test_import_jsonl_reports_and_writes_failures(webhook, tmp_path, capsys):
    source = tmp_path / "results.jsonl"
    rows = [json.dumps({"task_id": 1 + i % 3, "text": f"row {i}"}) for i in range(120)]
    rows.insert(10, json.dumps({"task_id": 2, "text": "   "}))  # empty text
    rows.insert(20, "{not json")  # unreadable
    rows.insert(30, json.dumps({"task_id": 9001, "text": "no access"}))
    source.write_text("\n".join(rows) + "\n")
    code = main(["import", str(source), "--scale", "100", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert webhook.portal.stats().results_created == 120
    assert "created" in out
    assert "120" in out
    failures = [
        json.loads(line) for line in (tmp_path / "results.failed.jsonl").read_text().splitlines()
    ]
    assert len(failures) == 3
    assert any("InvalidInputError" in f["error"] for f in failures)
    assert any("AccessDeniedError" in f["error"] for f in failures)
    assert any(f.get("line") == 21 for f in failures)


def test_import_csv_resumes_from_its_journal(webhook, tmp_path, capsys):
    source = tmp_path / "results.csv"
    lines = ["task_id,text,key"] + [f"{1 + i % 4},csv row {i},row-{i}" for i in range(80)]
    source.write_text("\n".join(lines) + "\n")
    journal = str(tmp_path / "import.journal")
    args = ["import", str(source), "--journal", journal, "--scale", "100", "--quiet"]
    assert main(args) == 0
    assert main(args) == 0  # everything is in the journal: nothing is sent again
    capsys.readouterr()
    assert webhook.portal.stats().results_created == 80
    assert webhook.portal.ledger.duplicates() == 0


def test_export_csv(webhook, tmp_path, capsys):
    for task in (1, 2):
        for i in range(3):
            webhook.portal.add_result(task, f"task {task} result {i}")
    target = tmp_path / "export.csv"
    args = ["export", "--tasks", "1,2", "--format", "csv", "--output", str(target)]
    assert main([*args, "--scale", "100"]) == 0
    lines = target.read_text().splitlines()
    assert lines[0] == "task_id,id,status,author_id,created_at,text"
    assert len(lines) == 7


def test_errors_name_the_problem_and_never_the_webhook_code(webhook, capsys, monkeypatch):
    assert main(["add", "0", "text", "--scale", "100"]) == 2
    err = capsys.readouterr().err
    assert "task_id" in err
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", webhook.webhook_url.replace("/rest/1/", "/rest/x/"))
    assert main(["add", "1", "text"]) == 2
    err = capsys.readouterr().err
    assert "webhook_url" in err
    assert _code(webhook) not in err
    monkeypatch.setenv(
        "BITRIX_WEBHOOK_URL", webhook.webhook_url.replace(_code(webhook), "wrongcode")
    )
    assert main(["add", "1", "text", "--scale", "100"]) == 2
    captured = capsys.readouterr()
    assert "NO_AUTH_FOUND" in captured.err
    assert "wrongcode" not in captured.err + captured.out
