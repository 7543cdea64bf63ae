"""`ricl demo`: the main job. Index a packaged suite's pool into embedded Chroma,
build 8-shot prompts for held-out queries with every selector, score the label
words with the default LM and print accuracy per selector, with timings.

Each row is one cell of the evaluation grid (``eval.grid.run_cell``): the prompts,
the label scoring and the metrics are those of ``ricl eval``. What the demo adds is
an index kept between runs in its work directory."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval.grid import KNN_VOTE, NO_RETRIEVER, ZERO_SHOT, Cell, GridState, SuiteRun, run_cell
from eval.suites import load_suite
from ricl.errors import IndexLoadError
from ricl.io import write_json
from ricl.models import ricl_home
from ricl.selectors import SELECTOR_NAMES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    method: str
    accuracy: float
    stderr: float
    n: int
    seconds: float
    tokens_per_prompt: float
    uses_lm: bool = True


def run_demo(suite: str = "trec", k: int = 8, n_test: int = 200, pool_size: int = 5000,
             split_seed: int = 0, selectors: Sequence[str] = SELECTOR_NAMES,
             backend: str = "chroma", workdir: Path | None = None, seed: int = 0) -> list[Row]:
    """``split_seed`` draws the test/pool split; ``seed`` is the prompt builders' seed
    (random selection)."""
    from retrievers import BM25Retriever

    data = load_suite(suite, n_test=n_test, pool_size=pool_size, seed=split_seed)
    corpus = data.corpus()
    workdir = Path(workdir or ricl_home() / "demo" / f"{suite}-pool{len(corpus)}-seed{split_seed}")
    log.info("%s: %d demonstrations, %d test queries; index at %s", suite, len(corpus),
             len(data.test), workdir)
    dense = _dense_index(corpus, workdir / f"dense-{backend}", backend)
    # The dense index is the first retriever: zero-shot prompts (which search nothing) use it.
    run = SuiteRun(data, n_test, {}, corpus=dense.corpus,
                   indexed={"dense": dense, "bm25": BM25Retriever().index(dense.corpus)})
    state = GridState(lm=None, max_new_tokens=16)
    state.get_lm()  # the default LM, loaded before the clock starts

    def cell(retriever: str, selector: str, shots: int = k) -> Cell:
        uses_lm = selector != KNN_VOTE
        return Cell(run.name, retriever, selector, shots, seed if selector == "random" else None,
                    n_test, run.pool_size, False, "sum" if uses_lm else None)

    cells = [cell(NO_RETRIEVER, ZERO_SHOT, 0), cell("bm25", "similarity"),
             *[cell("dense", name) for name in selectors], cell("dense", KNN_VOTE)]
    print(f"{suite}: scoring {len(run.test)} queries with the default LM")
    rows = [_evaluate(c, run, state) for c in cells]
    write_json(workdir / "results.json", [asdict(row) for row in rows])
    print()
    print(format_table(rows, suite, k))
    return rows


def _dense_index(corpus: Any, path: Path, backend: str):
    """The dense index saved at ``path`` if it holds this corpus, else a new one saved there."""
    from retrievers import DenseRetriever, load_retriever

    started = time.perf_counter()
    dense = None
    if (path / "retriever.json").is_file():
        try:
            dense = load_retriever(path)
        except IndexLoadError as exc:
            log.warning("rebuilding the dense index: %s", exc)
        if dense is not None and dense.corpus.fingerprint() != corpus.fingerprint():
            log.warning("the saved dense index is for another corpus: rebuilding it")
            dense = None
    if dense is None:
        dense = DenseRetriever(backend=backend, show_progress=True).index(corpus)
        dense.save(path)
        print(f"indexed {len(corpus)} demonstrations into {backend} at {path} "
              f"in {time.perf_counter() - started:.1f}s")
    else:
        print(f"reusing the {backend} index at {path} ({time.perf_counter() - started:.1f}s)")
    return dense


def _evaluate(cell: Cell, run: SuiteRun, state: GridState) -> Row:
    """One grid cell, timed and printed as it finishes."""
    started = time.perf_counter()
    row, _ = run_cell(cell, run, state)
    seconds = time.perf_counter() - started
    method = (f"kNN label vote ({cell.retriever} top-{cell.k}, no LM)"
              if cell.selector == KNN_VOTE else cell.method)
    print(f"  {method:<32} acc {row['value']:.3f}  ({seconds:.0f}s)", flush=True)
    return Row(method, row["value"], row["stderr"], row["n"], seconds,
               row.get("tokens_per_prompt", 0.0), cell.uses_lm)


def format_table(rows: Sequence[Row], suite: str, k: int) -> str:
    lines = [f"| {suite}, k={k} | accuracy | ± s.e. | n | seconds | prompt tokens |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.method} | {row.accuracy:.3f} | {row.stderr:.3f} | {row.n} | "
                     f"{row.seconds:.0f} | {row.tokens_per_prompt:.0f} |")
    return "\n".join(lines)
