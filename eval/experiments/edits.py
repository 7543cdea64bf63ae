"""Corrections that take effect at once: an edit stream into a live demonstration pool.

    python -m eval.experiments.edits --out eval/results/edits [--steps 10] [--per-step 10]

TREC (5,000-demo pool, 200 test questions, split seed 0), the default LM in bfloat16,
dense retrieval, similarity, k=8, the suite's template. The pool starts as it is; a
stream of corrections goes in ``--per-step`` at a time through ``PromptBuilder.add`` /
``update``, with no rebuild and no weights touched (in-context knowledge editing, Zheng
et al. 2023; the retrieval analogue of lifelong editing such as GRACE, Hartvigsen et al.
2023). Two streams:

- **errors** (``add``): TREC questions outside the pool and the test set that the model
  gets wrong with the starting pool. A seeded shuffle of them: the first ones are the
  corrections (added with their gold label), the next ones held out.
- **relabel** (``update``, the flipped-labels case): the taxonomy changes, ``location``
  questions are now ``entity``. Pool questions labelled location are relabelled (a
  seeded sample, upserted by id); held out: location questions outside pool and test set,
  which should move to the new label though never added.

After each step, per stream: **edit success** (the corrections so far, asked as they
are, answered with their new label; the builder keeps a query's own row,
``exclude_self=False``, as a deployed system would), **generalisation** (held-out items
of the same kind answered with the new label), **locality** (accuracy on 120 test
questions not labelled location: unrelated items must not drop) and **cost** (seconds of
the ``add``/``update`` call, against a full rebuild of the final pool, embedding
included, timed once per stream).

The comparison: the same stream appended as plain extra demonstrations without
retrieval. Each prompt keeps the 8 demos the unchanged pool retrieves and gets 2
corrections drawn at random (a fixed random order per question, restricted to the
corrections streamed so far) at random positions among them, so it even has 10 demos.

Every prompt's label scores are kept in ``scores.jsonl`` as they come (keyed by the
prompt text's hash), so a run resumes where it stopped: the stream is replayed (cheap)
and only unscored prompts go to the LM. ``results.jsonl``, ``edits.md`` and ``edits.png``
are rewritten at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SUITE, N_TEST, POOL, SPLIT_SEED = "trec", 200, 5000, 0
K, EXTRA = 8, 2  # retrieved demos; corrections the comparison appends at random
OLD_LABEL, NEW_LABEL = "location", "entity"
N_HELD_OUT, N_LOCALITY = 80, 120
DTYPE = "bfloat16"
CONDITIONS = ("retrieval", "appended")
STREAMS = ("errors", "relabel")


@dataclass(frozen=True)
class Stream:
    """One stream: the corrections in order (records with their new label), the held-out
    items (with the label they should get) and how corrections go in."""

    name: str
    verb: str  # "add" or "update"
    corrections: tuple[dict[str, Any], ...]
    held_out: tuple[dict[str, Any], ...]


class ScoreCache:
    """Label log-probs per prompt text, appended to ``scores.jsonl`` as they are scored."""

    def __init__(self, path: Path, lm: Any, labels: Sequence[str], answer_prefix: str):
        from ricl.jsonl_store import JsonlStore

        self.store = JsonlStore(path, key=lambda row: row["prompt"])
        self.lm, self.labels, self.answer_prefix = lm, tuple(labels), answer_prefix

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def predict(self, texts: Sequence[str]) -> list[str]:
        from ricl.inference import classify

        todo = list(dict.fromkeys(t for t in texts if self.key(t) not in self.store))
        for start in range(0, len(todo), 64):  # a kill loses at most one chunk
            chunk = todo[start:start + 64]
            scored = classify(self.lm, chunk, self.labels, self.answer_prefix)
            self.store.append([{"prompt": self.key(t), "log_probs": [round(float(x), 5)
                                                                     for x in row]}
                               for t, row in zip(chunk, scored.log_probs)])
        return [self.labels[int(np.argmax(self.store.get(self.key(t))["log_probs"]))]
                for t in texts]


def make_streams(suite, leftover: Sequence[dict[str, Any]], base_predictions: Sequence[str],
                 steps: int, per_step: int, seed: int) -> list[Stream]:
    rng = np.random.default_rng(seed)
    n = steps * per_step
    wrong = [r for r, p in zip(leftover, base_predictions) if p != r["label"]]
    wrong = [wrong[i] for i in rng.permutation(len(wrong))]
    errors = Stream("errors", "add", tuple(wrong[:n]), tuple(wrong[n:n + N_HELD_OUT]))
    located = [r for r in suite.pool if r["label"] == OLD_LABEL]
    chosen = [located[i] for i in rng.permutation(len(located))[:n]]
    outside = [r for r in leftover if r["label"] == OLD_LABEL][:N_HELD_OUT]
    relabel = Stream("relabel", "update", tuple({**r, "label": NEW_LABEL} for r in chosen),
                     tuple({**r, "label": NEW_LABEL} for r in outside))
    return [errors, relabel]


class Appended:
    """The comparison: the unchanged builder's prompt plus ``EXTRA`` corrections chosen
    without retrieval, at random positions."""

    def __init__(self, builder: Any, corrections: Sequence[dict[str, Any]], seed: int):
        self.builder, self.seed = builder, seed
        output = builder.corpus.output_name
        self.demos = [{"text": r["text"], "input": r["text"], output: r["label"],
                       "output": r["label"]} for r in corrections]

    def prompts(self, queries: Sequence[str], streamed: int) -> list[str]:
        built = self.builder.build_many(list(queries))
        texts = []
        for query, prompt in zip(queries, built):
            digest = int(hashlib.sha1(query.encode("utf-8")).hexdigest()[:12], 16)
            rng = np.random.default_rng([self.seed, digest])
            order = rng.permutation(len(self.demos))
            extra = [self.demos[i] for i in order if i < streamed][:EXTRA]
            output = self.builder.corpus.output_name
            demos = [{**demo.fields, "input": demo.fields["text"], output: demo.output,
                      "output": demo.output}
                     for demo in sorted(prompt.demos, key=lambda d: d.position)]
            for demo, slot in zip(extra, rng.integers(0, len(demos) + EXTRA, size=EXTRA)):
                demos.insert(int(min(slot, len(demos))), demo)
            texts.append(self.builder.layout.compose(demos, {"text": query,
                                                             "input": query})[0])
        return texts


def accuracy(predictions: Sequence[str], wanted: Sequence[str]) -> float | None:
    return float(np.mean([p == w for p, w in zip(predictions, wanted)])) if wanted else None


def run(out_dir: str | Path, steps: int = 10, per_step: int = 10, seed: int = 0,
        lm: Any = None) -> Path:
    """Run (or resume) both streams; return the path of ``edits.md``."""
    from eval.suites import load_suite
    from retrievers import DenseRetriever
    from ricl.builder import PromptBuilder
    from ricl.data import Corpus
    from ricl.io import claim_dir

    out = claim_dir(out_dir, "edits-study")
    if lm is None:
        from ricl.lm import TransformersLM

        lm = TransformersLM(dtype=DTYPE)
    suite = load_suite(SUITE, n_test=N_TEST, pool_size=POOL, seed=SPLIT_SEED)
    everything = load_suite(SUITE, n_test=N_TEST, pool_size=None, seed=SPLIT_SEED)
    leftover = list(everything.pool[len(suite.pool):])  # in neither pool nor test set
    corpus = Corpus.from_records(suite.pool, input="text", output="label", labels=suite.labels)
    embedder = DenseRetriever()
    vectors = embedder.encode(corpus.texts(), progress=True)

    def builder() -> PromptBuilder:
        retriever = DenseRetriever().index(corpus, embeddings=vectors)
        return PromptBuilder(corpus, retriever=retriever, k=K, template=suite.template,
                             tokenizer=lm, exclude_self=False)

    unchanged = builder()
    cache = ScoreCache(out / "scores.jsonl", lm, suite.labels, unchanged.layout.answer_prefix)

    def predict(target: PromptBuilder, records: Sequence[dict[str, Any]]) -> list[str]:
        return cache.predict([p.text for p in target.build_many([r["text"] for r in records])])

    base = predict(unchanged, leftover)
    locality = [r for r in suite.test if r["label"] != OLD_LABEL][:N_LOCALITY]
    rows = []
    for stream in make_streams(suite, leftover, base, steps, per_step, seed):
        live, appended = builder(), Appended(unchanged, stream.corrections, seed)
        edits = list(stream.corrections)
        wanted_held = [r["label"] for r in stream.held_out]
        for step in range(steps + 1):
            seconds = None
            if step:
                batch = edits[(step - 1) * per_step:step * per_step]
                started = time.perf_counter()
                getattr(live, stream.verb)([dict(r) for r in batch])
                seconds = time.perf_counter() - started
            streamed = step * per_step
            asked = edits[:streamed] if step else edits  # step 0: all, before any edit
            for condition in CONDITIONS:
                if condition == "retrieval":
                    got = [predict(live, part) for part in (asked, stream.held_out, locality)]
                else:
                    got = [cache.predict(appended.prompts([r["text"] for r in part], streamed))
                           for part in (asked, stream.held_out, locality)]
                rows.append({
                    "stream": stream.name, "condition": condition, "step": step,
                    "corrections": streamed,
                    "edit_success": accuracy(got[0], [r["label"] for r in asked]),
                    "generalisation": accuracy(got[1], wanted_held),
                    "locality": accuracy(got[2], [r["label"] for r in locality]),
                    "n_edits": len(asked), "n_held_out": len(wanted_held),
                    "n_locality": len(locality),
                    "update_seconds": seconds if condition == "retrieval" else None})
                log.info("%s/%s step %d: %s", stream.name, condition, step, rows[-1])
        started = time.perf_counter()
        PromptBuilder(live.corpus, retriever="dense", k=K, template=suite.template,
                      tokenizer=lm).index()
        rows.append({"stream": stream.name, "condition": "rebuild", "step": steps,
                     "rebuild_seconds": time.perf_counter() - started,
                     "corpus_size": len(live.corpus), "n_corrections": len(edits)})
    return write_outputs(out, rows, steps, per_step, len(leftover),
                         sum(p != r["label"] for r, p in zip(leftover, base)))


def write_outputs(out: Path, rows: list[dict[str, Any]], steps: int, per_step: int,
                  n_leftover: int, n_wrong: int) -> Path:
    import json

    from ricl.io import atomic_write_text

    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    plot = plot_streams(out / "edits.png", rows)

    def cell(value):
        return "—" if value is None else f"{value:.2f}"

    lines = ["# Corrections that take effect at once: an edit stream into the pool", "",
             f"TREC, {POOL:,}-demo pool, default LM (SmolLM2-135M-Instruct, {DTYPE}), dense "
             f"similarity, k={K}. Corrections go in {per_step} at a time through "
             "`PromptBuilder.add` (errors) or `update` (relabel), no rebuild. *retrieval*: "
             "the corrections are in the index; *appended*: the unchanged pool's prompt plus "
             f"{EXTRA} corrections drawn at random. errors: {n_wrong} of the {n_leftover} "
             "TREC questions outside pool and test set are answered wrong at the start; the "
             f"corrections are {steps * per_step} of them, held out the next "
             f"{N_HELD_OUT}. relabel: `{OLD_LABEL}` becomes `{NEW_LABEL}` for "
             f"{steps * per_step} pool questions; held out: {N_HELD_OUT} location questions "
             f"outside pool and test set. Locality: {N_LOCALITY} test questions not labelled "
             f"`{OLD_LABEL}` (accuracy against their gold labels). Step 0 edit success: all "
             "corrections before any edit. Reproduce: "
             f"`python -m eval.experiments.edits --out eval/results/edits --steps {steps} "
             f"--per-step {per_step}`.", ""]
    for stream in STREAMS:
        got = {(r["condition"], r["step"]): r for r in rows if r["stream"] == stream}
        rebuild = got.get(("rebuild", steps), {})
        lines += [f"## {stream}", "",
                  "| corrections | edit success (retrieval / appended) | generalisation "
                  "(retrieval / appended) | locality (retrieval / appended) | update (s) |",
                  "|---|---|---|---|---|"]
        for step in range(steps + 1):
            a, b = got.get(("retrieval", step)), got.get(("appended", step))
            if a is None or b is None:
                continue
            lines.append(f"| {a['corrections']} | {cell(a['edit_success'])} / "
                         f"{cell(b['edit_success'])} | {cell(a['generalisation'])} / "
                         f"{cell(b['generalisation'])} | {cell(a['locality'])} / "
                         f"{cell(b['locality'])} | {cell(a['update_seconds'])} |")
        updates = [r["update_seconds"] for r in got.values() if r.get("update_seconds")]
        if rebuild and updates:
            lines += ["", f"Cost: {np.mean(updates):.2f} s per update of {per_step} "
                          f"(mean of {len(updates)}) against {rebuild['rebuild_seconds']:.0f} s "
                          f"to rebuild the {rebuild['corpus_size']:,}-demo index (embedding "
                          f"included): {rebuild['rebuild_seconds'] / np.mean(updates):.0f}× "
                          "faster.", ""]
    lines += ["", f"![edit stream]({plot.name})"]
    path = out / "edits.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def plot_streams(path: Path, rows: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ricl.io import atomic_file

    metrics = (("edit_success", "edit success"), ("generalisation", "generalisation (held out)"),
               ("locality", "locality (unrelated accuracy)"))
    fig, axes = plt.subplots(len(STREAMS), len(metrics), figsize=(12, 6.5), sharex=True)
    for i, stream in enumerate(STREAMS):
        for j, (key, title) in enumerate(metrics):
            ax = axes[i][j]
            for condition, style in zip(CONDITIONS, ("-o", "--s")):
                points = sorted((r for r in rows if r["stream"] == stream
                                 and r["condition"] == condition and r.get(key) is not None),
                                key=lambda r: r["step"])
                ax.plot([r["corrections"] for r in points], [r[key] for r in points], style,
                        markersize=4, label=f"{condition}")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{stream}: {title}", fontsize=10)
            if i == len(STREAMS) - 1:
                ax.set_xlabel("corrections streamed in")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Edit stream on TREC (k={K}, default LM): corrections through the index "
                 "(retrieval) vs appended at random", fontsize=11)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/edits)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--per-step", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.out, args.steps, args.per_step, args.seed).read_text())


if __name__ == "__main__":
    main()
