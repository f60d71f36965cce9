"""Reading import files: JSONL or CSV rows, lazily, with unreadable rows kept aside."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidInputError
from ..models import NewResult

__all__ = ["TASK_ID_NAMES", "Rows", "os_reason"]

# An integer as a CSV cell or a JSON string holds it: ASCII digits only ("²" is a
# digit to str.isdigit but not to int).
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
#: The task id's column: ``task_id``, or ``taskId`` as ``export`` and the portal write it,
#: so an export imports unchanged.
TASK_ID_NAMES = ("task_id", "taskId")


class Rows:
    """Items read lazily from a JSONL or CSV file (``task_id,text[,key]``).

    Both are read as UTF-8, with or without the byte-order mark Excel writes.
    Rows that cannot be read at all (not JSON, not an object, a CSV row with
    more or fewer fields than the header) are kept aside with their line number
    and text and counted as failures; they are never silently dropped or
    truncated. A file that is not UTF-8 text, or not CSV at all, is an error for
    the whole file, found by :meth:`count` before anything is sent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: ``(line, reason, raw text)`` of each row that could not be read.
        self.unreadable: list[tuple[int, str, str]] = []
        self.csv = path.suffix.lower() == ".csv"

    def count(self) -> int:
        """The number of readable rows; reads the whole file, so it finds file errors."""
        return sum(1 for _, row, _ in self._records() if not isinstance(row, str))

    def _records(self) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
        """``(line, row, raw)`` for every non-blank row; ``row`` is the reason if unreadable."""
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                yield from self._csv(fh) if self.csv else self._jsonl(fh)
        except UnicodeDecodeError:
            raise InvalidInputError(
                "file", f"{self.path} is not UTF-8 text ({_first_bad_byte(self.path)})"
            ) from None
        except OSError as exc:
            raise InvalidInputError("file", f"cannot read {self.path}: {os_reason(exc)}") from None

    def _jsonl(self, fh: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            raw = line.rstrip("\r\n")
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield number, f"not JSON ({exc})", raw
                continue
            if isinstance(row, dict):
                yield number, row, raw
            else:
                reason = "a row must be a JSON object with task_id and text"
                yield number, f"{reason}, got {type(row).__name__}", raw

    def _csv(self, fh: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            names = [name.strip() for name in header or ()]
            # ``taskId`` (an export's header) names the same column as ``task_id``.
            names = ["task_id" if name == "taskId" else name for name in names]
            missing = [name for name in ("task_id", "text") if name not in names]
            if missing:
                raise InvalidInputError(
                    "file", f"CSV header must name task_id (or taskId) and text (missing {missing})"
                )
            if len(set(names)) != len(names):
                raise InvalidInputError("file", f"CSV header names a column twice: {names}")
            while True:
                # A quoted field may span lines: a row starts after the previous one.
                number = reader.line_num + 1
                fields = next(reader, None)
                if fields is None:
                    return
                if not any(field.strip() for field in fields):
                    continue  # a blank line, or a row of empty cells
                if len(fields) != len(names):
                    raw = _csv_line(fields)
                    yield (
                        number,
                        f"{len(fields)} fields where the header has {len(names)} "
                        f"({', '.join(names)})",
                        raw,
                    )
                    continue
                yield number, dict(zip(names, fields, strict=True)), ""
        except csv.Error as exc:
            raise InvalidInputError(
                "file", f"{self.path} line {reader.line_num} is not valid CSV: {exc}"
            ) from None

    def __iter__(self) -> Iterator[NewResult]:
        self.unreadable = []
        for number, row, raw in self._records():
            if isinstance(row, str):
                self.unreadable.append((number, row, raw))
                continue
            task_id = _task_id(row)
            if isinstance(task_id, str) and _INT.fullmatch(task_id):
                task_id = int(task_id)
            key = row.get("key")
            if key == "":
                key = None
            elif isinstance(key, int) and not isinstance(key, bool):
                key = str(key)
            # Wrong types go through as they are: the bulk checks name the field.
            yield NewResult(task_id, row.get("text"), key)  # type: ignore[arg-type]


def _task_id(row: dict[str, Any]) -> object:
    """``task_id``, else ``taskId`` (both present: ``task_id``, the import's own name)."""
    for name in TASK_ID_NAMES:
        if name in row:
            return row[name]
    return None


def _csv_line(fields: list[str]) -> str:
    """A CSV row back as one line of CSV text, for the failures file."""
    out: list[str] = []

    class _Sink:
        def write(self, text: str) -> int:
            out.append(text)
            return len(text)

    csv.writer(_Sink(), lineterminator="").writerow(fields)
    return "".join(out)


def _first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8, as ``line N: byte 0xE9``."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: byte {raw[exc.start]:#04x}; save it as UTF-8"
    return "save it as UTF-8"


def os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
