"""Prompts that share prefixes: what batch-aware demo order costs in accuracy, and saves in tokens.

    python -m eval.experiments.prefix_order --out eval/results/prefix_order [--suite trec agnews sst2]
        [--cache-dir DIR]

Per suite (pool 5,000, k=8, dense similarity, the default LM in bfloat16; the batches of
``eval.benchmarks.prefix_sharing``): the 200 test items are scored with prompts built

- with today's order (similar-last) in the batch of the 200 test items;
- with ``build_many(share_prefixes=True)`` (similar_last=2, the default) in that batch;
- with ``share_prefixes=True`` inside the batch of 5,000 queries (the test items first,
  then the suite's items outside the pool, as many as exist: TREC 869), similar_last 2
  and 1, with the ``SharingSelector`` knob at tolerance 0.05, 0.1 and 0.2, and with the
  ``ClusterSelector`` (groups of up to 16 queries open with the same 4 or 6 demos).

A test item's prompt depends on its batch (the other queries decide the order), so each
setting's accuracy is measured on the prompts the test items get in that batch, and its
cost is the batch's prompt tokens that a prefix cache still computes, per query, against
today's (every token computed). p: exact McNemar test against similar-last on the same
items. Scoring runs over a radix tree (``TransformersLM(share_prefixes=True)``), the same
for every setting; identical prompts are scored once. Resumable: scores are kept in
``scores.jsonl``. Writes ``prefix_order.md``, ``accuracy_vs_tokens.png`` and
``results.json``, after each suite (a stopped run keeps the suites it finished).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SUITES = ("trec", "agnews", "sst2")
DTYPE = "bfloat16"
SETTINGS = (  # (label, batch, share_prefixes, similar_last, selector: SharingSelector
    #             tolerance, or "cluster-H" for ClusterSelector(head=H); see prefix_sharing)
    ("similar-last", 200, False, 2, 0.0),
    ("share_prefixes", 200, True, 2, 0.0),
    ("share_prefixes", 5000, True, 2, 0.0),
    ("share_prefixes, similar_last=1", 5000, True, 1, 0.0),
    ("share_prefixes + sharing 0.05", 5000, True, 2, 0.05),
    ("share_prefixes + sharing 0.1", 5000, True, 2, 0.1),
    ("share_prefixes + sharing 0.2", 5000, True, 2, 0.2),
    ("share_prefixes + cluster head 4", 5000, True, 2, "cluster-4"),
    ("share_prefixes + cluster head 6", 5000, True, 2, "cluster-6"),
)
BASELINE = SETTINGS[0]
SCORE_CHUNK = 40  # prompts per LM call between saves


def _key(suite: str, text: str) -> str:
    return f"{suite}:{hashlib.sha1(text.encode('utf-8')).hexdigest()}"


def run(out_dir: str | Path, suites=SUITES, cache_dir: Path | None = None) -> Path:
    from eval.benchmarks.prefix_sharing import N_TEST, load_batch, remember_queries
    from ricl.io import claim_dir
    from ricl.jsonl_store import JsonlStore
    from ricl.lm import TransformersLM

    out = claim_dir(out_dir, "prefix-order-study")  # never a user's own directory
    scores = JsonlStore(out / "scores.jsonl", key=lambda row: row["key"])
    lm = None
    rows = []
    for name in suites:
        batch = load_batch(name, max(s[1] for s in SETTINGS), cache_dir)
        remember_queries(batch, cache_dir)
        gold = [r["label"] for r in batch.suite.test]
        built, today = {}, {}
        for setting in SETTINGS:
            label, size, share, similar_last, selector = setting
            builder = batch.builder(selector)
            queries = batch.queries[:size]
            prompts = builder.build_many(queries, share_prefixes=share, similar_last=similar_last)
            schedule = builder.prefix_schedule(prompts)
            if len(queries) not in today:  # every token of today's prompts is computed
                plain = prompts if not share and not selector else batch.builder().build_many(queries)
                today[len(queries)] = builder.prefix_schedule(plain).total_tokens / len(queries)
            built[setting] = ([p.text for p in prompts[:N_TEST]], schedule, len(queries))
        todo = sorted({t for texts, _, _ in built.values() for t in texts if _key(name, t) not in scores})
        if todo:
            lm = lm or TransformersLM(dtype=DTYPE, share_prefixes=True)
            choices = [" " + label for label in batch.labels]
            for start in range(0, len(todo), SCORE_CHUNK):
                part = todo[start:start + SCORE_CHUNK]
                values = lm.score_choices(part, choices)
                scores.append([{"key": _key(name, t), "log_probs": v.tolist()} for t, v in zip(part, values)])
                log.info("%s: scored %d of %d prompts", name, start + len(part), len(todo))
        for setting, (texts, schedule, n_queries) in built.items():
            predicted = [batch.labels[int(np.argmax(scores.get(_key(name, t))["log_probs"]))] for t in texts]
            correct = [p == g for p, g in zip(predicted, gold)]
            rows.append({"suite": name, "setting": setting[0], "index": SETTINGS.index(setting),
                         "batch": n_queries,
                         "similar_last": setting[3], "selector": setting[4],
                         "accuracy": float(np.mean(correct)), "n": len(correct), "correct": correct,
                         "computed_per_query": schedule.computed_tokens / n_queries,
                         "today_per_query": today[n_queries], "shared": schedule.ratio})
        report = publish(rows, out)  # after every suite: a stopped run keeps the finished ones
    return report


def publish(rows: list[dict], out: Path) -> Path:
    from ricl.io import write_json

    write_json(out / "results.json", rows)
    plot(rows, out / "accuracy_vs_tokens.png")
    return write_table(rows, out)


def write_table(rows: list[dict], out: Path) -> Path:
    from eval.metrics import mcnemar_exact
    from ricl.io import atomic_write_text

    lines = ["# Batch-aware demo order: accuracy against computed prompt tokens", "",
             f"Default LM (SmolLM2-135M-Instruct, {DTYPE}), pool 5,000, k=8, dense similarity; "
             "accuracy on the 200 test items, with the prompts they get in the given batch. "
             "computed/query: the batch's prompt tokens a prefix cache still computes (trie order), "
             "per query; x fewer: against today's, where `score_choices` computes every token. "
             "p: exact McNemar test against similar-last on the same items. Reproduce: "
             "`python -m eval.experiments.prefix_order --out eval/results/prefix_order`.", "",
             "| suite | setting | batch | accuracy | vs similar-last | fixed / broken | p | "
             "computed/query | x fewer |", "|---|---|---|---|---|---|---|---|---|"]
    base = {r["suite"]: r for r in rows if r["index"] == 0}
    for r in rows:
        b = base[r["suite"]]
        se = math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / r["n"])
        fixed = sum(x and not y for x, y in zip(r["correct"], b["correct"]))
        broken = sum(y and not x for x, y in zip(r["correct"], b["correct"]))
        p = "-" if r is b else f"{mcnemar_exact(r['correct'], b['correct']).p_value:.3g}"
        lines.append(f"| {r['suite']} | {r['setting']} | {r['batch']} | {r['accuracy']:.3f} ± {se:.3f} | "
                     f"{r['accuracy'] - b['accuracy']:+.3f} | {fixed} / {broken} | {p} | "
                     f"{r['computed_per_query']:.1f} | {r['today_per_query'] / r['computed_per_query']:.2f}x |")
    path = out / "prefix_order.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^vPX*h"
    fig, ax = plt.subplots(figsize=(8.5, 6.2))
    for color, suite in zip(("tab:blue", "tab:orange", "tab:green"), dict.fromkeys(r["suite"] for r in rows)):
        for r in (r for r in rows if r["suite"] == suite):
            x = r["computed_per_query"] / r["today_per_query"]
            se = math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / r["n"])
            ax.errorbar(x, r["accuracy"], yerr=se, color=color, alpha=0.35, capsize=2, zorder=2)
            ax.scatter(x, r["accuracy"], color=color, marker=markers[r["index"]], s=60, zorder=3,
                       edgecolors="black", linewidths=0.4)
        ax.scatter([], [], color=color, label=suite)
    for s, m in zip(SETTINGS, markers):
        size = "up to 5,000" if s[1] == 5000 else s[1]  # TREC has 869 queries
        ax.scatter([], [], color="grey", marker=m, label=f"{s[0]} (batch {size})")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.annotate("goal: 2x fewer", (0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", color="grey", fontsize=8)
    ax.set_xlabel("prompt tokens computed per query, relative to today (1 = every token)")
    ax.set_ylabel("accuracy on the 200 test items (bars: ±1 standard error)")
    ax.set_xlim(0.4, 1.02)
    ax.set_title("Batch-aware demo order: accuracy vs computed tokens (k=8, SmolLM2-135M)")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", nargs="+", default=list(SUITES))
    parser.add_argument("--out", required=True,
                        help="results directory (the published run: eval/results/prefix_order)")
    parser.add_argument("--cache-dir", type=Path, help="keep pool and query embeddings here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.out, args.suite, args.cache_dir).read_text())


if __name__ == "__main__":
    main()
