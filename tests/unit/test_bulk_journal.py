"""The journal's binding, its refusals of bad files, and ids SQLite cannot hold."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from bulk_fakes import FakePort

from bitrix_results._bulk.journal import MAX_ID, Journal
from bitrix_results.bulk import bulk_add
from bitrix_results.errors import BulkAbortedError, JournalError
from bitrix_results.models import NewResult

ITEMS = [NewResult(1 + i % 3, f"row {i}") for i in range(7)]


async def test_a_resumed_journal_reports_earlier_items_apart(tmp_path: Path) -> None:
    port = FakePort()
    journal = tmp_path / "job.journal"
    first = await bulk_add(port, ITEMS[:4], journal=journal)
    assert (first.created, first.created_earlier) == (4, 0)
    sent = sum(port.requests.values())
    second = await bulk_add(port, ITEMS, journal=journal)
    # All seven are created; four of them by the first run, nothing sent for those.
    assert (second.created, second.created_earlier) == (7, 4)
    assert len(port.all_results()) == 7
    assert port.requests["add batch"] + port.requests["add"] - sent <= 3


@pytest.mark.parametrize(
    ("binding", "field"),
    [(("other.test", "credential-1"), "portal"), (("portal.test", "credential-2"), "credential")],
)
async def test_a_journal_of_another_portal_or_credential_is_refused(
    tmp_path: Path, binding: tuple[str, str], field: str
) -> None:
    journal = tmp_path / "job.journal"
    await bulk_add(FakePort(), ITEMS, journal=str(journal))
    other = FakePort(binding=binding)
    with pytest.raises(JournalError) as caught:
        await bulk_add(other, ITEMS, journal=str(journal))
    assert caught.value.field == field
    assert str(journal) in str(caught.value)
    # Nothing was sent to the other portal, and no credential fingerprint is shown.
    assert other.requests == {}
    assert "credential-" not in str(caught.value)
    # The file holds a one-way tag, not the credential's fingerprint.
    assert b"credential-1" not in journal.read_bytes()


async def test_a_journal_of_another_input_is_refused_with_the_field(tmp_path: Path) -> None:
    port = FakePort()
    journal = tmp_path / "job.journal"
    await bulk_add(port, ITEMS, journal=journal)
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, [NewResult(9, "other"), *ITEMS[1:]], journal=journal)
    assert isinstance(caught.value.cause, JournalError)
    assert caught.value.cause.field == "input"
    assert port.tasks[9] == []


async def test_a_failed_item_keeps_its_fingerprint(tmp_path: Path) -> None:
    port = FakePort()
    port.forbidden = {2}
    journal = tmp_path / "job.journal"
    report = await bulk_add(port, ITEMS[:3], journal=journal, batch=False)
    assert report.failed == 1
    # Another item in the failed one's place is another input.
    with pytest.raises(BulkAbortedError) as caught:
        await bulk_add(port, [ITEMS[0], NewResult(5, "changed"), ITEMS[2]], journal=journal)
    assert isinstance(caught.value.cause, JournalError)
    # The same input resumes: the failed item is tried again.
    port.forbidden = set()
    again = await bulk_add(port, ITEMS[:3], journal=journal)
    assert (again.created, again.created_earlier) == (3, 2)


async def test_an_emptied_journal_is_refused_not_taken_for_a_new_job(tmp_path: Path) -> None:
    port = FakePort()
    journal = tmp_path / "job.journal"
    await bulk_add(port, ITEMS, journal=journal)
    journal.write_bytes(b"")
    with pytest.raises(JournalError, match="empty") as caught:
        await bulk_add(port, ITEMS, journal=journal)
    assert caught.value.path == str(journal)
    assert len(port.all_results()) == len(ITEMS)


@pytest.mark.parametrize(
    "kind", ["directory", "not sqlite", "other sqlite", "no such dir", "parent is a file"]
)
def test_bad_journal_paths_are_a_journal_error_naming_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "job.journal"
    if kind == "directory":
        path.mkdir()
    elif kind == "not sqlite":
        path.write_bytes(b"task_id,text\n1,Done\n" * 100)
    elif kind == "other sqlite":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE notes (x)")
        db.commit()
        db.close()
    elif kind == "no such dir":
        path = tmp_path / "missing" / "job.journal"
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "job.journal"
    with pytest.raises(JournalError) as caught:
        Journal(path)
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value.__cause__, sqlite3.Error)


def test_an_unwritable_place_is_a_journal_error(tmp_path: Path) -> None:
    # A mode-0500 directory stops everyone but root (CI runs as root); /proc
    # refuses new files to root too, so the test means the same for both.
    if os.geteuid() == 0:
        place = Path("/proc")
    else:
        place = tmp_path / "locked"
        place.mkdir()
        place.chmod(0o500)
    try:
        with pytest.raises(JournalError, match="cannot be created") as caught:
            Journal(place / "job.journal")
        assert str(place / "job.journal") in str(caught.value)
    finally:
        if place != Path("/proc"):
            place.chmod(0o700)


def test_a_journal_of_another_job_names_the_field(tmp_path: Path) -> None:
    Journal(tmp_path / "j", "job-a").close()
    with pytest.raises(JournalError) as caught:
        Journal(tmp_path / "j", "job-b")
    assert caught.value.field == "job_id"


async def test_a_result_id_past_64_bits_does_not_stop_the_job(tmp_path: Path) -> None:
    port = FakePort()
    port.next_id = 2**64
    journal = tmp_path / "job.journal"
    report = await bulk_add(port, ITEMS[:3], journal=journal)
    assert report.created == 3
    assert [o.result.id for o in report.outcomes if o.result] == [2**64, 2**64 + 1, 2**64 + 2]
    # The journal keeps the result whole; a resumed run reports it as it was.
    again = await bulk_add(port, ITEMS[:3], journal=journal)
    assert again.created_earlier == 3
    assert [o.result.id for o in again.outcomes if o.result] == [2**64, 2**64 + 1, 2**64 + 2]
    reopened = Journal(journal)
    try:
        assert reopened.max_result_id() <= MAX_ID
    finally:
        reopened.close()


async def test_the_journal_option_must_be_a_path() -> None:
    with pytest.raises(TypeError, match="journal"):
        await bulk_add(FakePort(), ITEMS, journal=3)  # type: ignore[arg-type]


def test_a_file_system_without_hard_links_still_gets_a_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    journal = Journal(tmp_path / "job.journal", "job-a", ("portal.test", "c"))
    journal.close()
    reopened = Journal(tmp_path / "job.journal", "job-a", ("portal.test", "c"))
    reopened.close()
    assert reopened.job_id == "job-a"
    # Only the journal is left: no temporary file.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("job.journal")] == []


async def test_the_verify_option_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="verify"):
        await bulk_add(FakePort(), ITEMS, verify="no")  # type: ignore[typeddict-item]
