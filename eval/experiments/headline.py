"""The headline table: one fixed, resumable grid over eight suites.

    python -m eval.experiments.headline --out eval/results/headline [--suite trec agnews ...]

Rows per suite: zero-shot, random (3 seeds), BM25 similarity, dense similarity,
dense DPP, dense MMR, dense coverage, dense VoteK, plus the LM-free baselines the
grid adds for classification (majority label, kNN vote). k = 8, 200 test items, the
default LM (in bfloat16) and embedder. Every cell is written as it finishes, so an interrupted
run resumes where it stopped; the report (Markdown and PNG) is rewritten at the end.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

SUITES = ("trec", "agnews", "sst2", "csqa", "arc-easy", "nq-open", "rte", "boolq")
DENSE_SELECTORS = ("random", "similarity", "dpp", "mmr", "coverage", "votek")
K = 8
SEEDS = 3
N_TEST = 200
# bfloat16 runs about 3x faster here (AMX); eval.benchmarks.inference measures what it changes.
DTYPE = "bfloat16"


def run_rows(suite: str, out_dir: str | Path, lm, n_test: int = N_TEST,
             progress: bool = True) -> None:
    """One suite's headline rows with ``lm`` (resumable grid cells in ``out_dir``)."""
    from eval.grid import run_grid

    run_grid([suite], ["dense"], list(DENSE_SELECTORS), [0, K], SEEDS, n_test, out_dir,
             lm=lm, progress=progress)
    run_grid([suite], ["bm25"], ["similarity"], [K], SEEDS, n_test, out_dir, lm=lm,
             progress=progress)


def run(out_dir: str | Path, suites=SUITES, n_test: int = N_TEST,
        progress: bool = True) -> Path:
    """Run (or resume) the headline grid suite by suite; return the report path."""
    from eval.report import write_report
    from ricl.lm import TransformersLM

    lm = TransformersLM(dtype=DTYPE)
    for suite in suites:
        run_rows(suite, out_dir, lm, n_test, progress)
    return write_report(Path(out_dir) / "results.jsonl")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=list(SUITES))
    parser.add_argument("--out", required=True,
                        help="run directory (the published run: eval/results/headline)")
    parser.add_argument("--n-test", type=int, default=N_TEST)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.out, args.suite, args.n_test, progress=not args.quiet))


if __name__ == "__main__":
    main()
