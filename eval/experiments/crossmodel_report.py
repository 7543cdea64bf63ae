"""The cross-model summary: ``crossmodel.md``, ``crossmodel.json`` and ``models.png``.

Reads the Gemma grid (``OUT/gemma3-270m/results.jsonl``), the SmolLM2 headline run
and the transfer grid (``OUT/transfer/results.jsonl``); computes nothing with an LM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from eval.experiments.crossmodel import MODELS, NEW_MODEL

TITLES = {"smollm2-135m": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma 3 270M (base)"}
SIMILARITY = "dense + similarity"
HEADLINE_LM_ROWS = ("zero-shot", "dense + random", "bm25 + similarity", SIMILARITY, "dense + dpp",
                    "dense + mmr", "dense + coverage", "dense + votek")
RANDOM = "dense + random"


def _entries(results: Path) -> dict[tuple, Any]:
    from eval.report import group_entries
    from ricl.jsonl_store import read_jsonl

    return group_entries(read_jsonl(results)) if results.exists() else {}


def _lm_methods(entries: dict, suite: str) -> list[str]:
    """The methods that ask the LM (zero-shot and every retriever + selector), k=8 or 0."""
    return sorted({e.method for e in entries.values()
                   if e.suite == suite and e.first.get("uses_lm") and e.k in (0, 8)})


def _value(entries: dict, method: str, suite: str) -> float | None:
    for k in (8, 0, None):
        entry = entries.get((method, suite, k))
        if entry is not None:
            return entry.mean
    return None


def _correct(run_dir: Path, row: dict) -> dict[str, bool]:
    from ricl.jsonl_store import read_jsonl

    return {p["id"]: bool(p["correct"]) for p in read_jsonl(run_dir / row["predictions"])}


def _mcnemar(run_dir: Path, row_a: dict, row_b: dict):
    from eval import metrics

    a, b = _correct(run_dir, row_a), _correct(run_dir, row_b)
    ids = sorted(a.keys() & b.keys())
    return metrics.mcnemar_exact([a[i] for i in ids], [b[i] for i in ids])


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def kendall(entries_a: dict, entries_b: dict, suite: str) -> dict[str, Any]:
    """Kendall's tau-b between two models' accuracies over the LM methods both ran."""
    from scipy.stats import kendalltau

    methods = sorted(set(_lm_methods(entries_a, suite)) & set(_lm_methods(entries_b, suite)))
    a = [_value(entries_a, m, suite) for m in methods]
    b = [_value(entries_b, m, suite) for m in methods]
    if len(methods) < 3:
        return {"methods": methods, "tau": None, "p": None}
    result = kendalltau(a, b)
    return {"methods": methods, "tau": float(result.statistic), "p": float(result.pvalue),
            "best": [max(methods, key=lambda m, v=v: v[methods.index(m)]) for v in (a, b)]}


def label_copying(run_dir: Path, row: dict, pool_labels: dict[str, str]) -> dict[str, float]:
    """How often the LM's answer is the demos' majority label, and the label of the
    demo nearest the query (the last one under similar-last), against how often those
    labels are right."""
    from types import SimpleNamespace

    from eval.metrics import knn_vote
    from ricl.jsonl_store import read_jsonl

    copies_vote = copies_last = vote_right = last_right = n = 0
    for p in read_jsonl(run_dir / row["predictions"]):
        ids = p.get("demo_ids") or ()
        if not ids:
            continue
        # demo_ids are in prompt order, the nearest last: rank 0 is the last one
        demos = [SimpleNamespace(output=pool_labels[i], score=score, rank=len(ids) - 1 - pos)
                 for pos, (i, score) in enumerate(zip(ids, p["demo_scores"]))]
        vote = knn_vote(demos)
        nearest = min(demos, key=lambda d: (-d.score, d.rank)).output
        n += 1
        copies_vote += p["prediction"] == vote
        copies_last += p["prediction"] == nearest
        vote_right += vote == p["gold"]
        last_right += nearest == p["gold"]
    return {"n": n, "copies_vote": copies_vote / n, "copies_nearest": copies_last / n,
            "vote_right": vote_right / n, "nearest_right": last_right / n}


def _bias(counts: dict[str, int]) -> float:
    """Share of the most predicted label: 1/labels is no bias, 1.0 is collapse."""
    total = sum(counts.values())
    return max(counts.values()) / total if total else float("nan")


def write_summary(out: Path, headline: Path, suites: Sequence[str],
                  transfer_suites: Sequence[str], n_queries: int = 300,
                  order_suites: Sequence[str] = ()) -> Path:
    from eval.suites import load_suite
    from ricl.io import publish_files, staging_dir

    runs = {"smollm2-135m": headline, NEW_MODEL: out / NEW_MODEL}
    entries = {model: _entries(runs[model] / "results.jsonl") for model in MODELS}
    # A suite enters the summary once both models have every headline LM row for it.
    complete = [s for s in suites if all(len(_lm_methods(entries[m], s)) >= len(HEADLINE_LM_ROWS)
                                         for m in MODELS)]
    if not complete:
        from ricl.errors import ConfigError

        raise ConfigError(f"no suite of {list(suites)} has all {len(HEADLINE_LM_ROWS)} headline "
                          f"rows for both models yet; run the grid first (without --summary-only).")
    suites = complete
    data: dict[str, Any] = {"suites": suites, "kendall": {}, "findings": {}, "copying": {},
                            "bias": {}, "transfer": {}, "order": {}}
    lines = ["# What holds across models: SmolLM2-135M-Instruct and Gemma 3 270M", "",
             "The headline rows (k = 8, 200 test items, pool 5,000, split seed 0, bfloat16) "
             "with each LM; the retrievers, selectors and demonstrations are the same, only "
             "the LM that reads the prompt differs. Random: mean of 3 seeds. Reproduce: "
             "`python -m eval.experiments.crossmodel --out eval/results/crossmodel` (the "
             "SmolLM2 rows are the published `eval/results/headline` run).", "",
             "## Accuracy", "",
             "| method | " + " | ".join(f"{s}: SmolLM2 | {s}: Gemma" for s in suites) + " |",
             "|---|" + "---|---|" * len(suites)]
    methods = list(dict.fromkeys(
        m for s in suites for m in ["majority", "zero-shot"] + _lm_methods(entries[NEW_MODEL], s)
        + ["bm25 + knn-vote", "dense + knn-vote"]))
    for method in methods:
        cells = []
        for suite in suites:
            for model in MODELS:
                value = _value(entries[model], method, suite)
                cells.append("–" if value is None else f"{value:.3f}")
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")

    lines += ["", "## Do the models rank the selectors alike?", "",
              "Kendall's tau-b between the two models' accuracies over the 8 LM rows "
              "(zero-shot, random, BM25 similarity, dense similarity, DPP, MMR, coverage, "
              "VoteK); p: two-sided test of tau = 0 (8 rows give it little power).", "",
              "| suite | tau | p | best with SmolLM2 | best with Gemma |", "|---|---|---|---|---|"]
    for suite in suites:
        k = kendall(entries["smollm2-135m"], entries[NEW_MODEL], suite)
        data["kendall"][suite] = k
        if k["tau"] is None:
            continue
        lines.append(f"| {suite} | {k['tau']:+.2f} | {_p(k['p'])} | {k['best'][0]} | "
                     f"{k['best'][1]} |")

    lines += ["", "## Which findings survive", "",
              "Gain of dense similarity over random demonstrations (the retrieval gain), of "
              "the best selector over dense similarity, and of k = 8 retrieved demos over "
              "zero-shot, per model (accuracy points).", "",
              "| suite | retrieval gain: SmolLM2 | Gemma | best selector − similarity: SmolLM2 "
              "| Gemma | similarity − zero-shot: SmolLM2 | Gemma |", "|---|---|---|---|---|---|---|"]
    for suite in suites:
        row, found = [], {}
        for what in ("retrieval", "selector", "shots"):
            for model in MODELS:
                e = entries[model]
                sim = _value(e, SIMILARITY, suite)
                if what == "retrieval":
                    gain = sim - _value(e, RANDOM, suite)
                elif what == "selector":
                    others = [_value(e, m, suite) for m in _lm_methods(e, suite)
                              if m.startswith("dense + ") and m not in (SIMILARITY, RANDOM)]
                    gain = max(others) - sim
                else:
                    gain = sim - _value(e, "zero-shot", suite)
                found[f"{what}/{model}"] = gain
                row.append(f"{100 * gain:+.1f}")
        data["findings"][suite] = found
        lines.append(f"| {suite} | " + " | ".join(row) + " |")

    lines += ["", "## Label copying (dense similarity, k = 8)", "",
              "How often the LM answers with the majority label of its 8 demonstrations "
              "(the kNN vote) or with the label of the demo nearest the query, beside how "
              "often those labels are right. An LM that copies more than the vote is right "
              "is following the demos, not the query.", "",
              "| suite | vote right | nearest right | SmolLM2 copies vote | copies nearest "
              "| Gemma copies vote | copies nearest |", "|---|---|---|---|---|---|---|"]
    pools = {}
    for suite in suites:
        split = load_suite(suite, n_test=200, pool_size=5000, seed=0)
        if split.task != "classification":
            continue
        pools[suite] = {r["id"]: r["label"] for r in split.pool}
        copy = {model: label_copying(runs[model], entries[model][(SIMILARITY, suite, 8)].first,
                                     pools[suite]) for model in MODELS}
        data["copying"][suite] = copy
        first = copy[MODELS[0]]
        lines.append(f"| {suite} | {first['vote_right']:.3f} | {first['nearest_right']:.3f} | "
                     + " | ".join(f"{copy[m]['copies_vote']:.3f} | {copy[m]['copies_nearest']:.3f}"
                                  for m in MODELS) + " |")

    lines += ["", "## Label bias", "",
              "Per-label prediction counts (200 items) zero-shot and with dense similarity "
              "(k = 8); max share: the share of the most predicted label (1/labels is no "
              "bias, 1.0 is collapse onto one label).", "",
              "| suite | gold | model | zero-shot | max share | k = 8 similarity | max share |",
              "|---|---|---|---|---|---|---|"]
    for suite in suites:
        if suite not in pools:
            continue
        for model in MODELS:
            zero = entries[model][("zero-shot", suite, 0)].first
            sim = entries[model][(SIMILARITY, suite, 8)].first
            gold = " ".join(f"{k} {v}" for k, v in zero["gold_counts"].items())
            z, s = zero["label_counts"], sim["label_counts"]
            data["bias"].setdefault(suite, {})[model] = {"zero-shot": z, "similarity": s}
            lines.append(f"| {suite} | {gold if model == MODELS[0] else ''} | {model} | "
                         + " ".join(f"{k} {v}" for k, v in z.items()) + f" | {_bias(z):.2f} | "
                         + " ".join(f"{k} {v}" for k, v in s.items()) + f" | {_bias(s):.2f} |")

    lines += _order_section(out, order_suites, data)
    lines += _transfer_section(out, transfer_suites, data, n_queries)
    with staging_dir(out) as staging:
        plot = _plot(entries, suites, staging / "models.png")
        lines += ["", "## Plot", "", f"![{plot}]({plot})", ""]
        (staging / "crossmodel.md").write_text("\n".join(lines), encoding="utf-8")
        (staging / "crossmodel.json").write_text(json.dumps(data, indent=2) + "\n")
        publish_files(out, {name: staging / name
                            for name in ("crossmodel.md", "crossmodel.json", plot)})
    return out / "crossmodel.md"


def _order_section(out: Path, order_suites: Sequence[str], data: dict) -> list[str]:
    """Accuracy of the same k = 8 demos in each order, per model, against similar-last."""
    from eval.experiments.crossmodel import ORDERS
    from ricl.jsonl_store import read_jsonl

    rows = {}
    for model in MODELS:
        results = out / "order" / model / "results.jsonl"
        for r in read_jsonl(results) if results.exists() else ():
            if r["selector"] == "similarity":  # not the LM-free kNN vote of the same demos
                rows[(model, r["suite"], r.get("order", ORDERS[0]))] = r
    suites = [s for s in order_suites
              if all((m, s, o) in rows for m in MODELS for o in ORDERS)]
    if not suites:
        return []
    lines = ["", "## Does demo order matter alike? (dense similarity, k = 8)", "",
             "The same 8 demonstrations per item, placed with the most similar last (next to "
             "the query, ricl's default), first, or in a random order. Change: accuracy "
             "points against similar-last; p: exact McNemar test on the same 200 items.", "",
             "| suite | model | " + " | ".join(ORDERS) + " | " + " | ".join(
                 f"{o}: change (p)" for o in ORDERS[1:]) + " |",
             "|---|---|" + "---|" * (2 * len(ORDERS) - 1)]
    for suite in suites:
        for model in MODELS:
            run_dir = out / "order" / model
            base = rows[(model, suite, ORDERS[0])]
            found = {o: rows[(model, suite, o)]["value"] for o in ORDERS}
            tests = {o: _mcnemar(run_dir, base, rows[(model, suite, o)]) for o in ORDERS[1:]}
            data["order"].setdefault(suite, {})[model] = {
                "accuracy": found, "p": {o: t.p_value for o, t in tests.items()}}
            lines.append(f"| {suite} | {TITLES[model]} | "
                         + " | ".join(f"{found[o]:.3f}" for o in ORDERS) + " | "
                         + " | ".join(f"{100 * (found[o] - found[ORDERS[0]]):+.1f} "
                                      f"({_p(tests[o].p_value)})" for o in ORDERS[1:]) + " |")
    return lines


def _transfer_section(out: Path, transfer_suites: Sequence[str], data: dict,
                      n_queries: int) -> list[str]:
    from ricl.jsonl_store import read_jsonl

    results = out / "transfer" / "results.jsonl"
    if not results.exists():
        return []
    rows = {(r["suite"], r["retriever"]): r for r in read_jsonl(results)
            if r["method"].endswith("similarity")}
    votes = {(r["suite"], r["retriever"]): r["value"] for r in read_jsonl(results)
             if r["method"].endswith("knn-vote")}
    lines = ["", "## Does a retriever trained on one LM's feedback help another?", "",
             "EPR (contrastive) retrievers trained as in `eval.experiments.trained` "
             f"({n_queries:,} pool queries, 20 BM25 candidates scored by the LM in bfloat16, "
             "one epoch from MiniLM-L6), "
             "on SmolLM2's feedback and on Gemma's own, both used with Gemma (dense "
             "similarity, k = 8). p: exact McNemar test on the same 200 test items. kNN "
             "vote: the majority label of each retriever's 8 demos, no LM.", "",
             "| suite | base | EPR on SmolLM2's feedback | p vs base | EPR on Gemma's feedback "
             "| p vs base | p own vs transferred | kNN vote: base / SmolLM2's / Gemma's |",
             "|---|---|---|---|---|---|---|---|"]
    for suite in transfer_suites:
        try:
            base, smol, own = (rows[(suite, name)] for name in
                               ("base", "epr-smollm2-135m", f"epr-{NEW_MODEL}"))
        except KeyError:
            continue
        run_dir = out / "transfer"
        tests = [_mcnemar(run_dir, base, smol), _mcnemar(run_dir, base, own),
                 _mcnemar(run_dir, smol, own)]
        vote = [votes.get((suite, name)) for name in ("base", "epr-smollm2-135m",
                                                       f"epr-{NEW_MODEL}")]
        data["transfer"][suite] = {"base": base["value"], "epr-smollm2": smol["value"],
                                   "epr-gemma": own["value"],
                                   "p": [t.p_value for t in tests], "knn_vote": vote}
        lines.append(f"| {suite} | {base['value']:.3f} | {smol['value']:.3f} | "
                     f"{_p(tests[0].p_value)} | {own['value']:.3f} | {_p(tests[1].p_value)} | "
                     f"{_p(tests[2].p_value)} | "
                     + " / ".join("–" if v is None else f"{v:.3f}" for v in vote) + " |")
    return lines


def _plot(entries: dict, suites: Sequence[str], path: Path) -> str:
    """Each LM row's accuracy with SmolLM2 (x) against Gemma (y), one panel per suite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted(set().union(*(_lm_methods(entries[NEW_MODEL], s) for s in suites)))
    markers = "osD^v<>Xph"
    fig, axes = plt.subplots(1, len(suites), figsize=(3.1 * len(suites) + 1.8, 3.5),
                             squeeze=False)
    for ax, suite in zip(axes[0], suites):
        points = [(m, _value(entries[MODELS[0]], m, suite), _value(entries[NEW_MODEL], m, suite))
                  for m in methods]
        points = [p for p in points if p[1] is not None and p[2] is not None]
        values = [v for _, x, y in points for v in (x, y)]
        low, high = min(values) - 0.04, max(values) + 0.04
        ax.plot([low, high], [low, high], color="0.7", linestyle=":", linewidth=1)
        for m, x, y in points:
            i = methods.index(m)
            ax.scatter(x, y, s=30, marker=markers[i % len(markers)], color=f"C{i}",
                       label=m, zorder=3, alpha=0.85)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_title(suite)
        ax.set_xlabel("SmolLM2-135M accuracy")
    axes[0][0].set_ylabel("Gemma 3 270M accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("The same k = 8 prompts read by two LMs (dotted: equal accuracy)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (3.1 * len(suites) + 1.8), 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path.name
