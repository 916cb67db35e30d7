"""Reading and writing record files: JSONL, one Parquet file, or a directory of Parquet parts.

The format is chosen by the path: ``*.jsonl`` / ``*.json`` is JSON Lines, ``*.parquet`` is one Parquet
file, anything else (an existing directory, or a path without a suffix) is a directory of Parquet parts.

Writers commit in small chunks (a flushed JSONL batch, or one Parquet part renamed into place), so a run
killed at any point keeps everything it had written and a re-run can skip the ids already there.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Self

import pyarrow as pa
import pyarrow.parquet as pq

from longcot import records
from longcot.errors import InputError

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}


def file_format(path: str | Path) -> str:
    """``jsonl``, ``parquet`` (one file) or ``parquet_dir``."""
    p = Path(path)
    if p.suffix in JSONL_SUFFIXES:
        return "jsonl"
    if p.suffix == ".parquet":
        return "parquet"
    return "parquet_dir"


@dataclass
class BadLine:
    """An input line or row that cannot be read (not JSON, not UTF-8, a field of the wrong type); it becomes
    a rejected row with its text (``text``) or its values (``row``), and the read goes on."""

    path: str
    line: int
    reason: str
    text: str
    row: dict | None = None


def read_raw(path: str | Path) -> Iterator[tuple[int, dict] | BadLine]:
    """Yield ``(line_number, row)`` for each row of a JSONL or Parquet input, or ``BadLine`` for a bad line.

    Raises ``InputError`` (naming the file) when the file is missing or unreadable as a whole.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", str(p))
    fmt = file_format(p)
    if fmt == "jsonl":
        try:
            handle = p.open("rb")
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", str(p)) from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield BadLine(str(p), number, f"not UTF-8 text (byte {exc.start + 1}: {exc.reason})",
                                  raw[:500].decode("utf-8", errors="replace"))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield BadLine(str(p), number, f"malformed JSON: {exc.msg} (column {exc.colno})", line[:500])
                    continue
                except RecursionError:
                    yield BadLine(str(p), number, "malformed JSON: nested too deeply", line[:500])
                    continue
                if not isinstance(row, dict):
                    yield BadLine(str(p), number, f"expected a JSON object, got {type(row).__name__}", line[:500])
                    continue
                yield number, row
        return
    # a directory's hidden files are no parts: a killed writer's temporary (``.tmp-N.parquet``) stays unread
    files = sorted(f for f in p.glob("*.parquet") if not f.name.startswith(".")) if p.is_dir() else [p]
    if p.is_dir() and not files:
        raise InputError("directory holds no *.parquet files", str(p))
    number = 0
    for f in files:
        try:
            table = pq.read_table(f)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"not a readable Parquet file: {exc}", str(f)) from exc
        for row in table.to_pylist():
            number += 1
            yield number, row


def read_records(path: str | Path, rename: dict[str, str] | None = None) -> Iterator[dict | BadLine]:
    """Yield full records from any trace file longcot reads: a longcot record file, or any JSONL/Parquet with
    ``problem`` / ``response`` / ... columns (``rename`` maps other column names to record fields). Columns
    outside the record schema are kept in ``metadata``; rows without ids get stable ones. A line or row that
    cannot be read (not JSON, not UTF-8, a field of the wrong type) comes as ``BadLine``, with its reason."""
    source = f"file:{Path(path).name}"
    seen: dict[str, int] = {}
    for item in read_raw(path):
        if isinstance(item, BadLine):
            yield item
            continue
        number, row = item
        if rename:
            row = {rename.get(k, k): v for k, v in row.items()}
        try:
            yield records.from_row(row, source=source, seen=seen, line=number)
        except records.RowError as exc:
            yield BadLine(str(path), number, str(exc), "", row=row)


def good_records(path: str | Path) -> Iterator[dict]:
    """The records of ``read_records``, its bad lines skipped, read lazily."""
    return (r for r in read_records(path) if not isinstance(r, BadLine))


def load_records(path: str | Path) -> list[dict]:
    """All good records of a file (bad lines skipped); for small files and tests."""
    return list(good_records(path))


def bad_line_record(bad: BadLine, stage: str) -> dict:
    """A rejected-file entry for a bad input line or row, keeping its text or values so nothing is lost."""
    return {
        "stage": stage,
        "reason": f"{bad.path}:{bad.line}: {bad.reason}",
        "record": {"raw_row": bad.row} if bad.row is not None else {"raw_line": bad.text},
    }


class _Closing:
    """``with writer:`` closes the writer on leaving the block."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordWriter(_Closing):
    """Append records to ``path`` in committed chunks; safe to kill at any point.

    - JSONL: each ``write`` appends its rows and fsyncs. On open, a partial last line left by a kill
      is cut off, so the file always holds whole records.
    - Parquet directory: each ``write`` becomes ``part-NNNNN.parquet``, written to a temporary name and
      renamed into place, so a part is either whole or absent.
    - One Parquet file: buffered and written atomically on ``close`` (use a directory for resumable output).
    """

    def __init__(self, path: str | Path, *, append: bool = True):
        self.path = Path(path)
        self.format = file_format(self.path)
        self._buffer: list[dict] = []
        self.count = 0
        if self.format == "jsonl":
            self._handle = _open_jsonl(self.path, append)
        elif self.format == "parquet_dir":
            self.path.mkdir(parents=True, exist_ok=True)
            if not append:
                for old in self.path.glob("part-*.parquet"):
                    old.unlink()
            for tmp in self.path.glob(".tmp-*"):
                tmp.unlink()
            existing = sorted(self.path.glob("part-*.parquet"))
            self._next_part = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append and self.path.exists():
                self._buffer = load_records(self.path)

    def write(self, rows: Iterable[dict]) -> None:
        rows = [records.conform(r) for r in rows]
        if not rows:
            return
        self.count += len(rows)
        if self.format == "jsonl":
            self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        elif self.format == "parquet_dir":
            final = self.path / f"part-{self._next_part:05d}.parquet"
            tmp = self.path / f".tmp-{self._next_part:05d}.parquet"
            pq.write_table(records.to_table(rows), tmp)
            os.replace(tmp, final)
            self._next_part += 1
        else:
            self._buffer.extend(rows)

    def write_stream(self, rows: Iterable[dict], chunk: int = 256) -> None:
        """``write`` the rows of an iterator ``chunk`` at a time: a long input is never held whole, and a kill
        loses at most one chunk."""
        rows = iter(rows)
        while batch := list(itertools.islice(rows, chunk)):
            self.write(batch)

    def close(self) -> None:
        if self.format == "jsonl":
            self._handle.close()
        elif self.format == "parquet":
            tmp = self.path.with_name(f".tmp-{self.path.name}")
            pq.write_table(records.to_table(self._buffer), tmp)
            os.replace(tmp, self.path)


class RejectedWriter(_Closing):
    """Rows a stage could not process, one JSON object per line: ``{stage, reason, record}``. The file is written
    fresh: what it holds is what this writer rejected."""

    def __init__(self, path: str | Path):
        self._handle = _open_jsonl(Path(path), append=False)
        self.count = 0

    def reject(self, stage: str, reason: str, record: dict | None) -> None:
        self.write_entry({"stage": stage, "reason": reason, "record": record})

    def write_entry(self, entry: dict) -> None:
        self._handle.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        self.count += 1

    def readable(self, items: Iterable[dict | BadLine], stage: str) -> Iterator[dict]:
        """The rows of a reader's ``items``, each ``BadLine`` among them rejected on the way (``bad_line_record``)."""
        for item in items:
            if isinstance(item, BadLine):
                self.write_entry(bad_line_record(item, stage))
            else:
                yield item

    def close(self) -> None:
        self._handle.close()


def write_records(path: str | Path, rows: Iterable[dict]) -> int:
    """Write ``rows`` to ``path``, replacing what was there. Returns the count."""
    with RecordWriter(path, append=False) as writer:
        writer.write(list(rows))
        return writer.count


def existing_ids(path: str | Path) -> set[str]:
    """Ids already written to a record file or directory (empty when it does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return set()
    fmt = file_format(p)
    if fmt == "jsonl":
        _cut_partial_last_line(p)
        with p.open(encoding="utf-8") as handle:
            return {json.loads(line)["id"] for line in handle if line.strip()}
    files = sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]
    return {i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


def _open_jsonl(path: Path, append: bool):
    """``path`` opened to append whole lines (a partial last line cut off), or to write afresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if append and path.exists():
        _cut_partial_last_line(path)
    return path.open("a" if append else "w", encoding="utf-8")


def _cut_partial_last_line(path: Path) -> None:
    """Drop a trailing line without its newline: the half-written tail of a killed run."""
    if path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            keep = view.rfind(b"\n") + 1  # 0 when there is no whole line at all
            whole = keep == len(view)
        if not whole:
            handle.truncate(keep)
