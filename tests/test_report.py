"""The report from a results file: tables, the significance verdict, plots, CLI."""

import argparse
import json

import pytest

from eval.commands import register
from eval.report import write_report

LABELS = ["negative", "positive"]


def _write_cell(run_dir, suite, retriever, selector, k, seed, correct, calibrated=None):
    """One results row and its predictions file, as the grid writes them."""
    method = selector if retriever == "none" else f"{retriever} + {selector}"
    name = f"{suite}__{retriever}__{selector}__k{k}__s{seed}"
    predictions = []
    for i, ok in enumerate(correct):
        gold = LABELS[i % 2]
        predictions.append({"id": f"{suite}-{i}", "gold": gold, "correct": ok,
                            "prediction": gold if ok else LABELS[1 - i % 2]})
    (run_dir / "predictions").mkdir(exist_ok=True)
    (run_dir / "predictions" / f"{name}.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in predictions))
    counts = {label: sum(p["prediction"] == label for p in predictions) for label in LABELS}
    row = {"suite": suite, "retriever": retriever, "selector": selector, "k": k, "seed": seed,
           "n_test": len(correct), "pool_size": 100, "calibrate": calibrated is not None,
           "normalize": "sum", "method": method, "task": "classification", "metric": "accuracy",
           "uses_lm": selector not in ("majority", "knn-vote"), "n": len(correct),
           "accuracy": sum(correct) / len(correct), "value": sum(correct) / len(correct),
           "stderr": 0.05, "label_counts": counts, "gold_counts": {"negative": 20, "positive": 20},
           "predictions": f"predictions/{name}.jsonl"}
    if calibrated is not None:
        row["calibrated"] = {"accuracy": calibrated, "stderr": 0.05, "label_counts": counts}
    return row


@pytest.fixture
def results(tmp_path):
    """Two suites; on sst2 at k=4 similarity leads random by 10 vs 2 discordant examples
    (McNemar p = 0.0386, significant); on trec it leads by 3 vs 1 (p = 0.625)."""
    base = [True] * 20 + [False] * 20
    rows = []
    for suite, (wins, losses) in {"sst2": (10, 2), "trec": (3, 1)}.items():
        rows.append(_write_cell(tmp_path, suite, "none", "majority", None, None, [True] * 20 + [False] * 20))
        rows.append(_write_cell(tmp_path, suite, "none", "zero-shot", 0, None, base, 0.55))
        for k in (2, 4):
            strong = base[:]
            for i in range(wins):
                strong[20 + i] = True
            for i in range(losses):
                strong[i] = False
            rows.append(_write_cell(tmp_path, suite, "bm25", "similarity", k, None,
                                    strong if k == 4 else base, 0.7))
            for seed in (0, 1, 2):
                rows.append(_write_cell(tmp_path, suite, "bm25", "random", k, seed, base, 0.6))
            rows.append(_write_cell(tmp_path, suite, "bm25", "knn-vote", k, None, base))
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_report_tables_mark_the_best_cell_and_test_its_lead(results, tmp_path):
    path = write_report(results, tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert "## k = 2" in text and "## k = 4" in text
    assert "| method | sst2 | trec |" in text
    # sst2, k=4: 0.5 + (10 - 2)/40 = 0.7, bold and significant (*)
    assert "| bm25 + similarity | **0.700**\\* (n=40, s.e. 0.050) | **0.550** (n=40" in text
    assert "McNemar p = 0.0386 on 40 paired examples, 10 vs 2 discordant, significant" in text
    assert "McNemar p = 0.625" in text and "not significant at p < 0.05" in text
    # three seeds: mean ± std; the majority and kNN rows are in every table
    assert "| bm25 + random | 0.500 ± 0.000 (n=40, s.e. 0.050)" in text
    tables = text.split("## Contextual calibration")[0]
    assert tables.count("| majority |") == 2 and tables.count("| bm25 + knn-vote |") == 2
    assert "| bm25 + similarity | 0.500 → 0.700 | 0.500 → 0.700 |" in text
    assert "Gold: negative 20 · positive 20" in text
    for png in ("accuracy_vs_k.png", "bars_k4.png"):
        assert f"![{png}]({png})" in text
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_command_writes_beside_the_results(results, capsys):
    parser = argparse.ArgumentParser(prog="ricl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(results)])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.strip() == str(results.parent / "report.md")
    args = parser.parse_args(["eval", "--suite", "sst2", "trec", "--retriever", "bm25", "dense",
                              "--selector", "random", "similarity", "dpp", "-k", "0", "4", "8",
                              "--seeds", "3", "--n-test", "200", "--out", "runs/x",
                              "--calibrate"])
    assert (args.suite, args.k, args.seeds, args.calibrate) == (["sst2", "trec"], [0, 4, 8], 3, True)


def test_report_of_an_empty_file_says_what_to_do(tmp_path):
    empty = tmp_path / "results.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="ricl eval"):
        write_report(empty)
