import pytest

from ricl.chunker import DEFAULT_BIAS, LongContextChunker, edges_order
from ricl.errors import BudgetError, ConfigError


@pytest.fixture(scope="module")
def chunker(tokenizer):
    return LongContextChunker(chunk_tokens=64, overlap=8, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def document(trec):
    # a real long text: a few hundred TREC questions run together
    return " ".join(r["text"] for r in trec.pool[:120])


def assert_reconstructs(document, chunks):
    """Every chunk is the document between its offsets, and together they cover every
    non-space character of it."""
    assert all(document[c.start:c.end] == c.text for c in chunks)
    covered = [False] * len(document)
    for c in chunks:
        covered[c.start:c.end] = [True] * (c.end - c.start)
    assert all(covered[i] for i, ch in enumerate(document) if not ch.isspace())


def test_chunks_never_exceed_the_bound_and_reconstruct_the_document(chunker, document):
    chunks = chunker.split(document, doc_id="trec", metadata={"source": "staicc"})
    assert len(chunks) > 10
    assert all(c.tokens <= 64 for c in chunks)
    assert all(chunker.count(c.text) == c.tokens for c in chunks)
    assert_reconstructs(document, chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].doc_id == "trec" and chunks[0].metadata == {"source": "staicc"}


def test_one_unbroken_run_longer_than_the_bound_is_still_cut(chunker):
    text = "x" * 3000  # no sentence or word boundary at all
    chunks = chunker.split(text)
    assert all(c.tokens <= 64 for c in chunks)
    assert_reconstructs(text, chunks)


def test_edges_puts_the_top_items_at_the_two_ends():
    assert edges_order(5) == [1, 3, 4, 2, 0]
    assert edges_order(5, bias=1.0) == [4, 3, 2, 1, 0]
    assert edges_order(5, bias=0.0) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError):
        edges_order(3, bias=1.5)


def test_placement_respects_the_budget_exactly_and_reports_drops(chunker, document, tokenizer):
    chunks = chunker.split(document)[:12]
    texts = [c.text for c in chunks]
    scores = [float(i % 5) + i / 100 for i in range(len(texts))]
    separator = chunker.count("\n\n")
    budget = 200
    placement = chunker.place(texts, scores, budget, reserved=20)
    used = sum(chunker.count(texts[i]) + separator for i in placement.order)
    assert used == placement.tokens and used + 20 <= budget
    assert placement.dropped and set(placement.order).isdisjoint(placement.dropped)
    ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
    assert placement.order[-1] == ranked[0]  # the default bias leans to the end
    kept = sorted(placement.order, key=lambda i: -scores[i])
    lean = [kept[r] for r in edges_order(len(kept), DEFAULT_BIAS)]
    assert list(placement.order) == lean and lean[0] != kept[1]
    both_ends = LongContextChunker(chunk_tokens=64, overlap=8, tokenizer=tokenizer,
                                   bias=0.5).place(texts, scores, budget, reserved=20)
    assert both_ends.order[-1] == ranked[0] and both_ends.order[0] == ranked[1]
    assert chunker.place(texts, scores, budget, reserved=20) == placement  # deterministic
    assert chunker.place(texts, scores, budget, 20, strategy="front").order[0] == ranked[0]
    assert chunker.place(texts, scores, budget, 20, strategy="back").order[-1] == ranked[0]
    given = chunker.place(texts, scores, budget, 20, strategy="given").order
    assert list(given) == sorted(given)
    with pytest.raises(BudgetError):
        chunker.place(texts, scores, budget=10, reserved=11)


def test_bad_chunker_arguments():
    with pytest.raises(ConfigError):
        LongContextChunker(chunk_tokens=10, overlap=10)
    with pytest.raises(ConfigError):
        LongContextChunker(strategy="middle")
