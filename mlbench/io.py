"""Small file-writing helpers shared by every stage: atomic writes and append-safe CSV logs.

Results must never be half-written: a crash leaves either the old file or the new one, and a
resumable log (predictions, uploads) loses at most the row that was being written: its reader
(`read_csv_log`) trusts only complete, well-formed lines.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file + rename in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: Path, header: Sequence[str] | None,
                     rows: Iterable[Sequence[Any]]) -> None:
    """Write a whole CSV atomically (header optional: Vertex import files have none)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class CsvDraft:
    """A CSV written row by row to a temp file, renamed over `path` only when complete.

    For outputs rebuilt from scratch (prepare's manifest): memory stays flat however many rows,
    and a crash leaves the previous file (or none), never a partial one.
    """

    def __init__(self, path: Path, header: Sequence[str]):
        self.path, self.header = path, header
        self.tmp = path.with_name(f".{path.name}.draft")
        path.parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> CsvDraft:
        self._fh = self.tmp.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(self.header)
        return self

    def write(self, row: Sequence[Any]) -> None:
        self._writer.writerow(row)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._fh.close()
        if exc_type is None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


@dataclass
class CsvLog:
    """The rows of an append-only CSV log that can be trusted, and how many lines could not.

    `rows` are the parsed fields of each complete line (one record per line, ending in a
    newline, exactly as many fields as the header) with `lines` their raw bytes, in file order;
    `bad` counts the lines left out (a torn last line, a line garbled by a crash or a full
    disk); `header_ok` says whether the first line is the expected header.
    """

    rows: list[list[str]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    bad: int = 0
    header_ok: bool = True


def read_csv_log(path: Path, header: Sequence[str]) -> CsvLog:
    """Read a log written by `CsvAppender` trusting only complete, well-formed lines.

    A kill or a full disk can leave the last line cut at any byte: that line is never returned
    (it may even parse as a row with fewer, or shorter, fields). Each record must sit on one
    line; `CsvAppender` writes them so.
    """
    log = CsvLog()
    if not path.exists():
        return log
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()
        log.bad += 1
    for i, raw in enumerate(lines):
        try:
            text = raw.decode("utf-8")
            fields = next(csv.reader([text.rstrip("\r\n")], strict=True), [])
        except (UnicodeDecodeError, csv.Error):
            fields = None
        if i == 0:
            log.header_ok = fields == list(header)
            if not log.header_ok:
                log.bad += 1
            continue
        if fields is None or len(fields) != len(header):
            log.bad += 1
            continue
        log.rows.append(fields)
        log.lines.append(raw)
    if not lines:
        log.header_ok = False
    return log


def rewrite_csv_log(path: Path, header: Sequence[str], lines: Iterable[bytes]) -> None:
    """Replace a log atomically by its header and the given raw lines (kept byte for byte)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(header)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8") + b"".join(lines))


def one_line(text: str) -> str:
    """Text fit for one CSV record on one line (line breaks become spaces)."""
    return " ".join(text.splitlines())


class CsvAppender:
    """Append rows to a CSV log, flushing each row to disk, writing the header once.

    Used for resumable runs: on restart the complete rows already on disk are kept and a torn
    last line (from a kill mid-write) is cut off before appending.
    """

    def __init__(self, path: Path, header: Sequence[str]):
        self.path = path
        self.header = list(header)
        path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_torn_tail(path)
        new = not path.exists() or path.stat().st_size == 0
        self._fh = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        if new:
            self._writer.writerow(self.header)
            self._fh.flush()

    def write(self, row: Sequence[Any]) -> None:
        """Append one record on one line (line breaks inside a field become spaces), on disk
        before this returns."""
        self._writer.writerow([one_line(v) if isinstance(v, str) else v for v in row])
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: Path) -> None:
    """Drop a last line that has no newline: it was cut by a crash mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
