"""The CEIL/UDR table: every method per suite, paired tests against the base and EPR,
the unseen suites apart, and gaps where a study has not run."""

import json
from types import SimpleNamespace

from eval.experiments.ceil_udr import _names, write_table

ARGS = SimpleNamespace(queries=1000, candidates=20, set_queries=1000, n=16, k=4, subsets=8,
                       ceil_epochs=2, rounds=2, mining_queries=500,
                       train_suites=["trec", "sst2"], unseen=["subj"], seed=0, n_test=40)
NAMES = _names(ARGS)


def _grid(out_dir, cells):
    rows = []
    for (suite, retriever, selector), correct in cells.items():
        path = f"{suite}-{retriever}-{selector}.jsonl"
        (out_dir / path).write_text("".join(json.dumps({"id": i, "correct": c}) + "\n"
                                            for i, c in enumerate(correct)))
        rows.append({"suite": suite, "retriever": retriever, "selector": selector, "k": 8,
                     "n_test": 40, "value": sum(correct) / len(correct), "stderr": 0.01,
                     "predictions": path})
    (out_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _summary(with_udr: bool):
    card = {"initial_loss": 2.0, "final_loss": 1.0, "steps": 10}
    seconds = {"score epr": 10.0, "train epr": 5.0, "score sets": 20.0, "train ceil": 7.0,
               "evaluate": 3.0}
    settings = {**vars(ARGS), "names": NAMES}
    summary = {"settings": settings,
               "ceil": {"trec": {"ceil_card": card, "epr_card": card, "seconds": seconds}}}
    if with_udr:
        summary["udr"] = {"card": card, "instructions": {"subj": "Classify the sentence: "},
                          "unseen_overlap": {"subj": 2},
                          "seconds": {"train udr": 100.0, "evaluate trec": 4.0,
                                      "round-1 scoring and EPR, per suite": {
                                          "trec": {"score": 10.0, "train epr": 5.0}}}}
    return summary


def test_table_tests_ceil_against_base_and_epr_and_udr_on_unseen_suites(tmp_path):
    n = 40
    base = [i < 20 for i in range(n)]
    better = [i < 30 for i in range(n)]  # fixes 10 of base's misses, breaks none
    _grid(tmp_path, {("trec", "base", "similarity"): base, ("trec", "base", "dpp"): base,
                     ("trec", NAMES["epr"], "similarity"): better, ("trec", NAMES["epr"], "dpp"): base,
                     ("trec", NAMES["ceil"], "dpp"): better, ("trec", NAMES["udr"], "similarity"): better,
                     ("subj", "base", "similarity"): better, ("subj", NAMES["udr"], "similarity"): base,
                     ("trec", NAMES["ceil"], "knn-vote"): better})

    text = write_table(tmp_path, _summary(with_udr=True)).read_text()

    assert ("| trec | 0.500 ± 0.010 | 0.500 ± 0.010 | 0.750 ± 0.010 | 0.500 ± 0.010 | 0.750 ± 0.010 "
            "| 0.750 ± 0.010 | — |") in text
    # CEIL + DPP against base DPP and EPR + DPP: 10 fixed, none broken; against EPR + sim: level
    assert "| trec | +0.250 (p 0.002) | +0.250 (p 0.002) | +0.000 (p 1.000) | +0.250 (p 0.002) |" in text
    # sst2 trained UDR but has no cells yet: gaps, not zeros
    assert "| sst2 | — | — | — | — | — | — | — |" in text
    assert "| subj | 'Classify the sentence: ' | 0.750 ± 0.010 | 0.500 ± 0.010 | -0.250 (p 0.002) | 2 of 40 |" in text
    assert "| trec | 2.000 → 1.000 | 2.000 → 1.000 | 10 | 5 | 20 | 7 | 3 |" in text
    assert "--n-test 40" in text
    assert "| trec | — | — | 0.750 | — |" in text  # kNN vote: only CEIL's was run


def test_table_without_udr_has_no_unseen_section(tmp_path):
    _grid(tmp_path, {("trec", "base", "dpp"): [True, False] * 20})
    text = write_table(tmp_path, _summary(with_udr=False)).read_text()
    assert "never saw" not in text and "| sst2 |" not in text
    assert "| trec | — | 0.500 ± 0.010 | — | — | — | — | — |" in text
