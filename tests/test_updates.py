"""A corpus that changes: add, update and remove give what a rebuild on the final
corpus gives, persist, take typed errors, and never mix two versions in one prompt."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ricl
from retrievers import load_retriever
from ricl.changes import CorpusChange
from ricl.errors import ConfigError, CorpusError, DuplicateIdError, UnknownIdError

TEMPLATE = "Question: {input}\nAnswer type: {output}"
BASE = 150  # examples the index starts with; the rest of the pool is added later


@pytest.fixture(scope="module")
def pool(trec):
    return [dict(record) for record in trec.pool]


def corpus_of(records, trec):
    return ricl.Corpus.from_records(records, input="text", output="label", labels=trec.labels)


def from_scratch(corpus):
    """A corpus of the same examples, built as a new one is."""
    return ricl.Corpus(list(corpus), input_names=corpus.input_names,
                       output_name=corpus.output_name, labels=corpus.labels)


def operations():
    """A random sequence of changes: (kind, size, seed)."""
    return st.lists(st.tuples(st.sampled_from(["add", "update", "relabel", "remove"]),
                              st.integers(1, 12), st.integers(0, 10**6)), min_size=1, max_size=6)


def apply_ops(target, ops, pool, labels, start=BASE):
    """Apply ``ops`` to ``target`` (a retriever or a builder); records to add come from
    ``pool[start:]`` in order, updates take the text of a later pool record."""
    cursor = start
    for kind, size, seed in ops:
        rng = np.random.default_rng(seed)
        corpus = target.corpus
        chosen = [corpus[int(r)] for r in rng.choice(len(corpus), min(size, len(corpus) - 1),
                                                     replace=False)]
        if kind == "add":
            target.add(pool[cursor:cursor + size])
            cursor += size
        elif kind == "update":  # new text for some ids, plus one new id (upsert adds it)
            texts = pool[cursor:cursor + len(chosen) + 1]
            cursor += len(texts)
            records = [{"id": e.id, "text": t["text"], "label": e.output}
                       for e, t in zip(chosen, texts)]
            target.update(records + texts[len(chosen):])
        elif kind == "relabel":
            target.update([{"id": e.id, "text": e.text,
                            "label": labels[(labels.index(e.output) + 1) % len(labels)]}
                           for e in chosen])
        else:
            target.remove([e.id for e in chosen])
    return target


def same_candidates(a, b, atol):
    """Same scores within ``atol``, and the same rows except where two scores tie within it."""
    for rows_a, rows_b, s_a, s_b in zip(a.rows, b.rows, a.scores, b.scores):
        np.testing.assert_allclose(s_a, s_b, atol=atol, rtol=0)
        where = dict(zip(rows_a.tolist(), s_a.tolist()))
        for row, score in zip(rows_b.tolist(), s_b.tolist()):
            assert abs(where.get(row, s_a[-1]) - score) <= 2 * atol, (rows_a, rows_b)


changes = settings(max_examples=12, deadline=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))


@changes
@given(operations())
def test_bm25_after_random_changes_equals_a_rebuild_bit_for_bit(trec, pool, trec_queries, ops):
    changed = apply_ops(ricl.BM25Retriever().index(corpus_of(pool[:BASE], trec)), ops, pool,
                        trec.labels)
    rebuilt = ricl.BM25Retriever().index(from_scratch(changed.corpus))
    assert changed.corpus.fingerprint() == rebuilt.corpus.fingerprint()
    a, b = changed.search(trec_queries, n=10), rebuilt.search(trec_queries, n=10)
    assert [r.tolist() for r in a.rows] == [r.tolist() for r in b.rows]
    assert all(np.array_equal(x, y) for x, y in zip(a.scores, b.scores))
    rows = np.arange(min(20, len(changed.corpus)))
    np.testing.assert_allclose(changed.kernel(rows), rebuilt.kernel(rows), atol=1e-12)
    query = trec_queries[0]
    assert changed.term_weights(query) == rebuilt.term_weights(query)


@changes
@given(operations())
def test_dense_exact_and_chroma_after_random_changes_equal_a_rebuild(trec, pool, trec_queries,
                                                                      dense, ops):
    base = corpus_of(pool[:BASE], trec)
    exact = apply_ops(ricl.DenseRetriever().index(base, embeddings=dense.embeddings[:BASE]),
                      ops, pool, trec.labels)
    chroma = apply_ops(ricl.DenseRetriever(backend="chroma").index(
        base, embeddings=dense.embeddings[:BASE]), ops, pool, trec.labels)
    assert chroma.corpus.fingerprint() == exact.corpus.fingerprint()
    rebuilt = ricl.DenseRetriever().index(from_scratch(exact.corpus))  # embedded afresh
    expected = rebuilt.search(trec_queries, n=10)
    same_candidates(exact.search(trec_queries, n=10), expected, atol=1e-5)
    same_candidates(chroma.search(trec_queries, n=10), expected, atol=1e-5)
    rows = np.arange(len(exact.corpus))
    np.testing.assert_allclose(exact.features(rows), rebuilt.features(rows), atol=1e-5)
    np.testing.assert_allclose(chroma.features(rows), rebuilt.features(rows), atol=1e-5)


@pytest.mark.parametrize("selector", ["similarity", "dpp", "votek", "coverage", "random"])
def test_a_changed_builder_builds_the_prompts_of_a_builder_made_on_the_final_corpus(
        selector, trec, pool, trec_queries, tokenizer):
    ops = [("add", 12, 1), ("relabel", 10, 2), ("remove", 9, 3), ("update", 6, 4),
           ("add", 5, 5)]

    def builder(corpus):
        return ricl.PromptBuilder(corpus, retriever="bm25", selector=selector, k=4,
                                  template=TEMPLATE, max_tokens=140, tokenizer=tokenizer)

    changed = builder(corpus_of(pool[:BASE], trec))
    changed.build_many(trec_queries)  # indexed, vote-k chosen, token counts cached
    apply_ops(changed, ops, pool, trec.labels)
    fresh = builder(from_scratch(changed.corpus))
    assert [p.text for p in changed.build_many(trec_queries)] == \
        [p.text for p in fresh.build_many(trec_queries)]


def test_a_dense_builder_follows_changes_like_a_rebuild(trec, pool, trec_queries, dense,
                                                        tokenizer):
    def builder(corpus, embeddings=None):
        retriever = ricl.DenseRetriever().index(corpus, embeddings=embeddings)
        return ricl.PromptBuilder(corpus, retriever=retriever, selector="mmr", k=4,
                                  template=TEMPLATE, tokenizer=tokenizer)

    changed = builder(corpus_of(pool[:BASE], trec), dense.embeddings[:BASE])
    before = changed.build_many(trec_queries)
    apply_ops(changed, [("add", 20, 1), ("relabel", 15, 2), ("remove", 10, 3)], pool,
              trec.labels)
    fresh = builder(from_scratch(changed.corpus))  # embedded afresh
    after = changed.build_many(trec_queries)
    assert [p.demo_ids for p in after] == [p.demo_ids for p in fresh.build_many(trec_queries)]
    assert [p.text for p in after] != [p.text for p in before]


def test_a_correction_is_retrieved_by_the_next_query_and_never_leaks_itself(trec, bm25,
                                                                           tokenizer):
    builder = ricl.PromptBuilder(bm25.corpus, retriever="bm25", k=3, template=TEMPLATE,
                                 tokenizer=tokenizer)
    query = "Which river flows through the old town of Heidelberg ?"
    builder.add([{"id": "fix-1", "text": "Which river flows through Heidelberg ?",
                  "label": "location"}])
    prompt = builder.build(query)
    assert prompt.demos[-1].id == "fix-1"  # the most similar demo, next to the query
    builder.add([{"id": "fix-2", "text": query, "label": "location"}])
    assert "fix-2" not in builder.build(query).demo_ids  # the query itself is no demo
    unfiltered = ricl.PromptBuilder(builder.corpus, retriever=builder.retriever, k=3,
                                    template=TEMPLATE, tokenizer=tokenizer, exclude_self=False)
    assert unfiltered.build(query).demo_ids[-1] == "fix-2"


def test_bad_changes_raise_typed_errors_and_change_nothing(trec, pool):
    builder = ricl.PromptBuilder(corpus_of(pool[:BASE], trec), retriever="bm25", k=2,
                                 template=TEMPLATE).index()
    before = builder.corpus
    with pytest.raises(DuplicateIdError, match="update"):
        builder.add([pool[0]])
    with pytest.raises(DuplicateIdError, match="twice|Duplicate"):
        builder.add([pool[BASE], pool[BASE]])
    with pytest.raises(DuplicateIdError, match="twice"):
        builder.remove([pool[1]["id"], pool[1]["id"]])
    with pytest.raises(UnknownIdError, match="nothing was removed"):
        builder.remove([pool[1]["id"], "no-such-id"])
    with pytest.raises(CorpusError, match="no input field 'text'"):
        builder.add([pool[BASE], {"question": "where?", "label": "location"}])
    with pytest.raises(CorpusError, match="not one of labels"):
        builder.update([{**pool[2], "label": "colour"}])
    with pytest.raises(CorpusError, match="empty"):
        builder.remove([e.id for e in builder.corpus])
    with pytest.raises(ConfigError, match="list of ids"):
        builder.remove(pool[1]["id"])
    with pytest.raises(ConfigError, match="list of records"):
        builder.add(pool[BASE])
    assert builder.corpus is before and builder.retriever.corpus is before
    assert builder.update([pool[3]]).is_empty  # the same record again: nothing to do
    change = builder.update([{**pool[3], "label": 0}, pool[BASE]])  # label index, and upsert
    assert change.updated_ids == (pool[3]["id"],) and change.added_ids == (pool[BASE]["id"],)
    assert builder.corpus[builder.corpus.row_of(pool[3]["id"])].output == trec.labels[0]
    stale = CorpusChange.remove(before, [pool[4]["id"]])
    with pytest.raises(ConfigError, match="another corpus"):
        builder.retriever.apply(stale)


@pytest.mark.parametrize("spec", ["bm25", "dense", "dense:chroma"])
def test_changes_persist_and_a_saved_index_changes_only_when_saved_again(
        spec, tmp_path, trec, pool, trec_queries, dense, tokenizer):
    retriever = ricl.make_retriever(spec)
    base = corpus_of(pool[:BASE], trec)
    retriever.index(base) if spec == "bm25" else retriever.index(base, dense.embeddings[:BASE])
    builder = ricl.PromptBuilder(base, retriever=retriever, k=3, template=TEMPLATE,
                                 tokenizer=tokenizer)
    builder.save(tmp_path / "idx")
    loaded = ricl.PromptBuilder.load(tmp_path / "idx")
    apply_ops(loaded, [("add", 8, 1), ("relabel", 5, 2), ("remove", 4, 3)], pool, trec.labels)
    expected = [p.text for p in loaded.build_many(trec_queries)]
    # the saved directory is untouched until save(): a change works on a private copy
    reader = load_retriever(tmp_path / "idx" / "retriever")  # stays open across the save
    assert len(reader.corpus) == BASE
    loaded.save(tmp_path / "idx")
    again = ricl.PromptBuilder.load(tmp_path / "idx")
    assert again.corpus.fingerprint() == loaded.corpus.fingerprint()
    assert [p.text for p in again.build_many(trec_queries)] == expected
    assert [p.text for p in loaded.build_many(trec_queries)] == expected  # still serving
    apply_ops(again, [("remove", 3, 4), ("add", 2, 5)], pool, trec.labels, start=BASE + 40)
    assert len(again.build(trec_queries[0]).demos) == 3


def test_builds_from_many_threads_never_mix_two_corpus_versions(trec, pool, trec_queries,
                                                                tokenizer):
    queries = trec_queries[:16]
    # relabels change what a demo says, not what is retrieved: a prompt that mixed two
    # versions would pair one version's demos with another's labels
    ops = [op for i in range(4) for op in
           [("relabel", 25, i), ("add", 10, 100 + i), ("remove", 10, 200 + i)]]
    starts = [BASE + 10 * i for i in range(len(ops))]

    def builder():
        return ricl.PromptBuilder(corpus_of(pool[:BASE], trec), retriever="bm25",
                                  selector="dpp", k=5, template=TEMPLATE, max_tokens=200,
                                  tokenizer=tokenizer)

    # What each version gives, one change at a time on one thread.
    reference = builder()
    expected = [{p.text for p in reference.build_many(queries)}]
    for op, start in zip(ops, starts):
        apply_ops(reference, [op], pool, trec.labels, start=start)
        expected.append({p.text for p in reference.build_many(queries)})
    versions = {text: v for v, texts in enumerate(expected) for text in texts}

    shared = builder().index()
    seen: list[str] = []
    stop = threading.Event()

    def keep_building(worker: int):
        while not stop.is_set():
            seen.extend(shared.build(query).text for query in queries[worker::4])

    with ThreadPoolExecutor(max_workers=4) as threads:
        running = [threads.submit(keep_building, w) for w in range(4)]
        for op, start in zip(ops, starts):
            apply_ops(shared, [op], pool, trec.labels, start=start)
        stop.set()
        for future in running:
            future.result()
    mixed = [text for text in seen if text not in versions]
    assert not mixed, f"{len(mixed)} of {len(seen)} prompts match no single corpus version"
    assert len({versions[text] for text in seen}) >= 2  # the builds spanned changes
    assert {p.text for p in shared.build_many(queries)} == expected[-1]


def test_cli_adds_updates_and_removes_in_a_saved_index(tmp_path, trec, pool, capsys):
    from ricl.cli import main

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pool[:BASE]))
    assert main(["index", str(data), "--input", "text", "--output", "label", "--labels",
                 *trec.labels, "--retriever", "bm25", "--out", str(tmp_path / "idx")]) == 0
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps(r) + "\n" for r in pool[BASE:BASE + 5]))
    assert main(["add", str(tmp_path / "idx"), str(new)]) == 0
    assert "added 5" in capsys.readouterr().out
    assert main(["add", str(tmp_path / "idx"), str(new)]) == 2  # the same ids again
    assert "update" in capsys.readouterr().err
    fix = tmp_path / "fix.jsonl"
    fix.write_text(json.dumps({**pool[0], "label": "number"}) + "\n")
    assert main(["update", str(tmp_path / "idx"), str(fix)]) == 0
    assert main(["remove", str(tmp_path / "idx"), "--ids", pool[1]["id"], pool[2]["id"]]) == 0
    assert main(["remove", str(tmp_path / "idx"), "--ids", "no-such-id"]) == 2
    assert "no-such-id" in capsys.readouterr().err
    corpus = ricl.PromptBuilder.load(tmp_path / "idx").corpus
    assert len(corpus) == BASE + 5 - 2
    assert corpus[corpus.row_of(pool[0]["id"])].output == "number"
    assert not corpus.has_id(pool[1]["id"])


class WordOverlap:
    """A user's retriever as the README shows one: ``index`` and ``search`` only."""

    def index(self, corpus):
        self.corpus = corpus
        self.words = [set(e.text.lower().split()) for e in corpus]
        return self

    def search(self, queries, n, *, exclude_self=True):
        rows, scores = [], []
        for query in queries:
            overlap = np.array([len(set(query.lower().split()) & w) for w in self.words], float)
            top = np.argsort(-overlap, kind="stable")[:n]
            rows.append(top)
            scores.append(overlap[top])
        return ricl.Candidates(queries=tuple(queries), rows=tuple(rows), scores=tuple(scores))


class CountingOverlap(WordOverlap):
    """One that follows a change itself (``apply`` without ``stage``)."""

    applied = 0

    def apply(self, change):
        self.applied += 1
        self.index(change.new)


@pytest.mark.parametrize("retriever", [WordOverlap, CountingOverlap])
def test_a_users_retriever_follows_changes_by_apply_or_by_being_indexed_again(retriever, trec,
                                                                            pool, tokenizer):
    builder = ricl.PromptBuilder(corpus_of(pool[:BASE], trec), retriever=retriever(), k=3,
                                 template=TEMPLATE, tokenizer=tokenizer)
    query = "Which river flows through the old town of Heidelberg ?"
    builder.build(query)
    builder.add([{"id": "fix-1", "text": "Which river flows through Heidelberg ?",
                  "label": "location"}])
    builder.remove([pool[0]["id"]])
    assert builder.retriever.corpus is builder.corpus
    assert builder.build(query).demo_ids[-1] == "fix-1"
    if retriever is CountingOverlap:
        assert builder.retriever.applied == 2


def test_vectors_of_a_saved_index_follow_many_changes_without_being_read_whole(tmp_path):
    from retrievers.dense import EditedVectors, VectorFile, edit_rows, write_vectors

    rng = np.random.default_rng(0)
    corpus = ricl.Corpus.from_records([{"id": str(i), "text": f"text {i}", "label": "a"}
                                       for i in range(50)], input="text", output="label")
    matrix = rng.normal(size=(50, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", matrix)
    saved, reference = VectorFile(tmp_path / "v.npy"), matrix
    for step in range(160):  # 1,600 fresh vectors, most of them replaced again later
        ids = [corpus[int(r)].id for r in rng.choice(len(corpus), 10, replace=False)]
        if step % 7 == 3:
            change = CorpusChange.remove(corpus, ids[:2])
        else:
            change = CorpusChange.update(corpus, [{"id": i, "text": f"text {i} v{step}",
                                                   "label": "a"} for i in ids]
                                         + [{"id": f"n{step}", "text": f"new {step}",
                                             "label": "a"}])
        fresh = rng.normal(size=(len(change.fresh), 8)).astype(np.float32)
        saved, reference = edit_rows(saved, change, fresh), edit_rows(reference, change, fresh)
        corpus = change.new
    assert isinstance(saved, EditedVectors) and len(saved.extra) < 2 * len(corpus) + 1024
    np.testing.assert_array_equal(saved[np.arange(len(corpus))], reference)
    write_vectors(saved, tmp_path / "w.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), reference)
