"""Learned diversity and one retriever for every task: CEIL (a trained DPP) and UDR (one
multi-task retriever) against EPR (issue 18).

    python -m eval.experiments.ceil_udr ceil --out eval/results/ceil_udr
    python -m eval.experiments.ceil_udr udr --out eval/results/ceil_udr
    python -m eval.experiments.ceil_udr table --out eval/results/ceil_udr   # rewrite the table

The protocol is ``eval.experiments.trained``'s: per suite 200 test items, a 5,000-item
pool, split seed 0, k=8 at inference, the default LM (SmolLM2-135M) in bfloat16. EPR
is that study's contrastive retriever, built by the same functions at the same paths
(``$RICL_HOME/experiments/trained``), so a machine that ran it reuses its feedback and
models, and the EPR rows here are its "contrastive (EPR)" column.

``ceil``, per suite (TREC, SST-2, AG News):

1. EPR: the first ``--queries`` pool examples, ``-L`` BM25 candidates each, scored by
   the LM; MiniLM-L6 trained one epoch with the contrastive loss;
2. set feedback (``training.score_sets``): each of the first ``--set-queries`` of them
   gets its top ``-n`` candidates from the EPR retriever, and ``--subsets`` subsets of
   ``-k`` are scored by the LM, most relevant demo last;
3. CEIL: ``train_retriever(loss="ceil")`` from the EPR model, ``--ceil-epochs`` epochs,
   at the DPP selector's default relevance scale (0.1), so that ``selector="dpp"``
   uses the kernel it was trained for;
4. evaluate: base + DPP, base + similarity, EPR + similarity, EPR + DPP, CEIL + DPP,
   and, to tell the trained encoder from the DPP's diversity, CEIL + similarity.

``udr``:

1. per training suite (TREC, SST-2, AG News, CSQA, BoolQ, ARC-Easy): round-1 feedback
   as in ``ceil`` step 1 (the same files) and the suite's own EPR model from it;
2. ``training.train_udr``: one model trained on all of it with the listwise (distill)
   loss, each query behind its suite's instruction
   (``training.multitask.SUITE_INSTRUCTIONS``); round 2 re-mines the first
   ``--mining-queries`` queries of every suite with the round-1 model (under the
   instruction), re-scores them and trains on from it;
3. evaluate UDR + similarity on every training suite (against the base embedder and
   the suite's EPR) and on suites it never saw (``--unseen``: SUBJ, OpenBookQA and
   ARC-Challenge by default; no feedback, pool or query of theirs is used in
   training; their instruction is written, as UDR's are for its unseen tasks, and
   given only at inference) against the base embedder. Test items of an unseen suite
   whose text appears verbatim in a training pool are counted in the table.

Every step resumes: feedback files skip scored queries, training restarts from its
last checkpoint or finds its model done, the grid skips finished cells. Rerun the same
command to continue. Feedback and models go under ``$RICL_HOME/experiments``; the
grid (rows, per-item predictions), ``ceil_udr.json`` (cards, wall times) and
``ceil_udr.md`` (the table) go to ``--out``.

Sizing, from the pilot (TREC, 2 CPU cores shared with other jobs, bfloat16): set
scoring ran at ~1.4 prompts/s with k=4, and a prompt costs about ``(k + 1) * demo
tokens``. The defaults (1,000 queries x 8 subsets of 4 from the EPR top 16) are 8,000
prompts per suite: about 1.5 hours on TREC and SST-2 (~19 tokens a demo) and three
times that on AG News (~61); CEIL training runs 17 texts per query through the
encoder (2 epochs: under an hour per suite). UDR's cost is mostly scoring: round 1
adds CSQA, ARC-Easy and BoolQ (BoolQ demos are ~160 tokens) to the three suites' EPR
feedback, round 2 re-scores 500 queries x 20 candidates per suite; then two trainings
on the pooled feedback (6,000 and 3,000 queries). Plan on the better part of a day
for both studies on 2 cores; each step resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.experiments.trained import (K, POOL_SIZE, SPLIT_SEED, _p, _WallClock, paired_test,
                                      scored_feedback, trained_retriever, wall_clock)
from eval.experiments.trained import work_dir as _trained_work_dir

log = logging.getLogger(__name__)

CEIL_SUITES = ("trec", "sst2", "agnews")
UDR_SUITES = CEIL_SUITES + ("csqa", "boolq", "arc-easy")
UNSEEN = ("subj", "obqa", "arc-challenge")
N_TEST = 200
DTYPE = "bfloat16"
SUMMARY = "ceil_udr.json"
TABLE = "ceil_udr.md"


def _work_dir() -> Path:
    from ricl.models import ricl_home

    return ricl_home() / "experiments" / "ceil_udr"


# --------------------------------------------------------------------------- CEIL


def run_ceil_suite(name: str, args: argparse.Namespace, out_dir: Path, lm) -> dict[str, Any]:
    """EPR, set feedback, CEIL and the five evaluation cells of one suite."""
    from eval.grid import run_grid
    from eval.suites import load_suite
    from training.set_feedback import score_sets
    from training.train import read_card, train_retriever

    suite = load_suite(name, n_test=N_TEST, pool_size=POOL_SIZE, seed=SPLIT_SEED)
    corpus = suite.corpus()
    shared = _trained_work_dir()
    progress = not args.quiet
    feedback = scored_feedback(suite, corpus, args.queries, args.candidates, shared, lm, progress)
    epr = trained_retriever(feedback, corpus, name, "contrastive", args.queries, args.candidates,
                            shared, progress)
    tag = ceil_tag(args)
    clock = _WallClock(_work_dir() / name / f"wall-seconds-{tag}.json")
    with clock("score sets"):  # the file is named by what its scores depend on, not by training's
        sets = score_sets(corpus, list(corpus)[:args.set_queries], suite.template,
                          _work_dir() / name / f"sets-{sets_tag(args)}.jsonl", retriever=str(epr),
                          n_candidates=args.n, k=args.k, n_subsets=args.subsets, seed=args.seed,
                          lm=lm, progress=progress)
    with clock("train ceil"):
        ceil = train_retriever(sets, corpus, _work_dir() / name / f"ceil-{tag}", loss="ceil",
                               base_model=epr, epochs=args.ceil_epochs, seed=args.seed,
                               progress=progress)
    names = _names(args)
    with clock("evaluate"):
        run_grid([suite], {"base": "dense", names["epr"]: str(epr), names["ceil"]: str(ceil)},
                 ["dpp"], [K], 1, args.n_test, out_dir, lm=lm, progress=progress,
                 pool_size=POOL_SIZE, split_seed=SPLIT_SEED)
        # CEIL + similarity is a diagnostic: the trained encoder without the DPP's diversity
        run_grid([suite], {"base": "dense", names["epr"]: str(epr), names["ceil"]: str(ceil)},
                 ["similarity"], [K], 1, args.n_test, out_dir, lm=lm, progress=progress,
                 pool_size=POOL_SIZE, split_seed=SPLIT_SEED)
    shared_times = wall_clock(shared, name, args.queries, args.candidates).totals()
    return {"ceil_card": _card_summary(read_card(ceil)), "epr_card": _card_summary(read_card(epr)),
            "seconds": {"score epr": shared_times.get("score", 0.0),
                        "train epr": shared_times.get("train contrastive", 0.0),
                        **clock.totals()}}


def sets_tag(args: argparse.Namespace) -> str:
    """The set-feedback settings in a file-name stem: other settings get another file."""
    return (f"q{args.queries}-L{args.candidates}-s{args.set_queries}-n{args.n}-k{args.k}"
            f"-m{args.subsets}-seed{args.seed}")


def ceil_tag(args: argparse.Namespace) -> str:
    """The CEIL settings (set feedback and training) in a file-name stem."""
    return f"{sets_tag(args)}-e{args.ceil_epochs}"


def _names(args: argparse.Namespace) -> dict[str, str]:
    """Grid names of the retrievers: settings in the name, so that cells of other
    settings are never taken for these."""
    return {"epr": f"epr-q{args.queries}-L{args.candidates}", "ceil": f"ceil-{ceil_tag(args)}",
            "udr": f"udr-{udr_tag(args)}"}


# --------------------------------------------------------------------------- UDR


def run_udr(args: argparse.Namespace, out_dir: Path, lm) -> dict[str, Any]:
    """Round-1 feedback and EPR per training suite, the UDR model, and its evaluation."""
    from eval.grid import run_grid
    from eval.suites import load_suite
    from training.multitask import Task, suite_instruction, train_udr
    from training.train import read_card

    overlap = sorted(set(args.train_suites) & set(args.unseen))
    if overlap:
        from ricl.errors import ConfigError

        raise ConfigError(f"{overlap} are both training and unseen suites; an unseen suite must "
                          "stay out of training entirely.")
    shared = _trained_work_dir()
    progress = not args.quiet
    tasks, eprs, suites = [], {}, {}
    for name in args.train_suites:
        suite = suites[name] = load_suite(name, n_test=N_TEST, pool_size=POOL_SIZE, seed=SPLIT_SEED)
        corpus = suite.corpus()
        feedback = scored_feedback(suite, corpus, args.queries, args.candidates, shared, lm, progress)
        eprs[name] = trained_retriever(feedback, corpus, name, "contrastive", args.queries,
                                       args.candidates, shared, progress)
        tasks.append(Task(name, corpus, list(corpus)[:args.queries], suite.template,
                          suite_instruction(name), feedback=feedback))
    tag = udr_tag(args)
    clock = _WallClock(_work_dir() / "udr" / f"wall-seconds-{tag}.json")
    with clock("train udr"):
        model = train_udr(tasks, _work_dir() / "udr" / f"work-q{args.queries}-L{args.candidates}",
                          _work_dir() / "udr" / f"model-{tag}", rounds=args.rounds,
                          n_candidates=args.candidates, lm=lm, mining_queries=args.mining_queries,
                          progress=progress, seed=args.seed)
    names = _names(args)
    for name in args.train_suites:
        with clock(f"evaluate {name}"):
            run_grid([suites[name]], {"base": "dense", names["epr"]: str(eprs[name]),
                                      names["udr"]: _udr_retriever(model, prompt_name=name)},
                     ["similarity"], [K], 1, args.n_test, out_dir, lm=lm, progress=progress,
                     pool_size=POOL_SIZE, split_seed=SPLIT_SEED)
    for name in args.unseen:
        with clock(f"evaluate {name}"):
            run_grid([name], {"base": "dense",
                              names["udr"]: _udr_retriever(model, prompt=suite_instruction(name))},
                     ["similarity"], [K], 1, args.n_test, out_dir, lm=lm, progress=progress,
                     pool_size=POOL_SIZE, split_seed=SPLIT_SEED)
    shared_times = {name: wall_clock(shared, name, args.queries, args.candidates).totals()
                    for name in args.train_suites}
    return {"card": _card_summary(read_card(model)),
            "instructions": {name: suite_instruction(name)
                             for name in (*args.train_suites, *args.unseen)},
            "unseen_overlap": unseen_overlap(args.unseen, suites),
            "seconds": {**clock.totals(),
                        "round-1 scoring and EPR, per suite": {
                            name: {"score": t.get("score", 0.0),
                                   "train epr": t.get("train contrastive", 0.0)}
                            for name, t in shared_times.items()}}}


def udr_tag(args: argparse.Namespace) -> str:
    return (f"q{args.queries}-L{args.candidates}-r{args.rounds}-mq{args.mining_queries}"
            f"-{'+'.join(args.train_suites)}-seed{args.seed}")


def _udr_retriever(model: Path, prompt_name: str | None = None, prompt: str | None = None):
    """A grid factory: the UDR model with a suite's instruction (by name, or as text)."""
    def make():
        from retrievers import DenseRetriever

        return DenseRetriever(model=str(model), query_prompt_name=prompt_name, query_prompt=prompt)
    return make


def unseen_overlap(unseen: Sequence[str], training: Mapping[str, Any]) -> dict[str, int]:
    """Per unseen suite: its test items whose input text (case and spacing folded) is,
    verbatim, an item of a training suite's pool."""
    from eval.suites import load_suite

    def fold(record: Mapping[str, Any], fields: Sequence[str]) -> str:
        return re.sub(r"\s+", " ", " ".join(str(record[f]) for f in fields)).strip().lower()

    seen = {fold(r, s.input_fields) for s in training.values() for r in s.pool}
    counts = {}
    for name in unseen:
        suite = load_suite(name, n_test=N_TEST, pool_size=POOL_SIZE, seed=SPLIT_SEED)
        counts[name] = sum(fold(r, suite.input_fields) in seen for r in suite.test[:N_TEST])
    return counts


# --------------------------------------------------------------------------- the table


def _card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("loss", "steps", "examples", "initial_loss", "final_loss", "dpp_scale", "k",
            "n_subsets", "n_candidates", "feedback_queries", "query_prompts")
    return {key: card[key] for key in keep if key in card}


def write_table(out_dir: Path, summary: Mapping[str, Any]) -> Path:
    """``ceil_udr.md`` from the grid rows in ``out_dir`` and the studies' summary."""
    from ricl.io import atomic_write_text
    from ricl.jsonl_store import read_jsonl

    settings = summary["settings"]
    names = settings["names"]
    rows = {(r["suite"], r["retriever"], r["selector"]): r
            for r in read_jsonl(out_dir / "results.jsonl")
            if r.get("k") == K and r.get("n_test") == settings["n_test"]}

    def cell(suite, retriever, selector, stderr=True):
        row = rows.get((suite, retriever, selector))
        if row is None:
            return "—"
        return f"{row['value']:.3f} ± {row['stderr']:.3f}" if stderr else f"{row['value']:.3f}"

    def p(suite, a, b):
        row_a, row_b = rows.get((suite, *a)), rows.get((suite, *b))
        if row_a is None or row_b is None:
            return "—"
        test = paired_test(out_dir, row_a, row_b)
        return f"{row_b['value'] - row_a['value']:+.3f} (p {_p(test.p_value)})"

    base_sim, base_dpp = ("base", "similarity"), ("base", "dpp")
    epr_sim, epr_dpp = (names["epr"], "similarity"), (names["epr"], "dpp")
    ceil_dpp, udr_sim = (names["ceil"], "dpp"), (names["udr"], "similarity")
    ceil_sim = (names["ceil"], "similarity")
    ceil, udr = summary.get("ceil", {}), summary.get("udr")
    trained_on = list(dict.fromkeys([*ceil, *(settings.get("train_suites") if udr else [])]))
    lines = [f"# CEIL and UDR against EPR (k={K}, {settings['n_test']} test items)", "",
             _settings_line(settings, bool(ceil), bool(udr)), "",
             "Accuracy ± standard error. DPP: greedy MAP over the top 50 at relevance scale 0.1.", "",
             "| suite | base + similarity | base + DPP | EPR + similarity | EPR + DPP | CEIL + DPP "
             "| UDR + similarity | CEIL + similarity (diagnostic) |", "|---|---|---|---|---|---|---|---|"]
    for suite in trained_on:
        lines.append(f"| {suite} | " + " | ".join(cell(suite, *c) for c in (
            base_sim, base_dpp, epr_sim, epr_dpp, ceil_dpp, udr_sim, ceil_sim)) + " |")
    lines += ["", "kNN vote of each encoder (the majority label of its 8 most similar demos, no "
              "LM): how well it finds demonstrations of the query's label.", "",
              "| suite | base | EPR | CEIL | UDR |", "|---|---|---|---|---|"]
    for suite in trained_on:
        lines.append(f"| {suite} | " + " | ".join(
            cell(suite, name, "knn-vote", stderr=False)
            for name in ("base", names["epr"], names["ceil"], names["udr"])) + " |")
    lines += ["", "Differences and exact McNemar tests on the same test items:", "",
              "| suite | CEIL + DPP − base + DPP | CEIL + DPP − EPR + DPP | CEIL + DPP − EPR + "
              "similarity | UDR − base + similarity | UDR − EPR + similarity |",
              "|---|---|---|---|---|---|"]
    for suite in trained_on:
        lines.append(f"| {suite} | {p(suite, base_dpp, ceil_dpp)} | {p(suite, epr_dpp, ceil_dpp)} | "
                     f"{p(suite, epr_sim, ceil_dpp)} | {p(suite, base_sim, udr_sim)} | "
                     f"{p(suite, epr_sim, udr_sim)} |")
    if udr:
        lines += ["", "Suites UDR never saw (no feedback, pool or query of theirs in training; "
                  "their instruction given at inference only):", "",
                  "| unseen suite | instruction | base + similarity | UDR + similarity | "
                  "UDR − base | test items verbatim in a training pool |", "|---|---|---|---|---|---|"]
        for suite in settings["unseen"]:
            lines.append(f"| {suite} | {udr['instructions'][suite]!r} | {cell(suite, *base_sim)} | "
                         f"{cell(suite, *udr_sim)} | {p(suite, base_sim, udr_sim)} | "
                         f"{udr['unseen_overlap'][suite]} of {settings['n_test']} |")
    lines += ["", "Training losses (first → last, on a fixed sample) and wall times "
              "(2 CPU cores, shared; summed over the runs that worked on each step):", ""]
    if ceil:
        lines += ["| suite | EPR loss | CEIL loss | EPR score s | EPR train s | set score s | "
                  "CEIL train s | evaluate s |", "|---|---|---|---|---|---|---|---|"]
        for suite, result in ceil.items():
            t = result["seconds"]
            lines.append(f"| {suite} | {_losses(result['epr_card'])} | {_losses(result['ceil_card'])} | "
                         + " | ".join(f"{t.get(step, 0.0):.0f}" for step in (
                             "score epr", "train epr", "score sets", "train ceil", "evaluate"))
                         + " |")
    if udr:
        t = udr["seconds"]
        first = t["round-1 scoring and EPR, per suite"]
        lines += ["", f"UDR: loss {_losses(udr['card'])} over {udr['card']['steps']} steps "
                  f"(last round); scoring, training and re-mining {t.get('train udr', 0.0):.0f} s "
                  "beyond round 1's scoring, which it shares with EPR: " + ", ".join(
                      f"{suite} {v['score']:.0f} s (EPR training {v['train epr']:.0f} s)"
                      for suite, v in first.items()) + "; evaluation " + ", ".join(
                      f"{key[len('evaluate '):]} {value:.0f} s" for key, value in t.items()
                      if key.startswith("evaluate ")) + "."]
    path = out_dir / TABLE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _losses(card: Mapping[str, Any]) -> str:
    return f"{card['initial_loss']:.3f} → {card['final_loss']:.3f}"


def _settings_line(settings: Mapping[str, Any], ceil: bool, udr: bool) -> str:
    parts = [f"EPR: {settings['queries']} training queries × {settings['candidates']} BM25 "
             "candidates, scored by SmolLM2-135M (bfloat16), MiniLM-L6 trained with the "
             "contrastive loss (as in `eval.experiments.trained`)."]
    if ceil:
        parts.append(f"CEIL: {settings['set_queries']} queries × {settings['subsets']} subsets of "
                     f"k={settings['k']} from the EPR retriever's top {settings['n']}, trained "
                     f"{settings['ceil_epochs']} epochs from EPR at DPP scale 0.1.")
    if udr:
        parts.append(f"UDR: one model on {', '.join(settings['train_suites'])} ({settings['queries']} "
                     f"queries each, {settings['rounds']} rounds; later rounds re-mine "
                     f"{settings['mining_queries']} per suite), distill loss, queries behind "
                     "task instructions.")
    command = ("`python -m eval.experiments.ceil_udr ceil|udr --out DIR`" +
               ("" if settings["n_test"] == N_TEST else f" (--n-test {settings['n_test']})"))
    return " ".join(parts) + f" Reproduce: {command}."


def _update_summary(out_dir: Path, args: argparse.Namespace, part: str, value: Any) -> dict:
    from ricl.io import atomic_write_text

    path = out_dir / SUMMARY
    summary = json.loads(path.read_text()) if path.is_file() else {}
    settings = {key: getattr(args, key) for key in (
        "queries", "candidates", "set_queries", "n", "k", "subsets", "ceil_epochs", "rounds",
        "mining_queries", "train_suites", "unseen", "seed", "n_test")}
    settings["names"] = _names(args)
    old = summary.get("settings")
    if old and {k: v for k, v in old.items() if k != "names"} != {
            k: v for k, v in settings.items() if k != "names"}:
        log.warning("%s held results of other settings; the table now describes these.", path)
    summary["settings"] = settings
    if part == "ceil":
        summary.setdefault("ceil", {}).update(value)
    elif part == "udr":
        summary["udr"] = value
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("ceil", "udr", "table"))
    parser.add_argument("--out", required=True, help="results directory (the published run: "
                                                     "eval/results/ceil_udr)")
    parser.add_argument("--suite", nargs="+", default=list(CEIL_SUITES), help="CEIL's suites")
    parser.add_argument("--queries", type=int, default=1000, help="EPR/UDR training queries per suite")
    parser.add_argument("-L", "--candidates", type=int, default=20, help="BM25 candidates per query")
    parser.add_argument("--set-queries", type=int, default=1000, help="CEIL: queries with scored sets")
    parser.add_argument("-n", type=int, default=16, help="CEIL: EPR candidates subsets come from")
    parser.add_argument("-k", type=int, default=4, help="CEIL: demos per scored subset")
    parser.add_argument("--subsets", type=int, default=8, help="CEIL: subsets per query")
    parser.add_argument("--ceil-epochs", type=int, default=2)
    parser.add_argument("--train-suites", nargs="+", default=list(UDR_SUITES), help="UDR's suites")
    parser.add_argument("--unseen", nargs="+", default=list(UNSEEN), help="suites UDR never sees")
    parser.add_argument("--rounds", type=int, default=2, help="UDR: rounds of mining")
    parser.add_argument("--mining-queries", type=int, default=500,
                        help="UDR: queries per suite re-mined in later rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=N_TEST, help="test items (a pilot may use fewer)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out_dir = Path(args.out)
    if args.study == "table":
        summary = json.loads((out_dir / SUMMARY).read_text())
        print(write_table(out_dir, summary))
        return
    from ricl.lm import TransformersLM

    lm = TransformersLM(dtype=DTYPE)
    started = time.perf_counter()
    if args.study == "ceil":
        for name in args.suite:  # the table is rewritten after each suite
            result = run_ceil_suite(name, args, out_dir, lm)
            print(write_table(out_dir, _update_summary(out_dir, args, "ceil", {name: result})))
    else:
        result = run_udr(args, out_dir, lm)
        print(write_table(out_dir, _update_summary(out_dir, args, "udr", result)))
    log.info("%s study: %.0f s in this run", args.study, time.perf_counter() - started)


if __name__ == "__main__":
    main()
