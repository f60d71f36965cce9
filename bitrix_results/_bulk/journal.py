"""The bulk-import journal: a SQLite file that lets a killed import resume exactly.

What it records, per input position:

- ``pending``: the item is about to be sent. For a batch we also keep the
  watermark (the largest result id the job had seen before sending), so a resumed
  run can tell the batch's results from older ones when it reconciles.
- ``created``: the portal created it; we keep the result id and the result.
- ``failed``: the portal refused it; nothing of it exists, and a resumed run
  tries it again. The row stays so the item's fingerprint is still checked.

Rows are committed before a request is sent and after its answer, so SIGKILL at
any instant leaves a journal that is true.

A journal is *bound* to what it speaks about (design §2.4): the portal (its
host and port), the credential (a one-way tag of the client's credential
fingerprint, never a secret) and the input (each item's fingerprint per
position). Resuming it against another portal, another credential or another
input is refused with :class:`~bitrix_results.errors.JournalError`, because the
journal's "created" rows would then be claims about results that do not exist.

A new journal is built beside its path and moved into place whole, so a file at
the path is always a complete journal: an existing file that is empty or not a
journal (a journal truncated or overwritten after a job ran) is refused rather
than silently taken for a new job, which would create everything again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError

__all__ = ["MAX_ID", "Binding", "Journal", "JournalEntry", "credential_tag"]

# Written in ``meta`` as 'format': a file without it is not a journal we can read.
_FORMAT = "bitrix_results-journal/2"
# SQLite INTEGER is 64-bit signed: a larger id (from a broken or hostile
# portal) is kept only inside the stored result, never in an INTEGER column.
MAX_ID = 2**63 - 1

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    idx INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    text_digest TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'created', 'failed')),
    batched INTEGER NOT NULL DEFAULT 0,
    watermark INTEGER NOT NULL DEFAULT 0,
    result_id INTEGER,
    result BLOB
);
CREATE INDEX items_by_task ON items (task_id, result_id);
"""


def credential_tag(credential: str) -> str:
    """A one-way tag of a credential fingerprint for the journal file.

    The fingerprint is already a hash of the credential (never the secret); the
    constant prefix makes the stored tag useless for matching any other hash of
    the same credential.
    """
    raw = "bitrix_results journal credential\x00" + credential
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Binding:
    """What a journal is bound to: the portal (host and port) and the credential tag."""

    portal: str
    credential: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    status: str
    batched: bool
    watermark: int
    text_digest: str
    result: bytes | None


class Journal:
    """One import's journal. ``job_id`` is stored on first use and read back on resume,
    so idempotency keys derived from it are the same in every run of the job.

    ``binding`` is the port's (portal, credential fingerprint): its tag is checked
    against the stored one (and stored in a new journal); None skips the check
    (reading a journal, not running a job with it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        job_id: str | None = None,
        binding: tuple[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        bound = None if binding is None else Binding(binding[0], credential_tag(binding[1]))
        if self.path.is_dir():
            raise JournalError(self.path, "is a directory, not a journal file")
        if not self.path.exists():
            self._create(job_id or uuid.uuid4().hex, bound)
        elif self.path.stat().st_size == 0:
            raise JournalError(
                self.path,
                "exists but is empty: a journal truncated after a job ran cannot be "
                "resumed, and starting over could create every item again; remove the "
                "file (or give a new path) to start a new job",
            )
        self._db = self._open()
        with self._errors("cannot be read"):
            meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT:
            self._db.close()
            raise JournalError(self.path, "is not a journal of this version of bitrix_results")
        if job_id is not None and job_id != meta["job_id"]:
            self._db.close()
            raise JournalError(
                self.path, f"belongs to job {meta['job_id']!r}, not {job_id!r}", field="job_id"
            )
        self.job_id: str = meta["job_id"]
        if bound is not None:
            self._check(meta, bound)

    # -- opening -------------------------------------------------------------------

    def _create(self, job_id: str, binding: Binding | None) -> None:
        """Build the journal beside its path and move it in whole (see the module doc)."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        meta = [("format", _FORMAT), ("job_id", job_id)]
        if binding is not None:
            meta += [("portal", binding.portal), ("credential", binding.credential)]
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.executescript(_SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            finally:
                db.close()
            # link, not rename: a journal another process created meanwhile is
            # kept (and opened below), never replaced.
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError:
                # A file system without hard links: move it in, unless one appeared.
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(self.path, f"cannot be created ({_reason(exc)})") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot be opened ({_reason(exc)})") from None
        try:
            # WAL with synchronous=NORMAL: a committed row survives SIGKILL of this
            # process (only an OS crash could lose the last commits).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            db.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise JournalError(self.path, "is not a journal (not an SQLite file)") from None
            raise JournalError(self.path, f"cannot be opened ({_reason(exc)})") from None
        if not {"meta", "items"} <= tables:
            db.close()
            raise JournalError(self.path, "is an SQLite file but not a journal of bitrix_results")
        return db

    def _check(self, meta: dict[str, str], binding: Binding) -> None:
        portal, credential = meta.get("portal"), meta.get("credential")
        if portal is None or credential is None:
            # Created without a binding (a tool reading journals): bind it now.
            with self._errors("cannot be written"):
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("portal", binding.portal), ("credential", binding.credential)],
                )
            return
        if portal != binding.portal:
            self._db.close()
            raise JournalError(
                self.path,
                f"was written for portal {portal}, not {binding.portal}: its created "
                "items are not on this portal",
                field="portal",
            )
        if credential != binding.credential:
            self._db.close()
            raise JournalError(
                self.path,
                "was written with another credential (webhook or OAuth application)",
                field="credential",
            )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn a SQLite failure (disk full, file locked, read-only) into a JournalError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"{what} ({_reason(exc)})") from None

    # -- rows ------------------------------------------------------------------------

    def lookup(self, index: int) -> JournalEntry | None:
        with self._errors("cannot be read"):
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
        with self._errors("cannot be written"), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items (idx, task_id, text_digest, status, batched,"
                " watermark) VALUES (?, ?, ?, 'pending', ?, ?)",
                [(i, t, d, int(batched), watermark) for i, t, d in rows],
            )

    def mark_created(self, rows: list[tuple[int, int, str, int, bytes]]) -> None:
        """Record items (index, task_id, text digest, result id, result JSON) as created."""
        with self._errors("cannot be written"), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items (idx, task_id, text_digest, status, result_id,"
                " result) VALUES (?, ?, ?, 'created', ?, ?)",
                # An id SQLite cannot hold stays in the stored result only.
                [(i, t, d, r if 0 < r <= MAX_ID else None, b) for i, t, d, r, b in rows],
            )

    def forget(self, indexes: list[int]) -> None:
        """Mark pending items failed: nothing of theirs exists (their fingerprints stay)."""
        with self._errors("cannot be written"), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE items SET status = 'failed', batched = 0, watermark = 0"
                " WHERE idx = ? AND status = 'pending'",
                [(i,) for i in indexes],
            )

    def max_result_id(self) -> int:
        """The largest result id this job created: a watermark for a resumed run."""
        with self._errors("cannot be read"):
            row = self._db.execute("SELECT MAX(result_id) FROM items WHERE status = 'created'")
            value = row.fetchone()[0]
        return int(value) if value is not None else 0

    def claimed_ids(self, task_id: int, above: int) -> set[int]:
        """Result ids this job already owns on a task, above a watermark."""
        with self._errors("cannot be read"):
            rows = self._db.execute(
                "SELECT result_id FROM items WHERE task_id = ? AND status = 'created'"
                " AND result_id > ?",
                (task_id, above),
            ).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self._db.close()


def _reason(exc: BaseException) -> str:
    """The cause in words, without the library's exception (it may carry paths only)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__
