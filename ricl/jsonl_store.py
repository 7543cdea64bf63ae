"""A resumable JSONL store: whole lines appended durably, read back after a kill.

Long jobs (an evaluation grid, a study, LM feedback scoring) write one JSON object
per finished unit of work, so a killed job loses at most the line in flight and a
rerun skips what is done. A line counts once its newline is on disk: a kill can
only tear the last line, which readers skip and the next append cuts off. A broken
line anywhere else means the file was damaged some other way, and is an error.
One writer per file.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from ricl.errors import DataError
from ricl.io import atomic_write_text

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (gzipped when it ends in ``.gz``), ``[]`` when there is
    no file; a torn last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    return parse_jsonl(gzip.decompress(data) if path.suffix == ".gz" else data, path)[0]


def parse_jsonl(data: bytes, path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of JSONL ``data`` and the byte length of its whole lines (where a
    writer resumes). ``path`` names the file in messages."""
    rows: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if number == len(lines):  # the text after the last newline
            if raw.strip():
                log.warning("%s: skipping a torn last line (%d bytes, no newline).", path, len(raw))
            break
        if raw.strip():
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                value = None
            if not isinstance(value, dict):
                raise DataError(f"{path}:{number} is not a JSON object: the file is damaged. "
                                "Restore it, or delete it to start over.")
            rows.append(value)
        good += len(raw) + 1
    return rows, good


class JsonlStore:
    """An append-only JSONL file of rows, resumable after a kill.

    ``key(row)`` names the unit of work a row records; ``get`` and ``in`` say whether
    it is done (the last row of a key wins). ``ensure_ascii`` is ``json.dumps``'s, so
    a file keeps the escaping it was started with.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], Hashable] | None = None,
                 *, ensure_ascii: bool = False):
        self.path = Path(path)
        self._key = key
        self._ensure_ascii = ensure_ascii
        rows, self._good = (parse_jsonl(self.path.read_bytes(), self.path)
                            if self.path.is_file() else ([], 0))
        self.rows: list[dict[str, Any]] = []
        self._by_key: dict[Hashable, dict[str, Any]] = {}
        self._remember(rows)

    def get(self, key: Hashable) -> dict[str, Any] | None:
        return self._by_key.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def keys(self):
        """The keys that have a row (a live view: it grows with each append)."""
        return self._by_key.keys()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add whole lines, on disk (fsynced) before this returns."""
        rows = list(rows)
        if not rows:
            return
        data = "".join(self._line(row) for row in rows).encode("utf-8")
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            if handle.tell() != self._good:  # a torn last line: start on a fresh one
                handle.truncate(self._good)
                handle.seek(self._good)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if new:
            _fsync_dir(self.path.parent)
        self._good += len(data)
        self._remember(rows)

    def replace(self, row: dict[str, Any]) -> None:
        """Put ``row`` last in place of the rows of its key: appended when the key is
        new, else the file is rewritten atomically (so it never holds both)."""
        key = self._key(row)
        if key not in self._by_key:
            self.append([row])
            return
        rows = [r for r in self.rows if self._key(r) != key] + [row]
        text = "".join(self._line(r) for r in rows)
        atomic_write_text(self.path, text)
        self._good = len(text.encode("utf-8"))
        self.rows, self._by_key = [], {}
        self._remember(rows)

    def _line(self, row: dict[str, Any]) -> str:
        return json.dumps(row, ensure_ascii=self._ensure_ascii) + "\n"

    def _remember(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if self._key is not None:
            self._by_key.update((self._key(row), row) for row in rows)


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable too (not every file system can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["JsonlStore", "parse_jsonl", "read_jsonl"]
