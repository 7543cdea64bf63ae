import pytest

import ricl
from ricl.errors import BudgetError, ConfigError, IndexLoadError, TemplateError
from ricl.selectors import SELECTOR_NAMES

TEMPLATE = "Question: {input}\nAnswer type: {output}"


@pytest.fixture(scope="module")
def builder(trec_corpus, dense, tokenizer):
    return ricl.PromptBuilder(trec_corpus, retriever=dense, selector="dpp", k=8,
                              template=TEMPLATE, max_tokens=1024, tokenizer=tokenizer)


def test_the_documented_snippet_works(tmp_path, trec):
    records = [{"text": r["text"], "label": trec.labels.index(r["label"])} for r in trec.pool[:200]]
    corpus = ricl.Corpus.from_records(records, input="text", output="label", labels=list(trec.labels))
    builder = ricl.PromptBuilder(corpus, retriever="dense", selector="dpp", k=8,
                                 template="Review: {input}\nSentiment: {output}",
                                 max_tokens=1024, order="similar-last")
    prompt = builder.build("a gripping, beautifully shot film")
    assert prompt.text.endswith("Review: a gripping, beautifully shot film\nSentiment:")
    assert len(prompt.demos) == 8
    assert all(d.output in trec.labels for d in prompt.demos)  # label words, not indices
    assert 0 < prompt.token_count <= 1024
    queries = [r["text"] for r in trec.test[:5]]
    prompts = builder.build_many(queries)
    assert [p.text for p in prompts] == [builder.build(q).text for q in queries]
    builder.save(tmp_path / "idx")
    loaded = ricl.PromptBuilder.load(tmp_path / "idx")
    assert [p.text for p in loaded.build_many(queries)] == [p.text for p in prompts]


def test_prompt_shows_each_demo_with_id_fields_score_and_rank(builder, trec_queries, trec_corpus):
    prompt = builder.build(trec_queries[0])
    assert len(prompt.demos) == 8
    for demo in prompt.demos:
        example = trec_corpus[trec_corpus.row_of(demo.id)]
        assert demo.fields == dict(example.inputs)
        assert demo.output == example.output
        assert demo.score is not None and -1.0 <= demo.score <= 1.0
        assert f"{example.text}\nAnswer type: {example.output}" in prompt.text
    assert sorted(d.rank for d in prompt.demos) == list(range(8))
    assert [d.position for d in prompt.demos] == list(range(8))
    assert prompt.selector == "dpp" and prompt.retriever == "dense"
    assert "id=" in prompt.explain()


def test_most_similar_demo_sits_next_to_the_query(trec_corpus, dense, tokenizer, trec_queries):
    last = ricl.PromptBuilder(trec_corpus, retriever=dense, k=4, template=TEMPLATE,
                              tokenizer=tokenizer).build(trec_queries[1])
    first = ricl.PromptBuilder(trec_corpus, retriever=dense, k=4, template=TEMPLATE,
                               tokenizer=tokenizer, order="similar-first").build(trec_queries[1])
    scores = [d.score for d in last.demos]
    assert scores == sorted(scores)  # ascending: the best is right before the query
    assert [d.id for d in first.demos] == [d.id for d in last.demos][::-1]


def test_build_many_equals_build_for_every_selector(trec_corpus, bm25, tokenizer, trec_queries):
    for selector in SELECTOR_NAMES:
        builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, selector=selector, k=4,
                                     template=TEMPLATE, tokenizer=tokenizer)
        batched = builder.build_many(trec_queries[:6])
        assert [p.text for p in batched] == [builder.build(q).text for q in trec_queries[:6]]


def test_token_count_is_the_target_tokenizers_count(builder, tokenizer, trec_queries):
    prompt = builder.build(trec_queries[2])
    assert prompt.token_count == len(tokenizer(prompt.text, add_special_tokens=False)["input_ids"])


def test_over_budget_drops_the_least_relevant_demos_and_says_so(trec_corpus, dense, tokenizer,
                                                               trec_queries):
    full = ricl.PromptBuilder(trec_corpus, retriever=dense, k=8, template=TEMPLATE,
                              tokenizer=tokenizer).build(trec_queries[3])
    budget = full.token_count - 25
    tight = ricl.PromptBuilder(trec_corpus, retriever=dense, k=8, template=TEMPLATE,
                               tokenizer=tokenizer, max_tokens=budget).build(trec_queries[3])
    assert tight.token_count <= budget
    assert 0 < len(tight.demos) < 8
    assert len(tight.dropped) == 8 - len(tight.demos)
    kept_scores = [d.score for d in tight.demos]
    assert all(drop.score <= min(kept_scores) for drop in tight.dropped)
    assert "max_tokens" in tight.dropped[0].reason


def test_query_alone_over_budget_is_a_budget_error(trec_corpus, dense, tokenizer):
    builder = ricl.PromptBuilder(trec_corpus, retriever=dense, k=2, template=TEMPLATE,
                                 tokenizer=tokenizer, max_tokens=5)
    with pytest.raises(BudgetError, match="Raise max_tokens"):
        builder.build("What is the tallest mountain in the world and how was it measured ?")


def test_k_zero_gives_the_zero_shot_prompt(trec_corpus, dense, tokenizer):
    prompt = ricl.PromptBuilder(trec_corpus, retriever=dense, k=0, template=TEMPLATE,
                                tokenizer=tokenizer).build("Who wrote Hamlet ?")
    assert prompt.text == "Question: Who wrote Hamlet ?\nAnswer type:"
    assert prompt.demos == ()


def test_fewer_demos_than_k_is_recorded(tokenizer):
    corpus = ricl.Corpus.from_records([{"text": "Who wrote Hamlet ?", "label": "person"},
                                       {"text": "Where is Paris ?", "label": "location"}],
                                      input="text", output="label")
    builder = ricl.PromptBuilder(corpus, retriever="bm25", k=5, template=TEMPLATE,
                                 tokenizer=tokenizer)
    prompt = builder.build("Who wrote Hamlet ?")  # itself excluded: one demo left
    assert [d.output for d in prompt.demos] == ["location"]
    assert "only 1 of k=5" in prompt.notes[0]


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"k": -1}, ConfigError, "k=-1"),
    ({"max_tokens": 0}, ConfigError, "max_tokens"),
    ({"selector": "nearest"}, ConfigError, "choose one of"),
    ({"retriever": "faiss"}, ConfigError, "unknown"),
    ({"order": "shuffled"}, ConfigError, "order="),
    ({"template": "Q: {question}\nA: {output}"}, TemplateError, "question"),
    ({"template": "Q: {input}"}, TemplateError, "no {output} slot"),
])
def test_bad_builder_arguments(trec_corpus, kwargs, error, fragment):
    with pytest.raises(error) as caught:
        ricl.PromptBuilder(trec_corpus, **{"retriever": "bm25", **kwargs})
    assert fragment in str(caught.value)


def test_bad_queries(builder):
    with pytest.raises(ConfigError, match="non-empty"):
        builder.build("   ")
    with pytest.raises(ConfigError, match="string or a dict"):
        builder.build(None)
    with pytest.raises(ConfigError, match="use build"):
        builder.build_many("one query")


def test_load_from_a_wrong_directory(tmp_path):
    with pytest.raises(IndexLoadError, match="builder.json"):
        ricl.PromptBuilder.load(tmp_path)


def test_save_load_round_trip_for_bm25_and_chroma(tmp_path, trec_corpus, tokenizer, trec_queries):
    for retriever in ["bm25", "dense:chroma"]:
        builder = ricl.PromptBuilder(trec_corpus, retriever=retriever, selector="mmr", k=6,
                                     template=TEMPLATE, max_tokens=400, tokenizer=tokenizer)
        before = [p.text for p in builder.build_many(trec_queries[:8])]
        builder.save(tmp_path / retriever.replace(":", "-"))
        loaded = ricl.PromptBuilder.load(tmp_path / retriever.replace(":", "-"))
        assert [p.text for p in loaded.build_many(trec_queries[:8])] == before


def test_documents_go_between_instructions_and_demos_within_the_budget(trec_corpus, dense,
                                                                        tokenizer, trec):
    passages = [" ".join(r["text"] for r in trec.pool[i:i + 12]) for i in range(0, 120, 12)]
    builder = ricl.PromptBuilder(trec_corpus, retriever=dense, k=3, template=TEMPLATE,
                                 tokenizer=tokenizer, max_tokens=400,
                                 instructions="Classify the question.")
    query = "Who painted the Mona Lisa ?"
    prompt = builder.build(query, documents=passages)
    assert prompt.token_count <= 400
    assert prompt.text.startswith("Classify the question.\n\n")
    first_demo = prompt.text.index(f"Question: {prompt.demos[0].fields['text']}")
    for doc in prompt.documents:
        assert prompt.text.index(doc.text) < first_demo
    assert len(prompt.demos) == 3  # demos keep priority; documents fill what is left
    assert any(d.id.startswith("document:") for d in prompt.dropped)
    scores = [d.score for d in prompt.documents]
    assert max(scores) in (scores[0], scores[-1])  # edges: the best at an end
    kept = {d.id for d in prompt.documents}
    left_out = [d.score for d in prompt.dropped if d.id.startswith("document:")]
    assert max(left_out) <= min(scores)
    assert len(kept) == len(prompt.documents)


def test_scored_documents_keep_their_scores(trec_corpus, bm25, tokenizer):
    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, k=1, template=TEMPLATE,
                                 tokenizer=tokenizer)
    prompt = builder.build("Who wrote Hamlet ?",
                           documents=[("Hamlet is a play by Shakespeare.", 0.9),
                                      ("Paris is in France.", 0.1),
                                      ("Shakespeare was born in 1564.", 0.5)])
    # edges with the default lean to the end (bias 0.7): with three items all go to the
    # back, the best last, next to the query
    assert [d.score for d in prompt.documents] == [0.1, 0.5, 0.9]
