"""Metrics and significance tests on cases whose answers are known by hand."""

import math

import pytest
from scipy.stats import binomtest

from eval.metrics import (accuracy, confusion_counts, exact_match, knn_vote, majority_baseline,
                          majority_label, mcnemar_exact, normalize_answer, paired_bootstrap,
                          prediction_counts, standard_error, token_f1)
from ricl.errors import ConfigError
from ricl.prompt import Demo


def demo(output, score, rank):
    return Demo(id=f"d{rank}", fields={"text": "x"}, output=output, score=score, rank=rank,
                position=rank, tokens=3)


def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # "the" only as a whole word


def test_exact_match_takes_the_best_alias():
    assert exact_match("the Eiffel Tower.", ["Tour Eiffel", "Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    assert exact_match("Paris", "paris") == 1.0


def test_token_f1_on_hand_computed_cases():
    # "cat sat" vs "cat sat on mat": precision 1, recall 1/2
    assert token_f1("the cat sat", ["a cat sat on the mat"]) == pytest.approx(2 / 3)
    # best alias: "new york city" vs "new york": P 2/3, R 1 -> 0.8; vs "NYC": 0
    assert token_f1("New York City", ["NYC", "New York"]) == pytest.approx(0.8)
    assert token_f1("London", ["Paris"]) == 0.0
    assert token_f1("", [""]) == 1.0
    with pytest.raises(ConfigError):
        token_f1("x", [])


def test_accuracy_and_its_standard_error():
    assert accuracy(["a", "b", "a", "a"], ["a", "a", "a", "a"]) == 0.75
    assert standard_error([1, 0, 1, 1]) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    with pytest.raises(ConfigError):
        accuracy(["a"], ["a", "b"])


def test_majority_baseline_breaks_ties_by_first_seen():
    assert majority_label(["b", "a", "a", "b", "c"]) == "b"
    label, acc = majority_baseline(["x", "y", "y"], ["y", "x", "y", "y"])
    assert (label, acc) == ("y", 0.75)


def test_knn_vote_majority_and_tie_to_the_most_similar_demo():
    assert knn_vote([demo("a", 0.9, 0), demo("b", 0.8, 1), demo("b", 0.7, 2)]) == "b"
    # a 1-1 tie between a and b: b's demo is the most similar (0.95)
    assert knn_vote([demo("a", 0.5, 0), demo("b", 0.95, 1), demo("c", None, 2)]) == "b"
    # no scores: the earliest-ranked tied demo wins
    assert knn_vote([demo("c", None, 1), demo("a", None, 0)]) == "a"
    assert knn_vote([]) is None


def test_knn_vote_matches_a_vote_over_the_retrievers_own_top_k(trec_corpus, trec_queries, bm25):
    """The vote over a prompt's demos equals one computed straight from a search."""
    from collections import Counter

    import ricl

    k = 5
    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, selector="similarity", k=k,
                                 template="Question: {input}\nAnswer type: {output}")
    prompts = builder.build_many(trec_queries[:10])
    found = bm25.search(trec_queries[:10], k)
    for prompt, rows, scores in zip(prompts, found.rows, found.scores):
        labels = [trec_corpus[int(r)].output for r in rows]
        votes = Counter(labels)
        top = max(votes.values())
        expected = next(label for label, _ in sorted(zip(labels, -scores), key=lambda p: p[1])
                        if votes[label] == top)
        assert knn_vote(prompt.demos) == expected


def test_prediction_and_confusion_counts():
    counts = prediction_counts(["pos", "pos", "neg", "odd"], ["neg", "pos", "neu"])
    assert counts == {"neg": 1, "pos": 2, "neu": 0, "odd": 1}
    table = confusion_counts(["pos", "pos", "neg"], ["pos", "neg", "neg"], ["neg", "pos"])
    assert table == {"neg": {"neg": 1, "pos": 0}, "pos": {"neg": 1, "pos": 1}}


def test_mcnemar_exact_on_a_hand_computed_case():
    # 10 examples only A gets right, 2 only B, 20 both, 8 neither:
    # p = 2 * P[Binomial(12, 1/2) <= 2] = 2 * (1 + 12 + 66) / 4096
    a = [True] * 10 + [False] * 2 + [True] * 20 + [False] * 8
    b = [False] * 10 + [True] * 2 + [True] * 20 + [False] * 8
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.p_value == pytest.approx(158 / 4096)
    assert result.p_value == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    assert mcnemar_exact(b, a).p_value == result.p_value
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0
    assert mcnemar_exact([True] * 3 + [False] * 3, [False] * 3 + [True] * 3).p_value == 1.0


def test_mcnemar_exact_is_twice_the_smaller_binomial_tail():
    for only_a in range(0, 41, 3):
        for only_b in range(0, 41, 4):
            n = only_a + only_b
            tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
            a = [True] * only_a + [False] * only_b
            assert mcnemar_exact(a, [not x for x in a]).p_value == pytest.approx(
                min(1.0, 2 * tail), rel=1e-12)


def test_paired_bootstrap_is_seeded_and_sensible():
    a = [1] * 30 + [0] * 10
    b = [0] * 15 + [1] * 15 + [0] * 10
    first = paired_bootstrap(a, b, n_resamples=2000, seed=7)
    assert first == paired_bootstrap(a, b, n_resamples=2000, seed=7)
    assert first.delta == pytest.approx(15 / 40)
    assert first.low < first.delta < first.high
    assert first.p_value < 0.01
    # per-example F1 scores, a small difference: the seed moves the interval a little
    f1_a = [(i * 7 % 10) / 10 for i in range(40)]
    f1_b = [(i * 3 % 10) / 10 for i in range(40)]
    runs = [paired_bootstrap(f1_a, f1_b, n_resamples=300, seed=s) for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0].low != runs[2].low
    assert runs[0].p_value > 0.5
    same = paired_bootstrap(a, a, n_resamples=500)
    assert (same.delta, same.p_value) == (0.0, 1.0)


def test_contextual_calibration_divides_by_the_content_free_distribution():
    import numpy as np

    from ricl.inference import contextual_calibration

    log_probs = np.log([[0.7, 0.3], [0.95, 0.05]])
    content_free = [np.log([[0.8, 0.2], [0.9, 0.1]]), np.log([[1.0, 0.0 + 1e-12], [0.9, 0.1]])]
    calibrated, p_cf = contextual_calibration(log_probs, content_free)
    assert p_cf[1] == pytest.approx([0.9, 0.1])
    # row 2: [0.95 / 0.9, 0.05 / 0.1] renormalised
    assert calibrated[1] == pytest.approx(np.array([0.95 / 0.9, 0.5]) / (0.95 / 0.9 + 0.5))
    assert calibrated.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert calibrated[1].argmax() == 0 and calibrated[0].argmax() == 1  # p_cf [0.9, 0.1] flips the first row
