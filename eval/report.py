"""Reports of a grid's ``results.jsonl``: Markdown tables and PNG plots.

For every k the table has one row per method (retriever + selector, plus the
zero-shot, majority and kNN-vote baselines) and one column per suite; a cell reads
``mean ± std over seeds (n, s.e.)`` (the ± part only when there are several seeds).
The best cell per suite is bold, and a line under the table says whether its lead
over the runner-up is significant: an exact McNemar test on the per-example
predictions of both, at p < 0.05. Label-count tables show where a model
collapses onto one label; calibrated results, when present, sit beside the raw ones.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.grid.plan import KNN_VOTE, MAJORITY, ZERO_SHOT
from eval.metrics import mcnemar_exact
from ricl.errors import ConfigError
from ricl.io import publish_files, staging_dir
from ricl.jsonl_store import read_jsonl

log = logging.getLogger(__name__)

ALPHA = 0.05
REPORT = "report.md"


@dataclass(frozen=True)
class Entry:
    """One (method, suite, k) with all its seeds."""

    method: str
    suite: str
    k: int | None
    rows: tuple[dict[str, Any], ...]

    @property
    def values(self) -> np.ndarray:
        return np.array([row["value"] for row in self.rows], dtype=float)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def std(self) -> float | None:
        return float(self.values.std(ddof=1)) if len(self.rows) > 1 else None

    @property
    def stderr(self) -> float:
        return float(np.mean([row.get("stderr", np.nan) for row in self.rows]))

    @property
    def n(self) -> int:
        return int(self.rows[0]["n"])

    @property
    def first(self) -> dict[str, Any]:
        """The row of the lowest seed (deterministic methods have just one)."""
        return min(self.rows, key=lambda row: -1 if row.get("seed") is None else row["seed"])

    def calibrated_mean(self) -> float | None:
        values = [row["calibrated"]["accuracy"] for row in self.rows if row.get("calibrated")]
        return float(np.mean(values)) if values else None


def write_report(results_jsonl: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir`` (default: beside the
    results file); return the Markdown file's path.

    ``out_dir`` is shared with the user: a file is written only where none is, or
    where the file still holds what an earlier report wrote (``ricl.io.publish_files``
    keeps their checksums in ``.ricl-files.json``). If ``report.md`` or a plot's name
    is taken by anything else, ``ricl.errors.OverwriteError`` names it and no file
    is written.
    """
    results_jsonl = Path(results_jsonl)
    rows = read_jsonl(results_jsonl)
    if not rows:
        raise ConfigError(f"{results_jsonl} holds no result rows; run `ricl eval` first.")
    out_dir = Path(out_dir) if out_dir is not None else results_jsonl.parent
    with staging_dir(out_dir) as staging:
        text, plots = _render(results_jsonl, rows, out_dir, staging)
        (staging / REPORT).write_text(text, encoding="utf-8")
        publish_files(out_dir, {name: staging / name for name in (REPORT, *plots)})
    return out_dir / REPORT


def _render(results_jsonl: Path, rows: list[dict[str, Any]], out_dir: Path,
            staging: Path) -> tuple[str, list[str]]:
    """The report's Markdown and the names of its plots, drawn into ``staging``."""
    entries = group_entries(rows)
    suites = list(dict.fromkeys(row["suite"] for row in rows))
    methods = _method_order(rows)
    ks = sorted({e.k for e in entries.values() if e.k}) or [0]
    predictions_dir = results_jsonl.parent

    lines = ["# ICL evaluation report", "",
             # relative to the report, so a published report reads the same wherever it ran
             f"From `{os.path.relpath(results_jsonl, out_dir)}`: {len(rows)} result rows, "
             f"suites {', '.join(suites)}.",
             "Cells: mean ± std over seeds (n = test examples, s.e. = standard error of one run); "
             "± appears only where there are several seeds. Metric: accuracy "
             "(exact match for open QA, with token F1 beside it). "
             "`majority` predicts the most frequent pool label and `knn-vote` the majority "
             "label of the top-k retrieved demos; neither uses the LM. "
             f"**Bold**: the best cell per suite; `*`: its lead over the runner-up is "
             f"significant (exact McNemar test on per-example predictions, p < {ALPHA}).", ""]
    for k in ks:
        lines += _k_table(k, entries, suites, methods, predictions_dir)
    lines += _calibration_section(ks, entries, suites, methods)
    lines += _label_count_section(rows)

    plots = _plots(entries, suites, methods, ks, staging)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines), plots


def group_entries(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, Entry]:
    """Rows grouped by (method, suite, k), seeds together. Later rows of the same
    cell (same seed) replace earlier ones."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[(row["method"], row["suite"], row.get("k"), row.get("seed"),
                row.get("n_test"), row.get("calibrate"))] = row
    groups: dict[tuple, list] = defaultdict(list)
    for row in latest.values():
        groups[(row["method"], row["suite"], row.get("k"))].append(row)
    entries = {}
    for key, group in groups.items():
        # Seeds are averaged only within one set-up; a file holding several runs of the
        # same cell with other settings (n_test, calibration...) reports the latest.
        setup = _setup(group[-1])
        same = [row for row in group if _setup(row) == setup]
        if len(same) < len(group):
            log.warning("%s on %s, k=%s: %d rows from other settings ignored (n_test, pool, "
                        "calibration or normalisation differ)", *key, len(group) - len(same))
        entries[key] = Entry(key[0], key[1], key[2], tuple(same))
    return entries


def _setup(row: Mapping[str, Any]) -> tuple:
    return tuple(row.get(name) for name in ("n_test", "pool_size", "calibrate", "normalize"))


def _method_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Baselines first, then methods as the grid ran them, each retriever's kNN vote last."""
    seen = list(dict.fromkeys(row["method"] for row in rows))
    first = [m for m in (MAJORITY, ZERO_SHOT) if m in seen]
    rest = [m for m in seen if m not in first]
    return first + sorted(rest, key=lambda m: (m.split(" + ")[0], m.endswith(KNN_VOTE),
                                               rest.index(m)))


def _entry_at(entries: Mapping[tuple, Entry], method: str, suite: str, k: int) -> Entry | None:
    """The entry a k-table shows: baselines without demos appear at every k."""
    for key_k in (k, None, 0) if method in (MAJORITY, ZERO_SHOT) else (k,):
        entry = entries.get((method, suite, key_k))
        if entry is not None:
            return entry
    return None


def _format(entry: Entry, bold: bool = False, significant: bool = False) -> str:
    mean = f"{entry.mean:.3f}"
    if bold:
        mean = f"**{mean}**" + ("\\*" if significant else "")
    spread = f" ± {entry.std:.3f}" if entry.std is not None else ""
    f1 = [row["f1"] for row in entry.rows if "f1" in row]
    extra = f", F1 {np.mean(f1):.3f}" if f1 else ""
    return f"{mean}{spread} (n={entry.n}, s.e. {entry.stderr:.3f}{extra})"


def _k_table(k: int, entries: Mapping[tuple, Entry], suites: list[str], methods: list[str],
             predictions_dir: Path) -> list[str]:
    present = {m: {s: _entry_at(entries, m, s, k) for s in suites} for m in methods}
    present = {m: cells for m, cells in present.items() if any(cells.values())}
    best, notes = {}, []
    for suite in suites:
        ranked = sorted((cells[suite] for cells in present.values() if cells[suite]),
                        key=lambda e: -e.mean)
        if not ranked:
            continue
        verdict = _lead(ranked, predictions_dir)
        tied = {e.method for e in ranked if e.mean == ranked[0].mean}  # a tie bolds them all
        best[suite] = (tied, verdict["significant"])
        notes.append(f"- {suite}: {verdict['text']}")
    lines = [f"## k = {k}", "", "| method | " + " | ".join(suites) + " |",
             "|---|" + "---|" * len(suites)]
    for method, cells in present.items():
        shown = []
        for suite in suites:
            entry = cells[suite]
            if entry is None:
                shown.append("–")
                continue
            top, significant = best.get(suite, (set(), False))
            shown.append(_format(entry, bold=method in top, significant=significant))
        lines.append(f"| {method} | " + " | ".join(shown) + " |")
    return lines + [""] + notes + [""]


def _lead(ranked: list[Entry], predictions_dir: Path) -> dict[str, Any]:
    """Is the best entry's lead over the runner-up significant (McNemar, first seeds)?"""
    top = ranked[0]
    if len(ranked) < 2:
        return {"significant": False, "text": f"best {top.method} {top.mean:.3f}; no runner-up."}
    second = ranked[1]
    head = f"best {top.method} {top.mean:.3f} vs runner-up {second.method} {second.mean:.3f}"
    if top.mean == second.mean:
        return {"significant": False, "text": f"{head}: a tie, nothing to test."}
    a, b = _correctness(top.first, predictions_dir), _correctness(second.first, predictions_dir)
    if a is None or b is None:
        return {"significant": False, "text": f"{head}: predictions missing, no test."}
    shared = sorted(set(a) & set(b))
    if not shared:
        return {"significant": False, "text": f"{head}: no shared test examples, no test."}
    test = mcnemar_exact([a[i] for i in shared], [b[i] for i in shared])
    seeds = " (first seed of each)" if len(top.rows) > 1 or len(second.rows) > 1 else ""
    significant = test.p_value < ALPHA
    verdict = "significant" if significant else "not significant"
    return {"significant": significant,
            "text": f"{head}: McNemar p = {test.p_value:.3g} on {len(shared)} paired examples"
                    f"{seeds}, {test.only_a} vs {test.only_b} discordant, {verdict} at "
                    f"p < {ALPHA}."}


def _correctness(row: Mapping[str, Any], predictions_dir: Path) -> dict[str, bool] | None:
    path = predictions_dir / row.get("predictions", "")
    if not row.get("predictions") or not path.is_file():
        return None
    return {p["id"]: bool(p["correct"]) for p in read_jsonl(path)}


def _calibration_section(ks: list[int], entries: Mapping[tuple, Entry], suites: list[str],
                         methods: list[str]) -> list[str]:
    if not any(e.calibrated_mean() is not None for e in entries.values()):
        return []
    lines = ["## Contextual calibration", "",
             "Accuracy without → with contextual calibration (Zhao et al. 2021; content-free "
             "inputs \"N/A\", \"\" and \"[MASK]\" rendered with the same demos), mean over seeds.",
             ""]
    for k in ks:
        lines += [f"### k = {k}", "", "| method | " + " | ".join(suites) + " |",
                  "|---|" + "---|" * len(suites)]
        for method in methods:
            cells = [_entry_at(entries, method, s, k) for s in suites]
            if not any(c is not None and c.calibrated_mean() is not None for c in cells):
                continue
            shown = ["–" if c is None or c.calibrated_mean() is None
                     else f"{c.mean:.3f} → {c.calibrated_mean():.3f}" for c in cells]
            lines.append(f"| {method} | " + " | ".join(shown) + " |")
        lines.append("")
    return lines


def _counts(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "–"
    return " · ".join(f"{label} {count}" for label, count in counts.items())


def _label_count_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [row for row in rows if row.get("label_counts")]
    if not rows:
        return []
    lines = ["## Predicted label counts", "",
             "How often each label was predicted, per cell; a model that collapses onto one "
             "label shows here first.", ""]
    for suite in dict.fromkeys(row["suite"] for row in rows):
        mine = [row for row in rows if row["suite"] == suite]
        gold = next((row["gold_counts"] for row in mine if row.get("gold_counts")), None)
        calibrated = any(row.get("calibrated") for row in mine)
        lines += [f"### {suite}", "", f"Gold: {_counts(gold)}", "",
                  "| method | k | seed | predicted |" + (" calibrated |" if calibrated else ""),
                  "|---|---|---|---|" + ("---|" if calibrated else "")]
        for row in mine:
            line = (f"| {row['method']} | {_dash(row.get('k'))} | {_dash(row.get('seed'))} | "
                    f"{_counts(row['label_counts'])} |")
            if calibrated:
                line += f" {_counts((row.get('calibrated') or {}).get('label_counts'))} |"
            lines.append(line)
        lines.append("")
    return lines


def _dash(value: Any) -> str:
    return "–" if value is None else str(value)


# -- plots --------------------------------------------------------------------------------

# One colour per selector, one line style / hatch per retriever, greys for baselines.
_SELECTOR_COLORS = {"similarity": "tab:blue", "random": "tab:orange", "dpp": "tab:green",
                    "mmr": "tab:red", "coverage": "tab:purple", "votek": "tab:brown",
                    KNN_VOTE: "tab:olive"}
_EXTRA_COLORS = ("tab:pink", "tab:cyan", "tab:gray")
_LINESTYLES = ("-", "--", "-.", ":")
_HATCHES = ("", "//", "..", "xx")
_MARKERS = ("o", "s", "^", "D")


def _styles(methods: list[str]) -> dict[str, dict[str, Any]]:
    retrievers = list(dict.fromkeys(m.split(" + ")[0] for m in methods if " + " in m))
    styles, extra = {}, iter(_EXTRA_COLORS * 10)
    for method in methods:
        if method == MAJORITY:
            styles[method] = {"color": "0.65", "linestyle": ":", "hatch": "", "marker": ""}
            continue
        if method == ZERO_SHOT:
            styles[method] = {"color": "0.25", "linestyle": "-", "hatch": "", "marker": "s"}
            continue
        retriever, _, selector = method.partition(" + ")
        r = retrievers.index(retriever) % len(_LINESTYLES) if selector else 0
        styles[method] = {"color": _SELECTOR_COLORS.get(selector) or next(extra),
                          "linestyle": _LINESTYLES[r], "hatch": _HATCHES[r],
                          "marker": "x" if selector == KNN_VOTE else _MARKERS[r]}
    return styles


def _plots(entries: Mapping[tuple, Entry], suites: list[str], methods: list[str],
           ks: list[int], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = _styles(methods)
    names = []
    demo_ks = [k for k in ks if k > 0]
    if demo_ks:
        names.append(_plot_vs_k(plt, entries, suites, methods, demo_ks, styles, out_dir))
    names.append(_plot_bars(plt, entries, suites, methods, max(ks), styles, out_dir))
    return names


def _metric_name(entries: Mapping[tuple, Entry], suite: str) -> str:
    for (_, s, _), entry in entries.items():
        if s == suite:
            return {"exact_match": "exact match"}.get(entry.rows[0].get("metric"), "accuracy")
    return "accuracy"


def _plot_vs_k(plt, entries, suites, methods, ks, styles, out_dir: Path) -> str:
    ncols = min(3, len(suites))
    nrows = -(-len(suites) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 2.4, 3.8 * nrows + 0.3),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(suites):]:
        ax.set_visible(False)
    handles = {}
    for ax, suite in zip(axes.flat, suites):
        zero = entries.get((ZERO_SHOT, suite, 0))
        majority = _entry_at(entries, MAJORITY, suite, 0)
        if majority is not None:
            handles.setdefault(MAJORITY, ax.axhline(majority.mean, color=styles[MAJORITY]["color"],
                                                    linestyle=":", linewidth=1.5))
        for method in methods:
            if method in (MAJORITY, ZERO_SHOT):
                continue
            points = [(k, entries[(method, suite, k)]) for k in ks if (method, suite, k) in entries]
            if not points:
                continue
            knn = method.endswith(KNN_VOTE)
            xs = [k for k, _ in points]
            ys = [e.mean for _, e in points]
            errs = [e.std or 0.0 for _, e in points]
            if zero is not None and not knn:  # k = 0 is the same zero-shot run for every method
                xs, ys, errs = [0] + xs, [zero.mean] + ys, [0.0] + errs
            style = styles[method]
            handles.setdefault(method, ax.errorbar(
                xs, ys, yerr=errs if any(errs) else None, color=style["color"],
                linestyle=style["linestyle"], marker=style["marker"], markersize=4,
                linewidth=1.5, capsize=3, alpha=0.9))
        if zero is not None:
            handles.setdefault(ZERO_SHOT, ax.scatter([0], [zero.mean], color=styles[ZERO_SHOT]["color"],
                                                     marker="s", s=36, zorder=5))
        ax.set_title(suite)
        ax.set_xlabel("k (demonstrations)")
        ax.set_ylabel(_metric_name(entries, suite))
        ax.set_xticks(sorted({0, *ks}) if zero is not None else ks)
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8,
               frameon=False)
    fig.suptitle("Accuracy vs k: colour = selector, line style = retriever, x = kNN vote "
                 "(no LM), dotted = majority; error bars = std over seeds", fontsize=9)
    name = "accuracy_vs_k.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def _plot_bars(plt, entries, suites, methods, k, styles, out_dir: Path) -> str:
    shown = [m for m in methods if any(_entry_at(entries, m, s, k) for s in suites)]
    width = 0.8 / max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + len(suites) * (0.3 * len(shown) + 0.6)) + 2.4,
                                    4.2), layout="constrained")
    for j, method in enumerate(shown):
        xs, ys, errs = [], [], []
        for i, suite in enumerate(suites):
            entry = _entry_at(entries, method, suite, k)
            if entry is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(entry.mean)
            errs.append(entry.std if entry.std is not None else entry.stderr)
        style = styles[method]
        ax.bar(xs, ys, width=width * 0.92, yerr=errs, capsize=2, color=style["color"],
               hatch=style["hatch"] or None, edgecolor="white", linewidth=0.5, label=method,
               error_kw={"elinewidth": 0.8, "ecolor": "0.2"})
    ax.set_xticks(range(len(suites)), suites)
    ax.set_ylabel("accuracy (exact match for QA)")
    ax.set_ylim(0, 1.0)
    ax.set_title(f"All methods at k = {k}: colour = selector, hatching = retriever; "
                 "error bars = std over seeds, else s.e.", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8, frameon=False)
    name = f"bars_k{k}.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name
