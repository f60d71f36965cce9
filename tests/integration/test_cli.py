"""The CLI end to end against the fake portal, read as a user reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bitrix_results.cli import main


@pytest.fixture
def webhook(fake_portal, monkeypatch):
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", fake_portal.webhook_url)
    return fake_portal


def _code(running) -> str:
    return running.portal.config.webhook_code


def _import(path: Path, *extra: str) -> int:
    return main(["import", str(path), "--scale", "100", "--quiet", *extra])


def _failures(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _table_row(out: str, name: str) -> str:
    """The text of one summary-table row (cells joined, wrapped lines joined)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0] == name:
            text = [cells[-1]]
            for more in lines[i + 1 :]:
                cont = [c.strip() for c in more.strip("│ ").split("│")]
                if len(cont) < 2 or cont[0]:
                    break
                text.append(cont[-1])
            return " ".join(text)
    raise AssertionError(f"no {name!r} row in {out}")


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
    out, err = capsys.readouterr()
    assert code == 1
    assert webhook.portal.stats().results_created == 120
    assert "created" in out
    assert "120" in out
    failures = _failures(tmp_path / "results.jsonl.failed.jsonl")
    # The unreadable row first, with its line and text; then the refused rows.
    assert len(failures) == 3
    assert failures[0] == {
        "task_id": None,
        "text": None,
        "key": None,
        "line": 21,
        "raw": "{not json",
        "error": failures[0]["error"],
    }
    assert failures[0]["error"].startswith("unreadable row: not JSON")
    assert all(set(f) == {"task_id", "text", "key", "error"} for f in failures[1:])
    assert any("InvalidInputError" in f["error"] for f in failures)
    assert any("AccessDeniedError" in f["error"] for f in failures)
    assert "results.jsonl line 21: unreadable row" in err


def test_import_csv_resumes_from_its_journal(webhook, tmp_path, capsys):
    source = tmp_path / "results.csv"
    lines = ["task_id,text,key"] + [f"{1 + i % 4},csv row {i},row-{i}" for i in range(80)]
    source.write_text("\n".join(lines) + "\n")
    journal = str(tmp_path / "import.journal")
    args = ["import", str(source), "--journal", journal, "--scale", "100", "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0  # everything is in the journal: nothing is sent again
    assert "80 (from the journal)" in capsys.readouterr().out
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
    assert main(["add", "1", "text", "--scale", "100"]) == 3  # authentication
    captured = capsys.readouterr()
    assert "NO_AUTH_FOUND" in captured.err
    assert "wrongcode" not in captured.err + captured.out


# -- import: reading files --------------------------------------------------------------


def test_csv_rows_with_extra_or_missing_fields_are_unreadable(webhook, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    source.write_text(
        "task_id,text,key\n"
        "1,plain,k1\n"  # line 2
        "2,extra,col,umns\n"  # line 3: four fields
        "3\n"  # line 4: one field
        '4,"multi\nline",\n'  # lines 5-6: one row
        "\n"
        "5,too,few\n"  # line 8: fine
        "6,only two\n"  # line 9: key missing
    )
    code = _import(source)
    out, err = capsys.readouterr()
    assert code == 1
    created = sorted((r.task_id, r.text) for r in webhook.portal.ledger.created)
    assert created == [(1, "plain"), (4, "multi\nline"), (5, "too")]
    assert "rows.csv line 3: unreadable row: 4 fields where the header has 3" in err
    assert "rows.csv line 4: unreadable row: 1 fields" in err
    assert "rows.csv line 9: unreadable row: 2 fields" in err
    assert "unreadable row: 3" in _table_row(out, "failed")
    assert _table_row(out, "failed").startswith("3")
    assert "Traceback" not in err
    # The unreadable rows are in the failures file, each with its line and text.
    failures = _failures(tmp_path / "rows.csv.failed.jsonl")
    assert [(f["line"], f["raw"]) for f in failures] == [
        (3, "2,extra,col,umns"),
        (4, "3"),
        (9, "6,only two"),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_order_mark_is_accepted(webhook, tmp_path, capsys, suffix):
    source = tmp_path / f"excel{suffix}"
    body = "task_id,text\n30,bom row\n" if suffix == ".csv" else '{"task_id": 30, "text": "bom"}\n'
    source.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert _import(source) == 0
    capsys.readouterr()
    assert [r.task_id for r in webhook.portal.ledger.created] == [30]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_that_is_not_utf8_is_an_error_before_sending(webhook, tmp_path, capsys, suffix):
    source = tmp_path / f"latin{suffix}"
    body = "task_id,text\n5,café\n" if suffix == ".csv" else '{"task_id": 5, "text": "café"}\n'
    source.write_bytes(body.encode("latin-1"))
    assert _import(source) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    line = 2 if suffix == ".csv" else 1
    assert f"is not UTF-8 text (line {line}: byte 0xe9; save it as UTF-8)" in captured.err
    assert "Traceback" not in captured.err
    assert webhook.portal.stats().requests == 0


@pytest.mark.parametrize("scale", ["0", "nan", "-1", "inf", "-inf", "fast"])
def test_scale_must_be_a_positive_finite_number(webhook, tmp_path, capsys, scale):
    source = tmp_path / "one.jsonl"
    source.write_text('{"task_id": 1, "text": "x"}\n')
    assert main(["import", str(source), "--quiet", f"--scale={scale}"]) == 2
    assert main(["add", "1", "x", f"--scale={scale}"]) == 2
    err = capsys.readouterr().err
    assert f"error: argument --scale: must be a positive finite number, got '{scale}'" in err
    assert "Traceback" not in err
    assert webhook.portal.stats().requests == 0


def test_concurrency_must_be_positive(webhook, tmp_path, capsys):
    source = tmp_path / "one.jsonl"
    source.write_text('{"task_id": 1, "text": "x"}\n')
    assert _import(source, "--concurrency", "0") == 2
    assert "argument --concurrency: must be a positive integer" in capsys.readouterr().err


def test_a_missing_or_unreadable_file_is_an_error(webhook, tmp_path, capsys, monkeypatch):
    assert _import(tmp_path / "nope.csv") == 2
    assert "error: file: no such file" in capsys.readouterr().err
    assert _import(tmp_path) == 2
    assert "error: file: not a file" in capsys.readouterr().err

    locked = tmp_path / "locked.csv"
    locked.write_text("task_id,text\n1,x\n")
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    assert _import(locked) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: file: cannot read")
    assert "Permission denied" in err
    assert "Traceback" not in err
    assert webhook.portal.stats().requests == 0


def test_os_errors_are_reported_not_raised(webhook, tmp_path, capsys):
    source = tmp_path / "one.jsonl"
    source.write_text('{"task_id": 1, "text": ""}\n')
    # The failures file cannot be written: a directory that does not exist.
    code = _import(source, "--failures", str(tmp_path / "no" / "such" / "dir" / "f.jsonl"))
    err = capsys.readouterr().err
    assert code == 2
    assert "error: No such file or directory" in err
    assert "Traceback" not in err
    # The journal cannot be opened (SQLite).
    code = _import(source, "--journal", str(tmp_path / "no" / "such" / "journal"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: journal: ")
    assert "Traceback" not in err


def test_a_journal_of_another_input_is_an_error(webhook, tmp_path, capsys):
    journal = str(tmp_path / "import.journal")
    first = tmp_path / "first.jsonl"
    first.write_text('{"task_id": 1, "text": "Approved"}\n{"task_id": 2, "text": "Rejected"}\n')
    other = tmp_path / "other.jsonl"
    other.write_text('{"task_id": 11, "text": "Other"}\n{"task_id": 12, "text": "Input"}\n')
    assert _import(first, "--journal", journal) == 0
    capsys.readouterr()
    assert _import(other, "--journal", journal) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: journal: {journal} ")
    assert "delete the journal or give --journal with another path" in err
    assert "Traceback" not in err
    assert sorted(r.task_id for r in webhook.portal.ledger.created) == [1, 2]


def test_unreadable_rows_are_listed_on_stderr_up_to_20(webhook, tmp_path, capsys):
    source = tmp_path / "messy.jsonl"
    lines = ['{"task_id": 1, "text": "ok"}'] + ["{broken"] * 24 + ["[1, 2]"]
    source.write_text("\n".join(lines) + "\n")
    assert _import(source) == 1
    out, err = capsys.readouterr()
    listed = [line for line in err.splitlines() if ": unreadable row: " in line]
    assert len(listed) == 20
    assert listed[0].startswith("messy.jsonl line 2: unreadable row: not JSON")
    assert "... and 5 more unreadable rows" in err
    assert _table_row(out, "failed").startswith("25")
    assert "unreadable row: 25" in _table_row(out, "failed")
    assert webhook.portal.stats().results_created == 1


# -- import: the failures file ----------------------------------------------------------


def test_failures_file_is_named_after_the_whole_file_name(webhook, tmp_path, capsys):
    (tmp_path / "data.csv").write_text("task_id,text\n1,\n")
    (tmp_path / "data.jsonl").write_text('{"task_id": 2, "text": " "}\n')
    assert _import(tmp_path / "data.csv") == 1
    assert _import(tmp_path / "data.jsonl") == 1
    out = capsys.readouterr().out
    assert "data.csv.failed.jsonl" in out
    assert [f["task_id"] for f in _failures(tmp_path / "data.csv.failed.jsonl")] == [1]
    assert [f["task_id"] for f in _failures(tmp_path / "data.jsonl.failed.jsonl")] == [2]
    assert not (tmp_path / "data.failed.jsonl").exists()


def test_failures_file_holds_reimportable_rows(webhook, tmp_path, capsys):
    source = tmp_path / "tasks.csv"
    source.write_text(
        "task_id,text,key\n"
        "12a,bad id,k1\n"
        " -1 ,negative,\n"
        "7,,k3\n"
        "8,fine,k4\n"
        "9,x,y,z\n"  # unreadable: on stderr, and first in the failures file
    )
    assert _import(source) == 1
    capsys.readouterr()
    failed_path = tmp_path / "tasks.csv.failed.jsonl"
    unreadable, *failures = _failures(failed_path)
    assert unreadable["raw"] == "9,x,y,z"
    assert [(f["task_id"], f["text"], f["key"]) for f in failures] == [
        ("12a", "bad id", "k1"),
        (-1, "negative", None),
        (7, "", "k3"),
    ]
    errors = [f["error"] for f in failures]
    assert errors[0] == "InvalidInputError: task_id: must be a positive int, got '12a'"
    assert errors[1] == "InvalidInputError: task_id: must be a positive int, got -1"
    assert errors[2].startswith("InvalidInputError: text:")

    # The user fixes the rows in place (the error field stays) and imports the file.
    fixed = [
        {**failures[0], "task_id": 12},
        {**failures[1], "task_id": 1},
        {**failures[2], "text": "now with text"},
    ]
    failed_path.write_text("".join(json.dumps(f) + "\n" for f in fixed))
    assert _import(failed_path) == 0
    capsys.readouterr()
    created = sorted((r.task_id, r.text) for r in webhook.portal.ledger.created)
    assert created == [(1, "negative"), (7, "now with text"), (8, "fine"), (12, "bad id")]
    assert not (tmp_path / "tasks.csv.failed.jsonl.failed.jsonl").exists()


def test_the_failures_file_must_not_be_the_input(webhook, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"task_id": 1, "text": ""}\n')
    assert _import(source, "--failures", str(source)) == 2
    assert "error: failures: must not be the file being imported" in capsys.readouterr().err
    assert source.read_text() == '{"task_id": 1, "text": ""}\n'


def test_scale_parses_positive_numbers(webhook, capsys):
    assert main(["add", "1", "x", "--scale", "1e2"]) == 0
    assert json.loads(capsys.readouterr().out)["taskId"] == 1


def test_import_summary_bound_counts_the_operating_budget(make_fake_portal, tmp_path, capsys):
    # 2 s per add: a batch of 50 costs 100 s of the 480 s budget, so about five
    # batches fit in each window; the bound must count the windows, not only
    # the request bucket (where 13 requests would fit in the burst).
    running = make_fake_portal(scale=400, default_cost=2.0, cost_jitter=0.0)
    source = tmp_path / "results.jsonl"
    rows = [json.dumps({"task_id": 1 + i % 5, "text": f"row {i}"}) for i in range(601)]
    source.write_text("\n".join(rows) + "\n")
    args = ["import", str(source), "--webhook", running.webhook_url, "--scale", "400", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    bound_line = next(line for line in out.splitlines() if "bound" in line)
    assert "ratio" in bound_line
    bound = float(bound_line.split("│")[2].split()[0])
    window = running.portal.config.effective_window
    assert bound >= 2 * window


def test_import_row_with_lone_surrogate_is_written_to_failures(webhook, tmp_path, capsys):
    # A JSONL escape "\ud800" decodes to a lone surrogate, which UTF-8 cannot
    # encode: writing the failures file used to abort the command (exit 2, a raw
    # codec message, no summary) after the good rows were created.
    source = tmp_path / "rows.jsonl"
    source.write_text(
        '{"task_id": 1, "text": "ok one"}\n'
        '{"task_id": 1, "text": "\\ud800"}\n'
        '{"task_id": 1, "text": "ok two"}\n',
        encoding="utf-8",
    )
    code = _import(source)
    _out, err = capsys.readouterr()
    assert code == 1, err
    assert webhook.portal.stats().results_created == 2
    failures = _failures(tmp_path / "rows.jsonl.failed.jsonl")
    assert [(f["task_id"], f["text"]) for f in failures] == [(1, "\ud800")]
    assert "surrogate" in failures[0]["error"]
