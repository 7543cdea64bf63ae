"""Plain text or chat turns: which prompt layout does the default LM prefer?

    python -m eval.experiments.formats --out eval/results/formats [--suite trec agnews sst2]

Runs the grid twice per suite, dense similarity, k=8, 200 test items: once with
plain-text prompts and once with each demonstration as a user/assistant turn in
SmolLM2-135M-Instruct's own chat template (``PromptBuilder(format="chat")``). Both
see the same demonstrations in the same order, so the paired exact McNemar test
on the same items isolates the layout. Resumable: finished cells are skipped.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

SUITES = ("trec", "agnews", "sst2")
K = 8
N_TEST = 200
DTYPE = "bfloat16"  # as the headline table; eval.benchmarks.inference measures the change


def run(out_dir: str | Path, suites=SUITES, n_test: int = N_TEST, progress: bool = True) -> Path:
    """Run (or resume) both layouts suite by suite; return the path of ``formats.md``."""
    from eval.grid import run_grid
    from ricl.lm import TransformersLM

    lm = TransformersLM(dtype=DTYPE)
    rows = []
    for suite in suites:  # both layouts in one grid: the pool is embedded once per suite
        rows += run_grid([suite], ["dense"], ["similarity"], [K], 1, n_test, out_dir, lm=lm,
                         progress=progress, format=["text", "chat"], dtype=DTYPE)
    return write_table([r for r in rows if r["selector"] == "similarity"], Path(out_dir))


def write_table(rows: list[dict], out_dir: Path) -> Path:
    """``formats.md``: accuracy per layout and the paired test between them."""
    from eval.metrics import mcnemar_exact
    from ricl.io import atomic_write_text
    from ricl.jsonl_store import read_jsonl

    by_suite: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_suite.setdefault(row["suite"], {})[row.get("format", "text")] = row
    lines = ["# Plain text vs chat prompts", "",
             f"Default LM (SmolLM2-135M-Instruct, {DTYPE}), dense similarity, k={K}, the same "
             "demonstrations in the same order; chat puts each demo in a user/assistant turn of "
             "the model's own chat template and scores the label as the start of the assistant "
             "turn. p: exact McNemar test on the same items. Reproduce: "
             "`python -m eval.experiments.formats --out eval/results/formats`.", "",
             "| suite | n | text | chat | chat − text | fixed / broken by chat | p |",
             "|---|---|---|---|---|---|---|"]
    for suite, pair in by_suite.items():
        if set(pair) != {"text", "chat"}:
            continue
        text, chat = pair["text"], pair["chat"]
        correct = {layout: {p["id"]: bool(p["correct"])
                            for p in read_jsonl(out_dir / row["predictions"])}
                   for layout, row in pair.items()}
        ids = sorted(set(correct["text"]) & set(correct["chat"]))
        test = mcnemar_exact([correct["chat"][i] for i in ids], [correct["text"][i] for i in ids])
        fixed = sum(correct["chat"][i] and not correct["text"][i] for i in ids)
        broken = sum(correct["text"][i] and not correct["chat"][i] for i in ids)
        lines.append(f"| {suite} | {len(ids)} | {text['value']:.3f} ± {text['stderr']:.3f} | "
                     f"{chat['value']:.3f} ± {chat['stderr']:.3f} | "
                     f"{chat['value'] - text['value']:+.3f} | {fixed} / {broken} | "
                     f"{test.p_value:.3g} |")
    path = out_dir / "formats.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=list(SUITES))
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/formats)")
    parser.add_argument("--n-test", type=int, default=N_TEST)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.out, args.suite, args.n_test, progress=not args.quiet).read_text())


if __name__ == "__main__":
    main()
