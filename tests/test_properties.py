"""Property-based checks of the selection and placement invariants (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ricl.errors import BudgetError
from ricl.placement import fit_budget, order_demos
from ricl.selectors import _nth_allowed, greedy_cover, select_dpp_greedy, select_mmr

sizes = st.integers(min_value=1, max_value=40)


@st.composite
def kernels(draw):
    n = draw(sizes)
    dim = draw(st.integers(min_value=1, max_value=12))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = rng.uniform(-1, 1, size=n)
    k = draw(st.integers(min_value=1, max_value=n))
    return vectors @ vectors.T, relevance, k


@settings(max_examples=150, deadline=None)
@given(kernels())
def test_dpp_greedy_returns_distinct_items_starting_from_the_largest_quality(case):
    sims, relevance, k = case
    quality = np.exp(relevance / 0.2)
    kernel = quality[:, None] * sims * quality[None, :]
    chosen = select_dpp_greedy(kernel, k)
    assert 1 <= len(chosen) <= k
    assert len(set(chosen)) == len(chosen)
    assert chosen[0] == int(np.argmax(np.diag(kernel)))
    # the chosen set is never singular: its log-det is finite
    sub = kernel[np.ix_(chosen, chosen)]
    assert np.linalg.slogdet(sub)[0] > 0


@settings(max_examples=150, deadline=None)
@given(kernels(), st.floats(min_value=0.0, max_value=1.0))
def test_mmr_returns_k_distinct_items_and_pure_relevance_is_top_k(case, lambda_):
    sims, relevance, k = case
    chosen = select_mmr(relevance, sims, k, lambda_)
    assert len(chosen) == len(set(chosen)) == k
    assert chosen[0] == int(np.argmax(relevance))
    by_relevance = select_mmr(relevance, sims, k, 1.0)
    assert sorted(relevance[by_relevance]) == sorted(np.sort(relevance)[::-1][:k])


@settings(max_examples=150, deadline=None)
@given(kernels())
def test_greedy_cover_returns_k_distinct_items_and_never_loses_coverage(case):
    sims, relevance, k = case
    match = np.clip(sims[:, : max(1, sims.shape[0] // 2)], 0, None)
    chosen = greedy_cover(match, relevance, k)
    assert len(chosen) == len(set(chosen)) == k
    covered = [match[chosen[: i + 1]].max(axis=0).sum() for i in range(k)]
    assert all(b >= a - 1e-12 for a, b in zip(covered, covered[1:]))


scores_lists = st.lists(st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(scores_lists, st.sampled_from(["similar-last", "similar-first", "random", "selection"]),
       st.text(min_size=1, max_size=20))
def test_order_is_a_permutation_and_similar_last_ends_with_the_best(scores, order, query):
    positions = order_demos(scores, order, query)
    assert sorted(positions) == list(range(len(scores)))
    assert positions == order_demos(scores, order, query)  # deterministic
    scored = [s for s in scores if s is not None]
    if order == "similar-last" and scored:
        assert scores[positions[-1]] == max(scored)
    if order == "similar-first" and scored:
        assert scores[positions[0]] == max(scored)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=12), st.integers(0, 40), st.integers(0, 3),
       st.integers(1, 400), st.integers(0, 2**31 - 1))
def test_budget_keeps_the_most_relevant_demos_that_fit(tokens, fixed, separator, budget, seed):
    relevance = list(np.random.default_rng(seed).permutation(len(tokens)).astype(float))
    try:
        kept, dropped = fit_budget(tokens, relevance, fixed, separator, budget)
    except BudgetError:
        assert fixed > budget
        return
    assert sorted(kept + dropped) == list(range(len(tokens)))
    assert fixed + sum(tokens[i] + separator for i in kept) <= budget
    if kept and dropped:  # nothing dropped is more relevant than something kept
        assert max(relevance[i] for i in dropped) < min(relevance[i] for i in kept)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=30_000), st.sets(st.integers(0, 29_999), max_size=5),
       st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=2**31 - 1))
def test_random_selection_walks_the_allowed_rows_and_draws_as_choice_over_them(n, excluded,
                                                                               k, seed):
    # The random selector draws positions among the allowed rows without building them:
    # the mapping must enumerate exactly the allowed rows in order, and the draw must be
    # the one numpy makes over the explicit array (so published random rows reproduce).
    skipped = sorted(e for e in excluded if e < n)
    allowed = np.setdiff1d(np.arange(n), np.array(skipped, dtype=np.int64))
    if n <= 2_000:
        assert [_nth_allowed(p, skipped) for p in range(len(allowed))] == allowed.tolist()
    take = min(k, len(allowed))
    if take == 0:
        return
    expected = np.random.default_rng(seed).choice(allowed, size=take, replace=False)
    positions = np.random.default_rng(seed).choice(len(allowed), size=take, replace=False)
    assert [_nth_allowed(int(p), skipped) for p in positions] == expected.tolist()


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=40), st.floats(min_value=0.0, max_value=1.0))
def test_edges_order_is_a_permutation_with_the_best_at_an_edge(n, bias):
    from ricl.chunker import edges_order

    order = edges_order(n, bias=bias)
    assert sorted(order) == list(range(n))
    assert 0 in (order[0], order[-1])  # the best sits at an edge
    if bias >= 0.5:  # leaning to the end: the best is last
        assert order[-1] == 0
    if bias == 0.5:  # both edges alike: each next rank sits no nearer an edge
        distance = {rank: min(i, n - 1 - i) for i, rank in enumerate(order)}
        assert all(distance[r] <= distance[r + 1] for r in range(n - 1))
