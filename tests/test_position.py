"""The lost-in-the-middle study: its data, the placements it compares, the bias it fits."""

import json

import pytest

from eval.experiments import position
from eval.experiments.position import (build_items, fitted_bias, placement_order, render,
                           sweep_positions, with_gold_at)
from ricl.chunker import edges_order
from ricl.errors import ConfigError


@pytest.fixture(scope="module")
def items():
    return build_items(12, 4, 6)


def test_items_have_answer_free_hard_distractors(items):
    assert len(items) == 12
    for item in items:
        assert len(item.distractors) == 4 and item.gold not in item.distractors
        assert not any(position._contains_answer(d, item.answers) for d in item.distractors)
        assert position._contains_answer(item.gold, item.answers)
        scores = [s for _, s in item.retrieved]
        assert len(scores) == 6 and scores == sorted(scores, reverse=True)
        if item.gold_rank is not None:
            assert item.retrieved[item.gold_rank][0] == item.gold
    # BM25 over SQuAD questions finds the gold paragraph for most of them.
    assert sum(item.gold_rank is not None for item in items) >= 8


def test_gold_goes_exactly_where_asked(items):
    item = items[0]
    for p in sweep_positions(5):
        docs = with_gold_at(item, p)
        assert docs[p] == item.gold and [d for d in docs if d != item.gold] == list(item.distractors)
    prompt = render(item.question, with_gold_at(item, 4))
    assert prompt.endswith(f"Question: {item.question}\nAnswer:")
    assert prompt.index(item.distractors[-1]) < prompt.index(item.gold)
    assert "Document" not in render(item.question, [])


def test_sweep_spans_first_to_last():
    assert sweep_positions(5) == [0, 1, 2, 3, 4]
    assert sweep_positions(10) == [0, 2, 4, 7, 9]
    assert sweep_positions(20)[0] == 0 and sweep_positions(20)[-1] == 19


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_placements_are_permutations_with_their_documented_ends(n):
    scores = [10.0 - i for i in range(n)]  # best first, as retrieval returns them
    orders = {name: placement_order(name, scores, seed=3) for name in position.PLACEMENTS}
    for order in orders.values():
        assert sorted(order) == list(range(n))
    assert orders["retrieval"] == list(range(n))
    assert orders["reversed"] == list(range(n))[::-1]
    assert orders["edges"] == edges_order(n, 0.5)
    if n >= 2:
        assert orders["edges"][-1] == 0 and orders["edges"][0] == 1          # best last, next first
        assert {orders["llamaindex-reorder"][0], orders["llamaindex-reorder"][-1]} == {0, 1}
        assert orders["haystack-litm"][0] == 0 and orders["haystack-litm"][-1] == 1
    with pytest.raises(ConfigError):
        placement_order("middle-out", scores)


def test_fitted_bias_puts_the_likely_gold_rank_where_the_curve_peaks():
    recency = {0: -4.0, 2: -4.2, 4: -4.3, 7: -4.1, 9: -3.5}
    primacy = {0: -3.5, 2: -4.2, 4: -4.3, 7: -4.1, 9: -4.4}
    ranks = [0] * 8 + [1, 2]
    bias, expected = fitted_bias(recency, 10, ranks)
    assert edges_order(10, bias)[-1] == 0 and expected[bias] == max(expected.values())
    bias, expected = fitted_bias(primacy, 10, ranks)
    assert bias == 0.0 and edges_order(10, bias)[0] == 0
    assert fitted_bias(recency, 10, [None, None]) == (0.5, {})


def test_store_resumes_and_skips_a_torn_line(tmp_path):
    store = position._Store(tmp_path)
    store.add({"key": "a", "answer_logprob": -1.0}, [{"id": "q1", "answer_logprob": -1.0}])
    with store.results.path.open("a") as f:
        f.write('{"key": "b", "answer_lo')  # killed mid-write
    again = position._Store(tmp_path)
    assert again.done("a") == {"key": "a", "answer_logprob": -1.0} and again.done("b") is None
    assert again.predictions_of("a") == [{"key": "a", "id": "q1", "answer_logprob": -1.0}]
    again.add({"key": "b", "answer_logprob": -2.0}, [])  # the torn line is cut off first
    assert position._Store(tmp_path).done("b") == {"key": "b", "answer_logprob": -2.0}


@pytest.mark.lm
def test_a_study_on_the_real_lm_resumes_without_rescoring(tmp_path):
    """Two questions, two distractors: every condition is written once, and a rerun
    scores nothing."""
    from ricl.lm import TransformersLM

    class Counting(TransformersLM):
        calls = 0

        def score(self, prompts, continuations):
            Counting.calls += len(prompts)
            return super().score(prompts, continuations)

    lm = Counting(dtype="bfloat16")
    report = position.run(tmp_path, 2, [2], lm=lm, max_new_tokens=4,
                          placements=("retrieval", "edges", "llamaindex-reorder"))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    keys = [r["key"].split("/q")[0] for r in rows]
    assert keys[:2] == ["closed-book", "oracle"] and sum(k.startswith("sweep/") for k in keys) == 3
    assert {"placement/retrieval/n3", "placement/edges/n3", "placement/llamaindex-reorder/n3"} <= set(keys)
    assert all(r["answer_logprob"] < 0 for r in rows)
    assert (tmp_path / "position_curve.png").stat().st_size > 0 and report.exists()
    scored = Counting.calls
    position.run(tmp_path, 2, [2], lm=lm, max_new_tokens=4,
                 placements=("retrieval", "edges", "llamaindex-reorder"))
    assert Counting.calls == scored

