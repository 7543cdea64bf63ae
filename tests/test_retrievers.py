import gc
import json
import tempfile

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

import ricl
from retrievers import load_retriever, make_retriever
from retrievers.bm25 import BM25Retriever
from retrievers.dense import VectorFile
from ricl.errors import ConfigError, IndexLoadError, IndexNotBuiltError


def test_bm25_top10_matches_rank_bm25_okapi(trec_corpus, trec_queries):
    # Same tokenizer, k1, b and IDF: rank_bm25 floors negative IDF at epsilon*mean, bm25s's
    # "robertson" clips it at 0, so epsilon=0 makes the two formulas identical.
    ours = BM25Retriever(k1=1.5, b=0.75, method="robertson").index(trec_corpus)
    docs = [ours.tokenize(text) or [""] for text in trec_corpus.texts()]
    reference = BM25Okapi(docs, k1=1.5, b=0.75, epsilon=0.0)
    found = ours.search(trec_queries, n=10, exclude_self=False)
    compared = 0
    for query, rows, scores in zip(trec_queries, found.rows, found.scores):
        expected = reference.get_scores(ours.tokenize(query))
        # bm25s drops BM25's constant (k1 + 1) numerator factor, which cannot change a ranking
        np.testing.assert_allclose(scores * 2.5, expected[rows], rtol=1e-5, atol=1e-5)
        cutoff = np.sort(expected)[::-1][9]
        strictly_above = set(np.flatnonzero(expected > cutoff + 1e-6))
        assert strictly_above <= set(rows.tolist())
        compared += 1
    assert compared == len(trec_queries) > 30


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_bm25_scores_are_those_of_bm25s(method, trec_corpus, trec_queries):
    import bm25s

    ours = BM25Retriever(method=method).index(trec_corpus)
    reference = bm25s.BM25(k1=1.5, b=0.75, method=method)
    reference.index([ours.tokenize(text) or [""] for text in trec_corpus.texts()],
                    show_progress=False)
    found = ours.search(trec_queries, n=10, exclude_self=False)
    for query, rows, scores in zip(trec_queries, found.rows, found.scores):
        expected = reference.get_scores(ours.tokenize(query))
        np.testing.assert_allclose(scores, expected[rows], rtol=1e-5, atol=1e-6)
        assert scores[0] == pytest.approx(expected.max(), rel=1e-5)


def test_a_bm25_index_saved_by_an_earlier_ricl_loads_by_indexing_its_corpus(tmp_path, bm25,
                                                                          trec_queries):
    bm25.save(tmp_path / "idx")
    (tmp_path / "idx" / "counts.npz").unlink()  # what a bm25s-based save held instead
    (tmp_path / "idx" / "vocabulary.json").unlink()
    (tmp_path / "idx" / "bm25s").mkdir()
    loaded = load_retriever(tmp_path / "idx")
    assert [r.tolist() for r in loaded.search(trec_queries, n=5).rows] == \
        [r.tolist() for r in bm25.search(trec_queries, n=5).rows]


def test_dense_exact_and_chroma_return_the_same_top_k(trec_corpus, trec_queries, dense):
    chroma = ricl.DenseRetriever(backend="chroma").index(trec_corpus, embeddings=dense.embeddings)
    exact = dense.search(trec_queries, n=8)
    approx = chroma.search(trec_queries, n=8)
    for rows_a, rows_b, s_a, s_b in zip(exact.rows, approx.rows, exact.scores, approx.scores):
        assert rows_a.tolist() == rows_b.tolist()
        np.testing.assert_allclose(s_a, s_b, atol=1e-4)


def test_search_is_batched_and_best_first(dense, trec_queries):
    found = dense.search(trec_queries[:5], n=10)
    assert len(found) == 5
    for rows, scores in zip(found.rows, found.scores):
        assert len(rows) == len(set(rows.tolist())) == 10
        assert np.all(np.diff(scores) <= 1e-7)
    assert found.ids[0][0] == dense.corpus[int(found.rows[0][0])].id


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_the_query_is_never_its_own_candidate(kind, bm25, dense, trec_corpus):
    retriever = {"bm25": bm25, "dense": dense}[kind]
    own = trec_corpus[3]
    # same text, different case and spacing: still the same question
    query = "  " + own.text.upper().replace(" ", "  ") + " "
    found = retriever.search([query], n=10)
    assert trec_corpus.row_of(own.id) not in found.rows[0].tolist()
    assert len(found.rows[0]) == 10
    unfiltered = retriever.search([own.text], n=10, exclude_self=False)
    assert unfiltered.rows[0][0] == trec_corpus.row_of(own.id)


@pytest.mark.parametrize("spec", ["bm25", "dense", "dense:chroma"])
def test_save_and_load_give_identical_results(spec, tmp_path, trec_corpus, trec_queries, dense):
    retriever = make_retriever(spec)
    if spec.startswith("dense"):
        retriever.index(trec_corpus, embeddings=dense.embeddings)
    else:
        retriever.index(trec_corpus)
    before = retriever.search(trec_queries, n=5)
    retriever.save(tmp_path / "index")
    loaded = load_retriever(tmp_path / "index")
    after = loaded.search(trec_queries, n=5)
    assert [r.tolist() for r in before.rows] == [r.tolist() for r in after.rows]
    assert loaded.corpus.fingerprint() == trec_corpus.fingerprint()


def test_chroma_index_is_saved_by_copy_resaved_in_place_and_leaves_no_staging_dir(
        tmp_path, monkeypatch, trec_corpus, trec_queries, dense):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    retriever = ricl.DenseRetriever(backend="chroma").index(trec_corpus, embeddings=dense.embeddings)
    assert len(list((tmp_path / "tmp").glob("ricl-chroma-*"))) == 1  # built once, off to the side
    before = [r.tolist() for r in retriever.search(trec_queries, n=5).rows]
    features = retriever.features(np.arange(10))
    retriever.save(tmp_path / "index")
    assert [r.tolist() for r in retriever.search(trec_queries, n=5).rows] == before
    # Once saved, the process serves like a loaded index: vectors mapped from disk, not held.
    assert isinstance(retriever.embeddings, VectorFile)
    np.testing.assert_array_equal(retriever.features(np.arange(10)), features)
    del retriever
    gc.collect()
    assert not list((tmp_path / "tmp").glob("ricl-*"))  # neither the staging dir nor a link
    # A loaded index saved again where it came from: the swap must not leave the
    # process holding the replaced files.
    loaded = load_retriever(tmp_path / "index")
    loaded.save(tmp_path / "index")
    assert [r.tolist() for r in loaded.search(trec_queries, n=5).rows] == before
    assert [r.tolist() for r in load_retriever(tmp_path / "index").search(trec_queries, n=5).rows] == before
    rows = [3, 0, len(trec_corpus) - 1, 3]
    np.testing.assert_array_equal(load_retriever(tmp_path / "index").features(rows),
                                  dense.embeddings[rows])
    # A truncated vector file is reported as a damaged index, not read past its end.
    vectors = tmp_path / "index" / "embeddings.npy"
    vectors.write_bytes(vectors.read_bytes()[:-100])
    with pytest.raises(IndexLoadError, match="truncated"):
        load_retriever(tmp_path / "index")


def test_corrupted_or_foreign_index_dirs_raise_index_load_error(tmp_path, bm25):
    with pytest.raises(IndexLoadError, match="no retriever.json"):
        load_retriever(tmp_path)
    bm25.save(tmp_path / "idx")
    (tmp_path / "idx" / "corpus.jsonl").write_text('{"__corpus__": {}}\n{"id": "x"}\n')
    with pytest.raises(IndexLoadError):
        load_retriever(tmp_path / "idx")
    bm25.save(tmp_path / "idx2")
    card = json.loads((tmp_path / "idx2" / "retriever.json").read_text())
    (tmp_path / "idx2" / "retriever.json").write_text(json.dumps({**card, "kind": "faiss"}))
    with pytest.raises(IndexLoadError, match="unknown retriever kind"):
        load_retriever(tmp_path / "idx2")


def test_misuse_gives_typed_errors(trec_queries):
    with pytest.raises(IndexNotBuiltError, match=r"call .index\(corpus\)"):
        BM25Retriever().search(trec_queries, n=3)
    with pytest.raises(ConfigError, match="unknown"):
        make_retriever("faiss")
    with pytest.raises(ConfigError, match="neither"):
        make_retriever("/no/such/model/dir")
    with pytest.raises(ConfigError, match="method"):
        BM25Retriever(method="bm42")


def test_bad_queries_are_rejected(bm25):
    with pytest.raises(ConfigError, match="wrap a single query"):
        bm25.search("one query", n=3)
    with pytest.raises(ConfigError, match="empty"):
        bm25.search([""], n=3)
    with pytest.raises(ConfigError, match="positive integer"):
        bm25.search(["ok"], n=0)
