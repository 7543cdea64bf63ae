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


def test_label_copying_counts_the_vote_with_ties_to_the_nearest_demo(tmp_path):
    from eval.experiments.crossmodel_report import label_copying

    pool = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"}
    rows = [  # a 2-2 tie between x and y: the vote is y, whose demo "d" scores highest
        {"id": "q1", "gold": "y", "prediction": "y", "demo_ids": ["a", "b", "c", "d"],
         "demo_scores": [0.1, 0.2, 0.3, 0.9]},
        # vote x (2 of 3); nearest demo "e" says z; the LM copies neither
        {"id": "q2", "gold": "x", "prediction": "y", "demo_ids": ["a", "b", "e"],
         "demo_scores": [0.5, 0.4, 0.8]},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = label_copying(tmp_path, {"predictions": "p.jsonl"}, pool)
    assert result == {"n": 2, "copies_vote": 0.5, "copies_nearest": 0.5,
                      "vote_right": 1.0, "nearest_right": 0.5}


def test_kendall_tau_compares_the_methods_both_models_ran():
    from eval.experiments.crossmodel_report import kendall
    from eval.report import group_entries

    def entries(values):
        return group_entries([{"method": m, "suite": "s", "k": 8, "seed": None, "value": v,
                               "uses_lm": True, "n": 10} for m, v in values.items()])

    a = entries({"m1": 0.1, "m2": 0.2, "m3": 0.3, "m4": 0.4})
    same_order = entries({"m1": 0.5, "m2": 0.6, "m3": 0.7, "m4": 0.9, "only-b": 0.0})
    reversed_order = entries({"m1": 0.4, "m2": 0.3, "m3": 0.2, "m4": 0.1})
    assert kendall(a, same_order, "s")["tau"] == 1.0
    assert kendall(a, same_order, "s")["methods"] == ["m1", "m2", "m3", "m4"]
    assert kendall(a, reversed_order, "s")["tau"] == -1.0
    assert kendall(a, reversed_order, "s")["best"] == ["m4", "m1"]


def test_order_section_tests_each_order_against_similar_last_per_model(tmp_path):
    from eval.experiments.crossmodel import MODELS, ORDERS
    from eval.experiments.crossmodel_report import _order_section

    n = 40
    correct = {"similar-last": [i < 30 for i in range(n)],
               "similar-first": [i < 20 for i in range(n)],  # breaks 10, fixes none
               "random": [i < 30 for i in range(n)]}
    for model in MODELS:
        run = tmp_path / "order" / model
        run.mkdir(parents=True)
        lines = []
        for order in ORDERS:
            path = f"{order}.jsonl"
            (run / path).write_text("".join(json.dumps({"id": i, "correct": c}) + "\n"
                                            for i, c in enumerate(correct[order])))
            row = {"suite": "trec", "selector": "similarity", "value": sum(correct[order]) / n,
                   "predictions": path}
            if order != "similar-last":  # rows from before the order key read as the default
                row["order"] = order
            lines.append(json.dumps(row) + "\n")
        # the same run's LM-free kNN vote (written in the default order) is not a row here
        lines.append(json.dumps({"suite": "trec", "selector": "knn-vote", "value": 0.1,
                                 "predictions": "similar-last.jsonl"}) + "\n")
        (run / "results.jsonl").write_text("".join(lines))
    data = {"order": {}}
    text = "\n".join(_order_section(tmp_path, ["trec", "sst2"], data))
    assert "| trec | SmolLM2-135M-Instruct | 0.750 | 0.500 | 0.750 | -25.0 (0.002) | +0.0 (1.000) |" \
        in text
    assert "sst2" not in text  # a suite without every order for both models is left out
    assert data["order"]["trec"]["gemma3-270m"]["accuracy"]["similar-first"] == 0.5
