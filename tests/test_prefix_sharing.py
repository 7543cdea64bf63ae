"""Prompts of a batch that share token prefixes: the order, the counts, the scoring.

``build_many(share_prefixes=True)`` only moves demonstrations; the counts of shared
tokens are checked against a brute-force scan of every earlier prompt; the radix
tree computes each shared token once and scores labels like the plain path.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import ricl
from ricl.errors import ConfigError
from ricl.lm.prefix_tree import radix_tree
from ricl.selectors import ClusterSelector, SharingSelector
from ricl.prefix_sharing import prefix_sharing, shared_heads, shared_prefix_tokens, trie_order
from ricl.server_lm import OpenAICompletionsLM

K = 6


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def brute_force_shared(sequences, order) -> int:
    """Sum over prompts, in ``order``, of the longest common prefix with any earlier prompt."""
    return sum(max((common_prefix(sequences[i], sequences[j]) for j in order[:at]), default=0)
               for at, i in enumerate(order))


@pytest.fixture(scope="module")
def builder(trec_corpus, dense):
    return ricl.PromptBuilder(trec_corpus, retriever=dense, k=K,
                              template="Question: {input}\nAnswer type: {output}")


@pytest.fixture(scope="module")
def both(builder, trec_queries):
    return builder.build_many(trec_queries), builder.build_many(trec_queries, share_prefixes=True)


def test_shared_token_counts_equal_a_brute_force_scan(builder, both, tokenizer):
    for prompts in both:
        ids = tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
        schedule = builder.prefix_schedule(prompts)
        assert schedule.shared_tokens == brute_force_shared(ids, list(schedule.order))
        assert schedule.total_tokens == sum(len(i) for i in ids)
        assert list(schedule.order) == sorted(range(len(ids)), key=lambda i: ids[i])
        given = list(range(len(ids)))  # any order, not only the trie's
        assert sum(shared_prefix_tokens(ids, given)) == brute_force_shared(ids, given)
    plain, shared = (builder.prefix_schedule(p) for p in both)
    assert shared.shared_tokens > plain.shared_tokens
    assert 0 < shared.ratio < 1 and shared.computed_tokens == shared.total_tokens - shared.shared_tokens


def test_sharing_moves_demos_and_nothing_else(both, trec_queries):
    plain, shared = both
    orders = [tuple(p.demo_ids) for p in shared]
    assert [p.query["text"] for p in shared] == trec_queries  # the caller's order
    moved = 0
    for n, (a, b) in enumerate(zip(plain, shared)):
        by_id = {d.id: d for d in a.demos}
        assert sorted(by_id) == sorted(b.demo_ids) and a.dropped == b.dropped
        for d in b.demos:  # scores, ranks, token counts as before; positions truthful
            assert (d.score, d.rank, d.tokens, d.output) == (by_id[d.id].score, by_id[d.id].rank,
                                                              by_id[d.id].tokens, by_id[d.id].output)
        placed = sorted(b.demos, key=lambda d: d.position)
        assert [d.position for d in placed] == list(range(len(placed)))
        where = [b.text.index(f"Question: {d.fields['text']}\nAnswer type: {d.output}") for d in placed]
        assert where == sorted(where)
        # the two most similar stay last, most similar nearest the query
        assert [d.id for d in placed[-2:]] == a.demo_ids[-2:]
        # past the demos it shares with another prompt, a prompt keeps the plain order
        opening = max(common_prefix(orders[n], other) for m, other in enumerate(orders) if m != n)
        rest = b.demo_ids[opening:]
        assert rest == [i for i in a.demo_ids if i in rest]
        moved += b.demo_ids != a.demo_ids and bool(b.notes)
    assert moved > 0


def test_shared_heads_open_prompts_with_demos_their_branch_shares():
    rng = np.random.default_rng(1)
    demos = [set(rng.choice(12, size=4, replace=False).tolist()) for _ in range(30)]
    heads = shared_heads(demos, lambda row: 1 + row % 3)
    for i, head in enumerate(heads):
        assert set(head) <= demos[i] and len(set(head)) == len(head)
        for j in range(len(head)):  # every opening demo is shared along the same branch
            assert any(heads[o][: j + 1] == head[: j + 1] for o in range(len(heads)) if o != i)
    computed = sum(len(h) for h in heads)
    shared = sum(max((common_prefix(h, heads[o]) for o in range(i)), default=0) for i, h in enumerate(heads))
    assert shared > 0 and computed > shared


def test_similar_last_is_checked_and_k_keeps_the_plain_order(builder, trec_queries, both):
    with pytest.raises(ConfigError, match="similar_last"):
        builder.build_many(trec_queries[:3], share_prefixes=True, similar_last=-1)
    with pytest.raises(ConfigError, match="similar_last"):
        builder.build_many(trec_queries[:3], share_prefixes=True, similar_last=1.5)
    kept = builder.build_many(trec_queries, share_prefixes=True, similar_last=K)
    assert [p.text for p in kept] == [p.text for p in both[0]]


def test_a_budget_drops_the_same_demos_with_or_without_sharing(trec_corpus, dense, trec_queries):
    tight = ricl.PromptBuilder(trec_corpus, retriever=dense, k=K, max_tokens=90,
                               template="Question: {input}\nAnswer type: {output}")
    plain = tight.build_many(trec_queries)
    shared = tight.build_many(trec_queries, share_prefixes=True)
    assert any(p.dropped for p in plain)
    for a, b in zip(plain, shared):
        assert sorted(a.demo_ids) == sorted(b.demo_ids) and a.dropped == b.dropped
        assert b.token_count <= 90


@pytest.mark.parametrize("make", [lambda: ClusterSelector(head=3, group_size=8),
                                  lambda: SharingSelector(tolerance=0.05)],
                         ids=["cluster", "sharing"])
def test_a_batch_aware_selector_shares_more_and_keeps_each_querys_nearest(
        make, builder, both, trec_corpus, dense, trec_queries):
    selector = make()
    batch = ricl.PromptBuilder(trec_corpus, retriever=dense, selector=selector, k=K,
                               template="Question: {input}\nAnswer type: {output}")
    plain = both[0]
    prompts = batch.build_many(trec_queries, share_prefixes=True)
    uses = Counter(i for p in prompts for i in p.demo_ids)
    keep = K - selector.head if isinstance(selector, ClusterSelector) else selector.keep
    for a, b in zip(plain, prompts):
        assert len(b.demo_ids) == K and len(set(b.demo_ids)) == K
        nearest = sorted(a.demos, key=lambda d: -d.score)[:keep]
        assert {d.id for d in nearest} <= set(b.demo_ids)  # its own best stay
        others = [d for d in b.demos if d.id not in {n.id for n in nearest}]
        if isinstance(selector, ClusterSelector):  # the rest: its own next best, or shared
            assert all(d.id in a.demo_ids or uses[d.id] > 1 for d in others)
        else:  # the rest lies within the tolerance of the query's k-th best
            kth = min(d.score for d in a.demos)
            assert all(d.score >= kth - selector.tolerance - 1e-6 for d in others)
    ratio = batch.prefix_schedule(prompts).ratio
    assert ratio > builder.prefix_schedule(both[1]).ratio  # more shared than the order alone


def test_a_cluster_head_never_holds_the_query_itself(trec_corpus, dense):
    # corpus texts that are each other's neighbours: a group's head would hold its members
    near = dense.search([trec_corpus[0].inputs["text"]], 12, exclude_self=False).rows[0]
    queries = [trec_corpus[int(row)].inputs["text"] for row in near]
    batch = ricl.PromptBuilder(trec_corpus, retriever=dense, selector=ClusterSelector(head=4),
                               k=K, template="Question: {input}\nAnswer type: {output}")
    for query, prompt in zip(queries, batch.build_many(queries, share_prefixes=True)):
        assert all(d.fields["text"] != query for d in prompt.demos)


def test_batch_aware_selectors_at_zero_are_the_similarity_selector(builder, both, trec_corpus,
                                                                   dense, trec_queries):
    for selector in (ClusterSelector(head=0), SharingSelector(tolerance=0)):
        batch = ricl.PromptBuilder(trec_corpus, retriever=dense, selector=selector, k=K,
                                   template="Question: {input}\nAnswer type: {output}")
        assert [p.text for p in batch.build_many(trec_queries)] == [p.text for p in both[0]]
    for bad in ({"head": -1}, {"group_size": 0}, {"n": 2.5}, {"head": True}):
        with pytest.raises(ConfigError):
            ClusterSelector(**bad)
    with pytest.raises(ConfigError, match="tolerance"):
        SharingSelector(tolerance=-0.1)


def test_a_builder_saved_with_a_batch_aware_selector_loads_with_it(tmp_path, trec_corpus, dense):
    for selector in (ClusterSelector(head=3, group_size=5, n=20), SharingSelector(tolerance=0.07)):
        ricl.PromptBuilder(trec_corpus, retriever=dense, selector=selector, k=K,
                           template="Question: {input}\nAnswer type: {output}").save(tmp_path / "b")
        loaded = ricl.PromptBuilder.load(tmp_path / "b")
        assert type(loaded.selector) is type(selector)
        assert loaded.selector.config() == selector.config()


def test_the_radix_tree_holds_each_distinct_token_once():
    rng = np.random.default_rng(0)
    stems = [list(rng.integers(0, 5, size=n)) for n in (3, 5, 8)]
    sequences = [stems[i % 3][: 2 + i % 4] + list(rng.integers(0, 4, size=i % 5)) for i in range(40)]
    sequences = [list(s) for s in dict.fromkeys(map(tuple, sequences))]
    order = trie_order(sequences)
    root, last = radix_tree(sequences, order)
    stored, stack = 0, list(root.children)
    while stack:
        node = stack.pop()
        assert node.end > node.start and node.parent.end == node.start
        stored += node.end - node.start
        stack += node.children
    assert stored == prefix_sharing(sequences).computed_tokens
    for i, s in enumerate(sequences):  # each sequence is the path to its last node
        node, tokens = last[i], []
        while node.parent is not None:
            tokens = list(sequences[node.seq][node.start:node.end]) + tokens
            node = node.parent
        assert tokens == s


def test_share_prefixes_is_checked(local):
    with pytest.raises(ConfigError, match="share_prefixes"):
        ricl.TransformersLM((local.model, local.tokenizer), share_prefixes="yes")
    with pytest.raises(ConfigError, match="share_prefixes"):
        ricl.TransformersLM((local.model, local.tokenizer), share_prefixes=1)


@pytest.mark.lm
def test_shared_prefix_label_scoring_equals_plain_scoring(local, builder, trec_queries):
    """float32, the real SmolLM2: small batches and groups force many tree levels."""
    prompts = [p.text for p in builder.build_many(trec_queries[:10], share_prefixes=True)]
    prompts += [prompts[0], prompts[3][: prompts[3].rindex("\n\nQuestion:")]]  # a duplicate; a prefix
    model = (local.model, local.tokenizer)
    plain = ricl.TransformersLM(model, share_prefixes=False)
    tree = ricl.TransformersLM(model, batch_size=2, max_batch_tokens=400, share_prefixes=True)
    assert builder.prefix_schedule(prompts).shared_tokens > 0
    for choices, normalize in (([" location", " number", " person", " description"], "sum"),  # one token each
                               ([" location", " a number", " human being"], "mean")):  # several tokens
        expected = plain.score_choices(prompts, choices, normalize=normalize)
        got = tree.score_choices(prompts, choices, normalize=normalize)
        assert np.abs(got - expected).max() < 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_the_server_client_sends_prompts_in_prefix_order_and_answers_in_the_callers(json_server):
    seen = []

    def answer(request):  # first-token log-probs that name the prompt's length
        seen.append(request["prompt"])
        top = {" a": -len(request["prompt"]) / 1000, " b": -5.0}
        return {"choices": [{"text": " a", "logprobs": {"top_logprobs": [top], "tokens": [" a"],
                                                        "token_logprobs": [top[" a"]]}}]}

    lm = OpenAICompletionsLM(json_server(answer), model="m", scoring="first-token", max_concurrency=1)
    prompts = ["B: x\n\nQ: 1", "A: y\n\nQ: 22", "B: x\n\nQ: 333", "A: y\n\nQ: 4444"]
    scores = lm.score_choices(prompts, [" a", " b"])
    assert seen == sorted(prompts)
    assert np.allclose(scores[:, 0], [-len(p) / 1000 for p in prompts])


@pytest.mark.lm
def test_a_predictor_that_shares_prefixes_answers_in_the_callers_order(local, builder, trec_queries):
    queries = trec_queries[:6]
    predictions = ricl.Predictor(builder, local, share_prefixes=True).predict(queries)
    expected = builder.build_many(queries, share_prefixes=True)
    assert [p.prompt.text for p in predictions] == [p.text for p in expected]
    assert all(p.output in builder.labels for p in predictions)
