"""Experiment grids: suites x retrievers x selectors x k x seeds, resumable.

- ``plan``: which cells a grid has (``Cell``, ``plan_cells``);
- ``suite_run``: one suite's test slice, corpus and retrievers, indexed once;
- ``cells``: how one cell is evaluated (``run_cell``), a row and its predictions;
- ``store``: the results and predictions on disk (``GridStore``);
- ``runner``: ``run_grid``, which ties them together and resumes.
"""

from eval.grid.cells import GridState, run_cell
from eval.grid.plan import (KEY_FIELDS, KNN_VOTE, MAJORITY, NO_RETRIEVER, ZERO_SHOT, Cell,
                            plan_cells, row_key)
from eval.grid.runner import run_grid
from eval.grid.store import PREDICTIONS, RESULTS, GridStore
from eval.grid.suite_run import SuiteRun
from ricl.jsonl_store import read_jsonl

__all__ = ["Cell", "GridState", "GridStore", "KEY_FIELDS", "KNN_VOTE", "MAJORITY",
           "NO_RETRIEVER", "PREDICTIONS", "RESULTS", "SuiteRun", "ZERO_SHOT",
           "plan_cells", "read_jsonl", "row_key", "run_cell", "run_grid"]
