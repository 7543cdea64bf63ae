import numpy as np
import pytest

import ricl
from ricl.errors import ConfigError
from ricl.selectors import (SELECTORS, CandidateView, DPPSelector, MMRSelector, make_selector,
                            select_dpp_greedy)

K = 8


def views_for(retriever, queries, n):
    found = retriever.search(queries, n)
    return [CandidateView(q, r, s, retriever, e)
            for q, r, s, e in zip(queries, found.rows, found.scores, found.excluded)]


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_every_selector_returns_k_distinct_demos_never_the_query(name, kind, bm25, dense,
                                                                 trec_corpus):
    retriever = {"bm25": bm25, "dense": dense}[kind]
    selector = make_selector(name)
    selector.prepare(retriever)
    # queries that are themselves in the corpus: the selector must not hand them back
    queries = [trec_corpus[i].text for i in range(0, 60, 6)]
    views = views_for(retriever, queries, max(selector.n_candidates(K), 1))
    for query, view, selection in zip(queries, views, selector.select_many(views, K)):
        assert len(selection.rows) == K
        assert len(set(selection.rows)) == K
        assert not set(selection.rows) & view.excluded
        assert trec_corpus.row_of(trec_corpus[selection.rows[0]].id) == selection.rows[0]
        assert all(trec_corpus[r].text != query for r in selection.rows)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selectors_are_deterministic(name, dense, trec_queries):
    first, second = make_selector(name), make_selector(name)
    first.prepare(dense)
    second.prepare(dense)
    views = views_for(dense, trec_queries[:10], max(first.n_candidates(K), 1))
    assert first.select_many(views, K) == second.select_many(views, K)


def test_random_depends_on_the_seed_and_votek_on_nothing_but_the_corpus(dense, trec_queries):
    views = views_for(dense, trec_queries[:3], 1)
    seed0 = make_selector("random", seed=0).select_many(views, K)
    seed1 = make_selector("random", seed=1).select_many(views, K)
    assert seed0 != seed1
    assert seed0[0] != seed0[1]  # a different draw per query
    votek = make_selector("votek")
    picks = votek.select_many(views, K)
    assert picks[0].rows == picks[1].rows == picks[2].rows  # query-independent


def test_dpp_picks_less_redundant_sets_than_similarity_on_near_duplicates(trec):
    # Real questions, plus five near-copies of one of them: similarity retrieval fills
    # the prompt with the copies, a DPP keeps one or two and adds other evidence.
    base = list(trec.pool[:300])
    target = base[0]["text"]
    copies = [{"id": f"dup{i}", "text": f"{target} {tail}", "label": base[0]["label"]}
              for i, tail in enumerate(["", "Please answer.", "Thanks!", "(asked again)", "Anyone?"])]
    corpus = ricl.Corpus.from_records(base + copies, input="text", output="label")
    retriever = ricl.DenseRetriever().index(corpus)
    query = target.replace("?", "").strip() + " , do you know ?"
    view = views_for(retriever, [query], 50)[0]

    def redundancy(rows):
        kernel = retriever.kernel(np.array(rows))
        return kernel[np.triu_indices(len(rows), 1)].mean()

    similar = make_selector("similarity").select(view, K).rows
    diverse = DPPSelector(scale=0.1).select(view, K).rows
    mmr = MMRSelector(lambda_=0.5).select(view, K).rows
    copy_rows = {corpus.row_of(f"dup{i}") for i in range(5)} | {corpus.row_of(base[0]["id"])}
    assert len(copy_rows & set(similar)) >= 5
    assert len(copy_rows & set(diverse)) < len(copy_rows & set(similar))
    assert redundancy(diverse) < redundancy(similar)
    assert redundancy(mmr) < redundancy(similar)


def test_dpp_never_duplicates_when_fewer_candidates_than_k(dense, trec_queries):
    selector = DPPSelector(n=3)
    assert selector.n_candidates(K) == K  # n < k is raised to k
    # a fully singular kernel: identical items, the greedy MAP stops after one
    identical = np.ones((6, 6))
    assert select_dpp_greedy(identical, 4) == [0]
    view = views_for(dense, trec_queries[:1], 5)[0]
    selection = selector.select(view, K)
    assert len(selection.rows) == len(set(selection.rows)) == 5
    assert "only 5 of k=8" in selection.note


def test_coverage_covers_more_of_the_query_than_similarity(bm25, trec_queries):
    selector = make_selector("coverage")
    views = views_for(bm25, trec_queries, selector.n_candidates(K))
    covered_cov, covered_sim = [], []
    for view in views:
        weights = bm25.term_weights(view.query)
        total = sum(weights.values()) or 1.0

        def coverage(rows):
            terms = set().union(*(bm25.row_terms(r) for r in rows))
            return sum(w for t, w in weights.items() if t in terms) / total

        covered_cov.append(coverage(selector.select(view, 4).rows))
        covered_sim.append(coverage(view.rows[:4]))
    assert np.mean(covered_cov) > np.mean(covered_sim)


def test_unknown_selector_and_bad_parameters():
    with pytest.raises(ConfigError, match="choose one of"):
        make_selector("knn")
    with pytest.raises(ConfigError, match="lambda_"):
        MMRSelector(lambda_=2.0)
    with pytest.raises(ConfigError, match="scale"):
        DPPSelector(scale=0)


def test_coverage_token_cache_is_bounded_and_does_not_change_selections(dense, trec_queries):
    from ricl.selectors import CoverageSelector

    queries = trec_queries[:12]
    views = views_for(dense, queries, 30)
    unbounded = CoverageSelector(cache_mb=1024)
    small = CoverageSelector(cache_mb=0.2)  # room for a few dozen rows' token vectors
    expected = [unbounded.select(view, 6).rows for view in views]
    assert [small.select(view, 6).rows for view in views] == expected
    assert 0 < small._token_cache.nbytes <= 0.2 * 2**20
    assert len(small._token_cache) < len(unbounded._token_cache)
    # Rows it dropped are encoded again when needed, with the same result.
    assert [small.select(view, 6).rows for view in views] == expected
