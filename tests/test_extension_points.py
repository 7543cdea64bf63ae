"""The documented extension points, used exactly as the README documents them: a
selector that is any object with ``select(view, k)`` and ``n_candidates(k)``, a
retriever that is any object with ``index(corpus)`` and ``search(queries, n)``,
one ``seed`` for every random part, and the scoring LM as the budget's tokenizer."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ricl
from ricl.errors import ConfigError


class ShortestFirst:
    """A user's selector: among the top candidates, the k with the shortest inputs."""

    name = "shortest"

    def n_candidates(self, k):
        return 4 * k

    def select(self, view, k):
        corpus = view.retriever.corpus
        lengths = [len(corpus[int(row)].text) for row in view.rows]
        return [int(view.rows[i]) for i in np.argsort(lengths, kind="stable")[:k]]


class WordOverlap:
    """A user's retriever: Jaccard overlap of lower-cased words, and nothing else
    (no kind, no kernel, no save; it ignores exclude_self)."""

    def index(self, corpus):
        self.corpus = corpus
        self._words = [set(example.text.lower().split()) for example in corpus]
        return self

    def search(self, queries, n, *, exclude_self=True):
        rows, scores = [], []
        for query in queries:
            words = set(query.lower().split())
            overlap = np.array([len(words & w) / len(words | w) for w in self._words])
            top = np.argsort(-overlap, kind="stable")[:n]
            rows.append(top)
            scores.append(overlap[top])
        return ricl.Candidates(queries=tuple(queries), rows=tuple(rows), scores=tuple(scores))


def test_a_users_selector_builds_prompts_and_must_be_given_again_on_load(trec_corpus,
                                                                       trec_queries, tmp_path):
    selector = ShortestFirst()
    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", selector=selector, k=3)
    prompt = builder.build(trec_queries[0])
    lengths = [len(" ".join(demo.fields.values())) for demo in prompt.demos]
    candidates = builder.retriever.search([trec_queries[0]], 12)
    shortest = sorted(len(trec_corpus[int(r)].text) for r in candidates.rows[0])[:3]
    assert sorted(lengths) == shortest
    assert prompt.selector == "shortest"
    assert builder.build_many(trec_queries[:5]) == [builder.build(q) for q in trec_queries[:5]]

    builder.save(tmp_path / "idx")
    with pytest.raises(ConfigError, match="custom selector"):
        ricl.PromptBuilder.load(tmp_path / "idx")
    loaded = ricl.PromptBuilder.load(tmp_path / "idx", selector=selector)
    assert loaded.build(trec_queries[0]).text == prompt.text


def test_a_users_retriever_builds_prompts_and_the_query_never_demonstrates_itself(trec_corpus):
    retriever = WordOverlap()
    builder = ricl.PromptBuilder(trec_corpus, retriever=retriever, k=4, tokenizer=None)
    query = trec_corpus[7].text  # in the corpus: its own row must not come back
    prompt = builder.build(query)
    assert len(prompt.demos) == 4
    assert trec_corpus[7].id not in prompt.demo_ids
    assert prompt.retriever == "WordOverlap"
    scores = [demo.score for demo in prompt.demos]
    assert scores == sorted(scores)  # similar-last: the best demo next to the query
    assert builder.build_many([query, trec_corpus[8].text])[0] == prompt


def test_a_users_retriever_fails_clearly_where_it_lacks_what_is_asked(trec_corpus, tmp_path):
    builder = ricl.PromptBuilder(trec_corpus, retriever=WordOverlap(), selector="mmr", k=4)
    with pytest.raises(ConfigError, match=r"mmr.*kernel\(\)"):
        builder.build(trec_corpus[3].text)
    plain = ricl.PromptBuilder(trec_corpus, retriever=WordOverlap(), k=2)
    with pytest.raises(ConfigError, match="not persisted"):
        plain.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("returned, problem", [
    ([10**9], r"integers in \[0, "),
    ([1, 1], "distinct"),
    ("12", "Selection or a list"),
])
def test_a_selector_returning_unusable_rows_gets_a_clear_error(trec_corpus, returned, problem):
    class Broken:
        def n_candidates(self, k):
            return k

        def select(self, view, k):
            return returned

    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", selector=Broken(), k=2)
    with pytest.raises(ConfigError, match=problem):
        builder.build("what is the capital of peru ?")


def test_one_seed_reproduces_every_random_part(trec_corpus, trec_queries):
    def prompts(seed):
        builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", selector="random",
                                     order="random", k=5, seed=seed)
        return [p.demo_ids for p in builder.build_many(trec_queries[:10])]

    assert prompts(3) == prompts(3)
    assert prompts(3) != prompts(4)  # the selector's draw follows the builder's seed
    with pytest.raises(ConfigError, match="disagree"):
        ricl.PromptBuilder(trec_corpus, selector="random", seed=1, selector_options={"seed": 2})


@pytest.mark.lm
def test_the_scoring_lm_counts_the_budget_and_the_prompt_says_so(trec_corpus, trec_queries):
    lm = ricl.TransformersLM()
    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=8, max_tokens=60, tokenizer=lm)
    prompt = builder.build(trec_queries[0])
    assert prompt.token_count == lm.count_tokens([prompt.text])[0] <= 60
    assert prompt.dropped  # 8 demos do not fit in 60 tokens
    assert re.search(r"TransformersLM", prompt.tokenizer)
    assert "TransformersLM" in prompt.explain()
