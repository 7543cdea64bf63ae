"""Exact duplicates and empty rows removed from a suite file's records."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.suites.files import _raw_rows
from eval.suites.model import Record, SuiteSpec
from eval.suites.registry import _spec
from ricl.text import normalize


def _as_record(row: Any, spec: SuiteSpec) -> Record:
    if isinstance(row, tuple):  # StaICC's (text, label index)
        text, label = row
        return {"text": text.strip(), "label": spec.labels[label]}
    return row


# Normalised text has no newline, so a key of several fields joined by this cannot
# span two candidates in :func:`_leaks`.
_JOIN = " || "


def _key(record: Record, fields: Sequence[str]) -> str:
    """The normalised inputs that de-duplication and the leak filter compare."""
    return _JOIN.join(normalize(record[name]) for name in fields)


@dataclass(frozen=True)
class _Deduplicated:
    rows: tuple[tuple[int, Record], ...]  # (original index, record)
    n_raw: int
    n_duplicates: int
    n_conflicting: int  # duplicates whose label differs from the kept copy
    n_empty: int


def _deduplicated(name: str, side: str = "main") -> _Deduplicated:
    """Rows with exact duplicates (case-insensitive, whitespace-normalised inputs)
    removed; the first copy in file order is kept. Rows with an empty input or, for
    multiple choice and open QA, no gold answer are dropped as empty."""
    return _deduplicate(name, side)


@functools.lru_cache(maxsize=None)
def _deduplicate(name: str, side: str) -> _Deduplicated:
    spec = _spec(name)
    raw = _raw_rows(name, side)
    label_of: dict[str, str] = {}
    rows, empty, conflicting = [], 0, 0
    for index, row in enumerate(raw):
        record = _as_record(row, spec)
        inputs = [normalize(record[f]) for f in spec.input_fields]
        key = _JOIN.join(inputs)
        if not all(inputs) or not record["label"]:
            empty += 1
        elif key in label_of:
            conflicting += label_of[key] != record["label"]
        else:
            label_of[key] = record["label"]
            rows.append((index, record))
    return _Deduplicated(rows=tuple(rows), n_raw=len(raw),
                         n_duplicates=len(raw) - empty - len(rows),
                         n_conflicting=conflicting, n_empty=empty)
