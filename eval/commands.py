"""The `ricl eval`, `ricl report` and `ricl suites` commands: a plug-in
of the ``ricl`` command (entry-point group ``ricl.commands``, see ``ricl.registry``).

    ricl eval --suite sst2 trec --retriever bm25 dense \\
              --selector random similarity dpp mmr coverage votek -k 0 4 8 \\
              --seeds 3 --n-test 200 --out runs/x [--calibrate]
    ricl report runs/x/results.jsonl [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ricl.selectors import SELECTOR_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the ``ricl`` parser."""
    evaluate = subparsers.add_parser(
        "eval", help="run (or resume) an evaluation grid over suites, retrievers, selectors, k",
        description="Every cell writes its row to OUT/results.jsonl and its predictions to "
                    "OUT/predictions/; rerunning the same command skips finished cells.")
    evaluate.add_argument("--suite", nargs="+", default=["trec"], help="packaged suite names")
    evaluate.add_argument("--retriever", nargs="+", default=["bm25", "dense"],
                          help="bm25 | dense | dense:chroma | a sentence-transformers model dir")
    evaluate.add_argument("--selector", nargs="+", default=["similarity", "random"],
                          choices=SELECTOR_NAMES)
    evaluate.add_argument("-k", nargs="+", type=int, default=[0, 4, 8],
                          help="demonstrations per prompt; 0 is zero-shot (run once per suite)")
    evaluate.add_argument("--seeds", type=int, default=3,
                          help="seeds 0..N-1 for the random selector (others are deterministic)")
    evaluate.add_argument("--n-test", type=int, default=200)
    evaluate.add_argument("--pool-size", type=int, default=5000)
    evaluate.add_argument("--split-seed", type=int, default=0, help="seed of the test/pool split")
    evaluate.add_argument("--normalize", default="sum", choices=("sum", "mean"),
                          help="label/choice log-prob: summed or per-token mean")
    evaluate.add_argument("--lm", metavar="NAME_OR_DIR",
                          help="the LM: a packaged model (smollm2-135m, the default; "
                               "gemma3-270m) or a transformers model directory. Give each "
                               "LM its own --out: finished cells are matched without the LM")
    evaluate.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                          help="LM weights: float32 (exact) or bfloat16 (about 3x faster on "
                               "CPUs with AMX/AVX-512 BF16)")
    evaluate.add_argument("--format", default="text", choices=("text", "chat"),
                          help="prompt layout: plain text, or chat turns in the LM's chat template")
    evaluate.add_argument("--calibrate", action="store_true",
                          help="also report contextual calibration (classification)")
    evaluate.add_argument("--out", required=True, help="run directory (results.jsonl, predictions/)")
    evaluate.add_argument("--no-report", action="store_true",
                          help="skip writing report.md and plots at the end")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_eval)

    report = subparsers.add_parser("report", help="Markdown tables and PNG plots from results.jsonl")
    report.add_argument("results", help="a results.jsonl written by `ricl eval`")
    report.add_argument("--out", help="where report.md and the plots go (default: beside it)")
    report.set_defaults(handler=_report)

    suites = subparsers.add_parser("suites", help="list the packaged evaluation suites")
    suites.set_defaults(handler=_suites)



def _eval(args: argparse.Namespace) -> int:
    from eval.grid import RESULTS, run_grid
    from eval.report import write_report

    lm = None  # the grid loads the default LM itself, and only if an LM cell runs
    if args.lm is not None:
        from ricl.lm import TransformersLM

        lm = TransformersLM(args.lm, dtype=args.dtype)
    rows = run_grid(args.suite, args.retriever, args.selector, args.k, args.seeds, args.n_test,
                    args.out, lm=lm, calibrate=args.calibrate, progress=not args.quiet,
                    pool_size=args.pool_size, split_seed=args.split_seed,
                    normalize=args.normalize, dtype=args.dtype, format=args.format)
    print(f"{len(rows)} cells in {Path(args.out) / RESULTS}")
    for row in rows:
        seed = "" if row.get("seed") is None else f" seed {row['seed']}"
        k = "" if row.get("k") is None else f" k={row['k']}"
        calibrated = (row.get("calibrated") or {}).get("accuracy")
        cal = "" if calibrated is None else f"  (calibrated {calibrated:.3f})"
        print(f"  {row['suite']:<8} {row['method']:<24}{k}{seed}: {row['metric']} "
              f"{row['value']:.3f} ± {row['stderr']:.3f}{cal}")
    if not args.no_report:
        print(f"report: {write_report(Path(args.out) / RESULTS)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from eval.report import write_report

    print(write_report(args.results, args.out))
    return 0


def _suites(args: argparse.Namespace) -> int:
    from eval.suites import list_suites, suite_info

    print("| suite | examples | labels | source |")
    print("|---|---|---|---|")
    for name in list_suites():
        info = suite_info(name)
        print(f"| {name} | {info['n_unique']} | {', '.join(info['labels'])} | {info['source']} |")
    return 0

