"""Does LM feedback make a better retriever? The base embedder against trained ones.

    python -m eval.experiments.trained [--suite trec sst2 agnews] [--queries 1000] [-L 20]
        [--second-round contrastive --second-round-suites trec]

Per suite, on the same split the evaluation grid uses (200 test items, a 5,000-item
pool, split seed 0):

1. score: the first ``--queries`` pool examples are training queries; each gets its
   ``L`` BM25 candidates from the rest of the pool, scored by the default LM
   (``training.score_candidates``, bfloat16);
2. train: one retriever per loss (``contrastive`` = EPR, ``distill`` = LLM-R) from
   the packaged MiniLM-L6, one epoch;
3. optionally a second round (``--second-round LOSS``): candidates re-retrieved with
   that loss's round-1 retriever, re-scored, and training continued from it;
4. evaluate: ``eval.run_grid`` with dense similarity, k=8, for the base embedder and
   each trained retriever, and the paired McNemar test of each against the base.

Everything resumes: the feedback file skips finished queries, training restarts from
its last checkpoint, the grid skips finished cells. Wall times are summed over the runs
that worked on each step (``wall-seconds-*.json`` beside the feedback file). Feedback
and models go under ``$RICL_HOME/experiments/trained`` (they are large); the grid rows,
predictions and ``trained.md`` (with wall times) go to ``--out`` (the published run:
``eval/results/trained``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SUITES = ("trec", "sst2", "agnews")
LOSSES = ("contrastive", "distill")
N_TEST, POOL_SIZE, SPLIT_SEED, K = 200, 5000, 0, 8
DTYPE = "bfloat16"


def work_dir() -> Path:
    from ricl.models import ricl_home

    return ricl_home() / "experiments" / "trained"


def run_suite(name: str, n_queries: int, n_candidates: int, out_dir: Path, work: Path,
              lm, progress: bool = True, second_round: Sequence[str] = ()) -> dict:
    from eval.grid import run_grid
    from eval.suites import load_suite
    from training.train import read_card

    suite = load_suite(name, n_test=N_TEST, pool_size=POOL_SIZE, seed=SPLIT_SEED)
    corpus = suite.corpus()
    clock = wall_clock(work, name, n_queries, n_candidates)
    feedback = scored_feedback(suite, corpus, n_queries, n_candidates, work, lm, progress)
    retrievers = {"base": "dense"}
    cards = {}
    for loss in LOSSES:
        model = trained_retriever(feedback, corpus, name, loss, n_queries, n_candidates, work, progress)
        retrievers[loss] = str(model)
        cards[loss] = read_card(model)
    for loss in second_round:  # iterative mining: candidates from the round-1 retriever
        round_two = f"{loss}-r2"
        mined = scored_feedback(suite, corpus, n_queries, n_candidates, work, lm, progress,
                                retriever=retrievers[loss], round_two_of=loss)
        model = trained_retriever(mined, corpus, name, loss, n_queries, n_candidates, work, progress,
                                  base_model=retrievers[loss], tag=round_two)
        retrievers[round_two] = str(model)
        cards[round_two] = read_card(model)
    with clock("evaluate"):
        rows = run_grid([suite], retrievers, ["similarity"], [K], 1, N_TEST, out_dir, lm=lm,
                        progress=progress, pool_size=POOL_SIZE, split_seed=SPLIT_SEED)
    return {"suite": name, "rows": [r for r in rows if r["method"].endswith("similarity")],
            "knn_vote": {r["retriever"]: r["value"] for r in rows
                         if r["method"].endswith("knn-vote")},
            "feedback": label_agreement(feedback, {r["id"]: r["label"] for r in suite.pool}),
            "cards": cards, "seconds": clock.totals()}


def wall_clock(work: Path, name: str, n_queries: int, n_candidates: int) -> _WallClock:
    """The wall times of one suite's feedback and retrievers, shared by every study that
    builds them at these settings (``eval.experiments.ceil_udr`` reuses them)."""
    return _WallClock(work / name / f"wall-seconds-q{n_queries}-L{n_candidates}.json")


def scored_feedback(suite, corpus, n_queries: int, n_candidates: int, work: Path, lm,
                    progress: bool, retriever="bm25", round_two_of: str | None = None) -> Path:
    """The suite's first ``n_queries`` pool examples, each with ``n_candidates`` candidates
    scored by the LM (resumed where it stopped, done at once if it is done); round two's
    candidates come from the round-one retriever of the loss ``round_two_of``."""
    from training.feedback import score_candidates

    tag = f"r2-{round_two_of}-" if round_two_of else ""
    clock = wall_clock(work, suite.name, n_queries, n_candidates)
    with clock(f"score {round_two_of}-r2" if round_two_of else "score"):
        return score_candidates(corpus, list(corpus)[:n_queries], suite.template,
                                work / suite.name / f"feedback-{tag}q{n_queries}-L{n_candidates}.jsonl",
                                retriever=retriever, n_candidates=n_candidates, lm=lm,
                                progress=progress)


def trained_retriever(feedback: Path, corpus, name: str, loss: str, n_queries: int,
                      n_candidates: int, work: Path, progress: bool, base_model=None,
                      tag: str | None = None) -> Path:
    """The retriever trained with ``loss`` on ``feedback`` (one epoch), resumed or found done."""
    from training.train import train_retriever

    tag = tag or loss
    with wall_clock(work, name, n_queries, n_candidates)(f"train {tag}"):
        return train_retriever(feedback, corpus, work / name / f"{tag}-q{n_queries}", loss=loss,
                               base_model=base_model, progress=progress)


def label_agreement(feedback: Path, labels: dict[str, str]) -> dict[str, float]:
    """What the LM's feedback rewards, in terms of labels: how often the best-scored
    candidate has the query's label (against the retriever's own first candidate), and
    the mean gain over zero-shot of same-label and other-label candidates (nats)."""
    import numpy as np

    from training.feedback import read_feedback

    _, records = read_feedback(feedback)
    lm_top, retriever_top, same_gain, other_gain, share = [], [], [], [], []
    for record in records:
        same = np.array([labels[c] == record.answer for c in record.candidates])
        gains = np.asarray(record.lm_scores) - record.zero_shot
        lm_top.append(same[int(np.argmax(record.lm_scores))])
        retriever_top.append(same[int(np.argmax(record.retriever_scores))])
        share.append(same.mean())
        same_gain.extend(gains[same])
        other_gain.extend(gains[~same])
    return {"same_label_share": float(np.mean(share)), "lm_top_same": float(np.mean(lm_top)),
            "retriever_top_same": float(np.mean(retriever_top)),
            "gain_same": float(np.mean(same_gain)) if same_gain else float("nan"),
            "gain_other": float(np.mean(other_gain)) if other_gain else float("nan")}


class _WallClock:
    """Wall seconds per step, summed over every run that worked on the step.

    Each step resumes, so a rerun that finds a step done adds almost nothing, and a
    step interrupted and resumed is charged for both runs. The totals live beside the
    step's outputs, so the summary reports the work that built them, not this run's
    share of it.
    """

    def __init__(self, path: Path):
        self.path = path

    def totals(self) -> dict[str, float]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    @contextmanager
    def __call__(self, step: str):
        from ricl.io import atomic_write_text

        started = time.perf_counter()
        try:
            yield
        finally:
            totals = self.totals()
            totals[step] = totals.get(step, 0.0) + time.perf_counter() - started
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(totals, indent=2) + "\n")


_TITLES = {"contrastive": "contrastive (EPR)", "distill": "distill (LLM-R)"}


def _p(value: float, prose: bool = False) -> str:
    if value < 0.001:
        return "< 0.001" if prose else "<0.001"
    return f"= {value:.3f}" if prose else f"{value:.3f}"


def paired_test(out_dir: Path, row_a: dict, row_b: dict):
    """The exact McNemar test of two grid rows on the test items both predicted."""
    from eval import metrics
    from ricl.jsonl_store import read_jsonl

    def correct(row):
        return {p["id"]: bool(p["correct"]) for p in read_jsonl(out_dir / row["predictions"])}

    a, b = correct(row_a), correct(row_b)
    ids = sorted(a.keys() & b.keys())
    return metrics.mcnemar_exact([a[i] for i in ids], [b[i] for i in ids])


def write_summary(results: Sequence[dict], out_dir: Path, n_queries: int,
                  n_candidates: int) -> Path:
    from ricl.io import atomic_write_text

    def paired(row_a, row_b):
        return paired_test(out_dir, row_a, row_b)

    def title(name):
        if name.endswith("-r2"):
            return f"{_TITLES.get(name[:-3], name[:-3])}, round 2"
        return _TITLES.get(name, name)

    trained = list(dict.fromkeys(name for result in results for name in result["cards"]))
    lines = [f"# Trained retrievers against the base embedder ({n_queries} training queries, "
             f"L={n_candidates}, k={K}, {N_TEST} test items)", "",
             "Dense similarity selection with the packaged all-MiniLM-L6-v2 (base) and with "
             "retrievers fine-tuned on the default LM's feedback (bfloat16 scoring); round 2 "
             "re-mines the candidates with the round-1 retriever, re-scores them and trains "
             "on from it. p: exact McNemar test against the base on the same test items. "
             "Reproduce: `python -m eval.experiments.trained --out eval/results/trained`.", "",
             "| suite | base | " + " | ".join(f"{title(name)} | p" for name in trained) + " |",
             "|---|---|" + "---|---|" * len(trained)]
    gains = {name: [] for name in trained}
    for result in results:
        by = {row["retriever"]: row for row in result["rows"]}
        base = by["base"]
        cells = [f"{base['value']:.3f} ± {base['stderr']:.3f}"]
        for name in trained:
            row = by.get(name)
            if row is None:
                cells += ["—", ""]
                continue
            test = paired(base, row)
            cells += [f"{row['value']:.3f} ± {row['stderr']:.3f}", _p(test.p_value)]
            gains[name].append(row["value"] - base["value"])
        lines.append(f"| {result['suite']} | " + " | ".join(cells) + " |")
    lines.append("| mean gain | | " + " | | ".join(
        f"{sum(g) / len(g):+.3f}" + (f" ({len(g)} of {len(results)} suites)"
                                     if len(g) < len(results) else "")
        for g in gains.values()) + " | |")
    rounds = []
    for result in results:
        by = {row["retriever"]: row for row in result["rows"]}
        for name in (n for n in trained if n.endswith("-r2") and n in by):
            test = paired(by[name[:-3]], by[name])
            before, after = by[name[:-3]]["value"], by[name]["value"]
            rounds.append(f"{result['suite']} {before:.3f} → {after:.3f} ({test.only_b} items "
                          f"fixed, {test.only_a} broken, p {_p(test.p_value, prose=True)})")
    if rounds:
        lines += ["", "Round 2 against round 1, same loss (exact McNemar): "
                  + "; ".join(rounds) + "."]
    lines += ["", "Training losses (first → last logged) and wall times (2 CPU cores, shared; "
              "summed over the runs that worked on each step):", "",
              "| suite | " + " | ".join(f"{title(name)} loss" for name in trained) +
              " | score s | train s | evaluate s |", "|---|" + "---|" * (len(trained) + 3)]
    for result in results:
        cards, t = result["cards"], result["seconds"]
        losses = [f"{cards[name]['initial_loss']:.3f} → {cards[name]['final_loss']:.3f}"
                  if name in cards else "—" for name in trained]
        score = sum(v for k, v in t.items() if k.startswith("score"))
        train = sum(v for k, v in t.items() if k.startswith("train"))
        lines.append(f"| {result['suite']} | " + " | ".join(losses) +
                     f" | {score:.0f} | {train:.0f} | {t['evaluate']:.0f} |")
    lines += ["", "What the feedback rewards, and what the retrievers learned: how often the "
              "candidate the LM scores best carries the query's label (against the one BM25 "
              "ranks first), the mean gain over zero-shot of same-label and other-label "
              "candidates (round-1 feedback), and the kNN vote of each retriever (the majority "
              "label of its 8 demonstrations, no LM): how well it finds same-label "
              "demonstrations.", "",
              "| suite | same-label share of candidates | best by LM has the label | first by "
              "BM25 has the label | gain, same label (nats) | gain, other label (nats) | "
              "kNN vote: base | " + " | ".join(title(name) for name in trained) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(trained)]
    for result in results:
        f, vote = result["feedback"], result["knn_vote"]
        lines.append(f"| {result['suite']} | {f['same_label_share']:.2f} | {f['lm_top_same']:.2f} | "
                     f"{f['retriever_top_same']:.2f} | {f['gain_same']:+.2f} | "
                     f"{f['gain_other']:+.2f} | {vote['base']:.3f} | " +
                     " | ".join(f"{vote[name]:.3f}" if name in vote else "—" for name in trained)
                     + " |")
    path = out_dir / "trained.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "trained.json", json.dumps(
        [{k: v for k, v in r.items() if k != "rows"} for r in results], indent=2) + "\n")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=list(SUITES))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-L", "--candidates", type=int, default=20)
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/trained)")
    parser.add_argument("--second-round", nargs="+", default=[], choices=LOSSES,
                        help="re-mine candidates with these round-1 retrievers, re-score and "
                             "train on (iterative mining, as in UDR and LLM-R)")
    parser.add_argument("--second-round-suites", nargs="+",
                        help="suites that get the second round (default: every --suite)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ricl.lm import TransformersLM

    lm = TransformersLM(dtype=DTYPE)
    out_dir, work = Path(args.out), work_dir()
    results = []
    for name in args.suite:  # the summary is rewritten after each suite
        second = args.second_round if name in (args.second_round_suites or args.suite) else ()
        results.append(run_suite(name, args.queries, args.candidates, out_dir, work, lm,
                                 progress=not args.quiet, second_round=second))
        print(write_summary(results, out_dir, args.queries, args.candidates))


if __name__ == "__main__":
    main()
