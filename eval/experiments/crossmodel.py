"""What holds across models: the headline rows with Gemma 3 270M beside SmolLM2.

    python -m eval.experiments.crossmodel --out eval/results/crossmodel [--suite trec ...]
        [--transfer-suite trec] [--queries 300] [--order-suite trec sst2]

1. grid: the headline rows (zero-shot, random x3 seeds, BM25 similarity, dense
   similarity, DPP, MMR, coverage, VoteK, and the LM-free kNN vote) on TREC, AG News,
   SST-2 and CSQA, 200 test items, k=8, with ``gemma3-270m`` in bfloat16, written to
   ``OUT/gemma3-270m/``. The SmolLM2 rows are read from the published headline run
   (``eval/results/headline``), so both models see the same splits, retrievers and
   demonstrations.
2. transfer (``--transfer-suite``): the EPR (contrastive) retriever trained on
   SmolLM2's feedback and one trained on Gemma's own feedback, same protocol as
   ``eval.experiments.trained`` except for the number of pool queries (``--queries``,
   default 300, where that study uses 1,000: scoring 20 candidates for each takes the
   LM about 15 minutes per 300 queries on two shared cores, and both LMs get the same
   number); 20 BM25 candidates; one epoch,
   each evaluated with Gemma against the base embedder (dense similarity, k=8),
   written to ``OUT/transfer/``.
3. order (``--order-suite``, default TREC and SST-2): dense similarity, k=8, with the
   demos most similar last (the default), most similar first, and in random order, with
   each model, written to ``OUT/order/<model>/``: does the recency effect SmolLM2 shows
   (``eval.experiments.position``) hold for Gemma's few-shot prompts?
4. summary: ``OUT/crossmodel.md`` (+ ``crossmodel.json`` and ``models.png``):
   accuracy side by side, Kendall's tau between the two models' rankings of the LM
   methods per suite, which findings survive, the transfer table with McNemar tests,
   and zero-/few-shot label bias (per-label prediction counts).

Everything resumes (grid cells, feedback files, training checkpoints), so a stopped
run continues where it stopped. Feedback and models go under
``$RICL_HOME/experiments`` (the SmolLM2 ones are shared with ``eval.experiments.trained``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SUITES = ("trec", "agnews", "sst2", "csqa")
MODELS = ("smollm2-135m", "gemma3-270m")
NEW_MODEL = "gemma3-270m"
DTYPE = "bfloat16"
N_QUERIES, N_CANDIDATES = 300, 20
ORDERS = ("similar-last", "similar-first", "random")
ORDER_SUITES = ("trec", "sst2")
HEADLINE = Path(__file__).resolve().parents[1] / "results" / "headline"


def run_grid_for(lm, out_dir: Path, suites: Sequence[str], progress: bool = True) -> None:
    """The headline grid's rows for ``lm`` (same cells as eval.experiments.headline)."""
    from eval.experiments.headline import run_rows

    for suite in suites:
        run_rows(suite, out_dir, lm, progress=progress)


def train_on(suite, lm, work: Path, n_queries: int = N_QUERIES, progress: bool = True) -> Path:
    """Score the suite's first ``n_queries`` pool items with ``lm`` and train an EPR retriever."""
    from training.feedback import score_candidates
    from training.train import train_retriever

    corpus = suite.corpus()
    feedback = score_candidates(corpus, list(corpus)[:n_queries], suite.template,
                                work / f"feedback-q{n_queries}-L{N_CANDIDATES}.jsonl",
                                n_candidates=N_CANDIDATES, lm=lm, progress=progress)
    return train_retriever(feedback, corpus, work / f"contrastive-q{n_queries}",
                           loss="contrastive", progress=progress)


def run_transfer(name: str, lms: dict, out_dir: Path, n_queries: int = N_QUERIES,
                 progress: bool = True) -> list[dict]:
    """Base embedder vs EPR trained on each model's feedback, all evaluated with Gemma."""
    from eval.experiments.trained import N_TEST, POOL_SIZE, SPLIT_SEED, K
    from eval.experiments.trained import work_dir as smollm2_work
    from eval.grid import run_grid
    from eval.suites import load_suite
    from ricl.models import ricl_home

    suite = load_suite(name, n_test=N_TEST, pool_size=POOL_SIZE, seed=SPLIT_SEED)
    works = {"smollm2-135m": smollm2_work() / name,  # shared with eval.experiments.trained
             NEW_MODEL: ricl_home() / "experiments" / "crossmodel" / NEW_MODEL / name}
    retrievers = {"base": "dense"}
    for model in MODELS:
        retrievers[f"epr-{model}"] = str(train_on(suite, lms[model], works[model], n_queries,
                                                  progress))
    return run_grid([suite], retrievers, ["similarity"], [K], 1, N_TEST, out_dir / "transfer",
                    lm=lms[NEW_MODEL], progress=progress, pool_size=POOL_SIZE,
                    split_seed=SPLIT_SEED)


def run_orders(lms: dict, out_dir: Path, suites: Sequence[str],
               progress: bool = True) -> None:
    """Dense similarity, k=8, in each of ``ORDERS``, with each model."""
    from eval.experiments.trained import N_TEST, POOL_SIZE, SPLIT_SEED, K
    from eval.grid import run_grid

    for model in MODELS:
        run_grid(list(suites), ["dense"], ["similarity"], [K], 1, N_TEST,
                 out_dir / "order" / model, lm=lms[model], progress=progress,
                 pool_size=POOL_SIZE, split_seed=SPLIT_SEED, order=ORDERS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=list(SUITES))
    parser.add_argument("--transfer-suite", nargs="*", default=["trec"])
    parser.add_argument("--order-suite", nargs="*", default=list(ORDER_SUITES),
                        help="suites for the demo-order comparison (none: skip it)")
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/crossmodel)")
    parser.add_argument("--headline", default=str(HEADLINE),
                        help="the SmolLM2 headline run to compare with")
    parser.add_argument("--queries", type=int, default=N_QUERIES,
                        help="training queries per model for the transfer retrievers")
    parser.add_argument("--skip-grid", action="store_true",
                        help="only the transfer step (the grid may run in another process)")
    parser.add_argument("--summary-only", action="store_true",
                        help="only rewrite crossmodel.md from the finished runs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ricl.lm import TransformersLM

    out = Path(args.out)
    if not args.summary_only:
        lms = {model: TransformersLM(model, dtype=DTYPE) for model in MODELS}
        if not args.skip_grid:
            run_grid_for(lms[NEW_MODEL], out / NEW_MODEL, args.suite, progress=not args.quiet)
        for name in args.transfer_suite:
            run_transfer(name, lms, out, args.queries, progress=not args.quiet)
        if args.order_suite:
            run_orders(lms, out, args.order_suite, progress=not args.quiet)
    from eval.experiments.crossmodel_report import write_summary

    print(write_summary(out, Path(args.headline), args.suite, args.transfer_suite, args.queries,
                        args.order_suite))


if __name__ == "__main__":
    main()
