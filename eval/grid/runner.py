"""Running a grid: validate the arguments, plan the cells, skip the finished ones,
evaluate the rest and store each as it finishes (so an interrupted grid resumes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ricl import inference
from eval.grid.cells import GridState, run_cell
from eval.grid.plan import DEFAULT_ORDER, plan_cells
from eval.grid.store import GridStore
from eval.grid.suite_run import SuiteRun, load_suites, retriever_specs
from ricl.errors import ConfigError

log = logging.getLogger(__name__)


def run_grid(suites: Sequence[Any], retrievers: Sequence[Any] | Mapping[str, Any],
             selectors: Sequence[str], ks: Sequence[int], seeds: int | Sequence[int],
             n_test: int, out_dir: str | Path, lm: Any = None, calibrate: bool = False,
             progress: bool = True, *, pool_size: int | None = 5000, split_seed: int = 0,
             normalize: str = "sum", max_new_tokens: int = 16,
             dtype: str = "float32", format: str | Sequence[str] = "text",
             order: str | Sequence[str] = DEFAULT_ORDER) -> list[dict[str, Any]]:
    """Run (or resume) a grid and return one row per cell, in plan order.

    ``suites``: names for :func:`eval.suites.load_suite` (split with ``n_test``,
    ``pool_size`` and ``split_seed``) or loaded ``Suite`` objects (their first
    ``n_test`` test items are used). ``retrievers``: names ("bm25", "dense",
    "dense:chroma", a model directory) or a dict ``{name: spec or zero-argument
    factory}``. ``selectors``: selector names. ``seeds``: a count (``3`` means
    0, 1, 2) or a list; only ``random`` uses them. ``lm``: an ``ricl.lm.LM``; None
    loads the default ``TransformersLM`` (in ``dtype``) when the first LM cell runs.
    ``calibrate``: also report contextual calibration (classification only).
    ``format``: the prompt layout, "text" or "chat" (the LM's chat template), or both
    (a list): each LM cell then runs once per layout on the same indexed retrievers.
    ``order``: where the demos sit (``ricl.placement.ORDERS``; default similar-last, the
    most similar next to the query), or a list: each LM cell with demos once per order.

    Rows go to ``out_dir/results.jsonl`` and predictions to ``out_dir/predictions/``.
    """
    from ricl.formats import check_format
    from ricl.placement import check_order
    from ricl.selectors import SELECTORS

    if isinstance(suites, str) or hasattr(suites, "pool"):
        suites = [suites]
    selectors = [selectors] if isinstance(selectors, str) else list(dict.fromkeys(selectors))
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise ConfigError(f"unknown selector(s) {unknown}; choose from {sorted(SELECTORS)}.")
    ks = sorted({int(k) for k in ([ks] if isinstance(ks, int) else ks)})
    if not ks or ks[0] < 0:
        raise ConfigError(f"ks={ks}: give at least one k, each >= 0.")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise ConfigError(f"n_test={n_test!r}: must be a positive integer.")
    inference.check_normalize(normalize)
    seeds = _seed_list(seeds)
    specs = retriever_specs(retrievers)
    if not specs and any(k > 0 for k in ks):
        raise ConfigError("k > 0 needs at least one retriever.")

    orders = [order] if isinstance(order, str) else list(dict.fromkeys(order))
    for placement in orders:
        check_order(placement)

    store = GridStore(out_dir)
    runs = [SuiteRun(s, n_test, specs)
            for s in load_suites(suites, n_test, pool_size, split_seed)]
    formats = [format] if isinstance(format, str) else list(dict.fromkeys(format))
    cells = plan_cells(runs, list(specs), selectors, ks, seeds, n_test, calibrate, normalize,
                       [check_format(layout) for layout in formats], orders)
    todo = sum(store.finished(cell) is None for cell in cells)
    log.info("grid: %d cells, %d already finished in %s", len(cells), len(cells) - todo,
             store.out_dir)

    state = GridState(lm=lm, max_new_tokens=max_new_tokens, dtype=dtype)
    by_suite = {run.name: run for run in runs}
    rows = []
    from tqdm.auto import tqdm

    for cell in tqdm(cells, desc="grid cells", unit="cell", disable=not progress):
        done = store.finished(cell)
        if done is not None:
            rows.append(done)
            continue
        started = time.perf_counter()
        row, predictions = run_cell(cell, by_suite[cell.suite], state)
        row["seconds"] = round(time.perf_counter() - started, 3)
        if cell.uses_lm:
            from ricl.models import weights_dtype

            row["lm_dtype"] = weights_dtype(getattr(state.lm, "model", None))
        store.write(row, predictions)
        log.info("%s %s k=%s seed=%s: %s %.3f (%.1fs)", cell.suite, cell.method, cell.k,
                 cell.seed, row["metric"], row["value"], row["seconds"])
        rows.append(row)
    return rows


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds={seeds!r}: give a count or a list of integers.")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds}: at least one seed is needed.")
        return list(range(int(seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds}: give distinct integers, at least one.")
    return seeds
