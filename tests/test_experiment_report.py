"""The trained-retriever report: every retriever a suite has, gaps where it has none, and
paired tests computed from the per-item predictions."""

import json

from eval.experiments.trained import write_summary


def _row(out_dir, suite, retriever, correct):
    path = f"{suite}-{retriever}.jsonl"
    (out_dir / path).write_text("".join(json.dumps({"id": i, "correct": c}) + "\n"
                                        for i, c in enumerate(correct)))
    value = sum(correct) / len(correct)
    return {"retriever": retriever, "value": value, "stderr": 0.01, "predictions": path}


def _result(out_dir, suite, correct_by_retriever):
    card = {"initial_loss": 2.0, "final_loss": 1.0}
    return {"suite": suite,
            "rows": [_row(out_dir, suite, name, c) for name, c in correct_by_retriever.items()],
            "knn_vote": {name: 0.5 for name in correct_by_retriever},
            "feedback": {"same_label_share": 0.6, "lm_top_same": 0.9, "retriever_top_same": 0.7,
                         "gain_same": 3.0, "gain_other": 1.0},
            "cards": {name: card for name in correct_by_retriever if name != "base"},
            "seconds": {"score": 10.0, "score contrastive-r2": 5.0, "train contrastive": 3.0,
                        "evaluate": 1.0}}


def test_report_shows_round_two_where_it_ran_and_tests_it_against_round_one(tmp_path):
    n = 40
    base = [i < 20 for i in range(n)]
    one = [i < 30 for i in range(n)]  # fixes 10 of base's misses, breaks none
    two = [i < 30 or i >= 35 for i in range(n)]  # fixes 5 more
    results = [
        _result(tmp_path, "trec", {"base": base, "contrastive": one, "distill": one,
                                   "contrastive-r2": two}),
        _result(tmp_path, "sst2", {"base": base, "contrastive": base, "distill": one}),
    ]
    text = write_summary(results, tmp_path, 1000, 20).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| suite | base"))
    assert header.endswith("| contrastive (EPR), round 2 | p |")
    sst2 = next(line for line in text.splitlines() if line.startswith("| sst2 | 0.500"))
    assert "| — |" in sst2  # no round 2 for this suite: a gap, not a zero
    assert "| mean gain | | +0.125 | | +0.250 | | +0.375 (1 of 2 suites) | |" in text
    assert "trec 0.750 → 0.875 (5 items fixed, 0 broken, p = 0.062)" in text
    assert "| trec | 0.500 ± 0.010 | 0.750 ± 0.010 | 0.002 |" in text
    assert "| 15 | 3 | 1 |" in text  # score time includes round 2's scoring
