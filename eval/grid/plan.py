"""Which cells a grid has: suites x retrievers x selectors x k x seeds.

- k = 0 is zero-shot: no retriever or selector is involved, so it runs once per suite.
- ``random`` runs once per seed (``RandomSelector(seed)``); the other selectors are
  deterministic and run once (their rows carry ``seed: null``).
- Classification suites also get two rows that use no LM: ``majority`` (the most
  frequent pool label, once per suite) and ``knn-vote`` (the majority label of each
  query's top-k most similar demos, per retriever and k). Much of ICL's gain can be
  label copying; these rows show how much.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eval.grid.suite_run import SuiteRun

ZERO_SHOT, MAJORITY, KNN_VOTE = "zero-shot", "majority", "knn-vote"
NO_RETRIEVER = "none"
KEY_FIELDS = ("suite", "retriever", "selector", "k", "seed", "n_test", "pool_size",
              "calibrate", "normalize", "format", "order")
DEFAULT_ORDER = "similar-last"  # the builder's default placement of the demos
# Rows written before a key field existed hold its default (runs before chat prompts: text;
# runs before the order dimension: the builder's default order).
KEY_DEFAULTS = {"format": "text", "order": DEFAULT_ORDER}


@dataclass(frozen=True)
class Cell:
    """One point of the grid; its fields (all of them) are the resume key."""

    suite: str
    retriever: str
    selector: str
    k: int | None
    seed: int | None
    n_test: int
    pool_size: int
    calibrate: bool
    normalize: str | None
    format: str = "text"  # the prompt layout: "text" or "chat" (ricl.formats)
    order: str = DEFAULT_ORDER  # where the demos sit (ricl.placement.ORDERS)

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    @property
    def uses_lm(self) -> bool:
        return self.selector not in (MAJORITY, KNN_VOTE)

    @property
    def method(self) -> str:
        suffix = " (chat)" if self.format == "chat" else ""
        if self.order != DEFAULT_ORDER:
            suffix += f" ({self.order})"
        if self.retriever == NO_RETRIEVER:
            return self.selector + suffix
        return f"{self.retriever} + {self.selector}{suffix}"

    @property
    def name(self) -> str:
        """A file-system-safe stem, unique per key."""
        parts = [self.suite, self.retriever, self.selector,
                 "k-" if self.k is None else f"k{self.k}",
                 "s-" if self.seed is None else f"s{self.seed}",
                 f"n{self.n_test}", f"pool{self.pool_size}"]
        if self.calibrate:
            parts.append("cal")
        if self.normalize not in (None, "sum"):
            parts.append(self.normalize)
        if self.format != "text":
            parts.append(self.format)
        if self.order != DEFAULT_ORDER:
            parts.append(self.order)
        return "__".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(part)) for part in parts)


def row_key(row: Mapping[str, Any]) -> tuple:
    """The key of the cell a result row records (see ``Cell.key``)."""
    return tuple(row.get(name, KEY_DEFAULTS.get(name)) for name in KEY_FIELDS)


def plan_cells(runs: Sequence[SuiteRun], retrievers: Sequence[str], selectors: Sequence[str],
               ks: Sequence[int], seeds: Sequence[int], n_test: int, calibrate: bool,
               normalize: str, formats: Sequence[str] = ("text",),
               orders: Sequence[str] = (DEFAULT_ORDER,)) -> list[Cell]:
    """Every cell, in the order they run: suite by suite, retriever by retriever; each
    LM cell once per prompt format, and each LM cell with demos once per demo order
    (cells without the LM once)."""
    cells = []
    for run in runs:
        def cell(retriever, selector, k, seed, lm=True):
            uses_calibration = calibrate and lm and run.task == "classification"
            placements = orders if k else (DEFAULT_ORDER,)
            return [Cell(run.name, retriever, selector, k, seed, n_test, run.pool_size,
                         uses_calibration, normalize, layout, order)
                    for layout in formats for order in placements] if lm else \
                [Cell(run.name, retriever, selector, k, seed, n_test, run.pool_size, False, None)]

        classification = run.task == "classification"
        if classification:
            cells.extend(cell(NO_RETRIEVER, MAJORITY, None, None, lm=False))
        if 0 in ks:
            cells.extend(cell(NO_RETRIEVER, ZERO_SHOT, 0, None))
        for retriever in retrievers:
            for k in (k for k in ks if k > 0):
                for selector in selectors:
                    for seed in (seeds if selector == "random" else [None]):
                        cells.extend(cell(retriever, selector, k, seed))
                if classification:
                    cells.extend(cell(retriever, KNN_VOTE, k, None, lm=False))
    return cells
