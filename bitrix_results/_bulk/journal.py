"""The bulk-import journal: a SQLite file that lets a killed import resume exactly.

What it records, per input position:

- ``pending``: the item is about to be sent. For a batch we also keep the
  watermark (the largest result id the job had seen before sending), so a resumed
  run can tell the batch's results from older ones when it reconciles.
- ``created``: the portal created it; we keep the result id and the result.

Failed items are not recorded: a failure guarantees nothing was created, so a
resumed run simply tries them again. Rows are committed before a request is sent
and after its answer, so SIGKILL at any instant leaves a journal that is true.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Journal", "JournalEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    text_digest TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'created')),
    batched INTEGER NOT NULL DEFAULT 0,
    watermark INTEGER NOT NULL DEFAULT 0,
    result_id INTEGER,
    result BLOB
);
CREATE INDEX IF NOT EXISTS items_by_task ON items (task_id, result_id);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    status: str
    batched: bool
    watermark: int
    text_digest: str
    result: bytes | None


class Journal:
    """One import's journal. ``job_id`` is stored on first use and read back on resume,
    so idempotency keys derived from it are the same in every run of the job."""

    def __init__(self, path: str | Path, job_id: str | None = None) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # WAL with synchronous=NORMAL: a committed row survives SIGKILL of this
        # process (only an OS crash could lose the last commits).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'job_id'").fetchone()
        if row is not None:
            if job_id is not None and job_id != row[0]:
                raise ValueError(f"journal: {self.path} belongs to job {row[0]!r}, not {job_id!r}")
            self.job_id: str = row[0]
        else:
            self.job_id = job_id or uuid.uuid4().hex
            self._db.execute("INSERT INTO meta VALUES ('job_id', ?)", (self.job_id,))

    def lookup(self, index: int) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT status, batched, watermark, text_digest, result FROM items WHERE idx = ?",
            (index,),
        ).fetchone()
        if row is None:
            return None
        return JournalEntry(row[0], bool(row[1]), row[2], row[3], row[4])

    def mark_pending(
        self, rows: list[tuple[int, int, str]], *, batched: bool, watermark: int
    ) -> None:
        """Record items (index, task_id, text digest) as about to be sent."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items (idx, task_id, text_digest, status, batched,"
                " watermark) VALUES (?, ?, ?, 'pending', ?, ?)",
                [(i, t, d, int(batched), watermark) for i, t, d in rows],
            )

    def mark_created(self, rows: list[tuple[int, int, str, int, bytes]]) -> None:
        """Record items (index, task_id, text digest, result id, result JSON) as created."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items (idx, task_id, text_digest, status, result_id,"
                " result) VALUES (?, ?, ?, 'created', ?, ?)",
                rows,
            )

    def forget(self, indexes: list[int]) -> None:
        """Drop pending rows of items that failed: nothing of theirs exists."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM items WHERE idx = ? AND status = 'pending'", [(i,) for i in indexes]
            )

    def max_result_id(self) -> int:
        """The largest result id this job created: a watermark for a resumed run."""
        row = self._db.execute("SELECT MAX(result_id) FROM items WHERE status = 'created'")
        value = row.fetchone()[0]
        return int(value) if value is not None else 0

    def claimed_ids(self, task_id: int, above: int) -> set[int]:
        """Result ids this job already owns on a task, above a watermark."""
        rows = self._db.execute(
            "SELECT result_id FROM items WHERE task_id = ? AND status = 'created'"
            " AND result_id > ?",
            (task_id, above),
        )
        return {r[0] for r in rows}

    def close(self) -> None:
        self._db.close()
