"""A grid's directory on disk: ``results.jsonl`` (one row per cell) and
``predictions/<cell>.jsonl.gz`` (one line per test example).

A cell writes its predictions first (gzipped, atomically) and then its row (a
durable append to the ``ricl.jsonl_store``, or an atomic rewrite when the cell ran
before). A cell counts as finished only when both exist, so a grid that was
interrupted (or whose prediction file was deleted) recomputes exactly the missing
cells on the next run.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from eval.grid.plan import Cell, row_key
from ricl.io import atomic_write_bytes, claim_dir
from ricl.jsonl_store import JsonlStore

RESULTS = "results.jsonl"
PREDICTIONS = "predictions"


def predictions_file(cell: Cell) -> str:
    """Where a cell's predictions go, relative to the grid's directory (its row says so)."""
    return f"{PREDICTIONS}/{cell.name}.jsonl.gz"


GRID_KIND = "grid-run"  # the ricl.io marker of a grid's run directory


class GridStore:
    """A grid's run directory. It must be new, empty, or a grid run already (its marker
    says so): a user's own directory is refused before anything is written."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = claim_dir(out_dir, GRID_KIND)
        self._results = JsonlStore(self.out_dir / RESULTS, key=row_key)

    def finished(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's row if its predictions file exists too, else None (it must run)."""
        row = self._results.get(cell.key)
        if row is None or not row.get("predictions"):
            return None
        return row if (self.out_dir / row["predictions"]).is_file() else None

    def write(self, row: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        """Predictions first, then the row: a crash in between leaves a cell that reruns."""
        text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
        # Predictions are gzipped (mtime=0: the same cell gives the same bytes): a
        # published run's predictions stay small enough to commit beside its table.
        atomic_write_bytes(self.out_dir / row["predictions"],
                           gzip.compress(text.encode("utf-8"), mtime=0))
        self._results.replace(row)
