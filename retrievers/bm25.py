"""BM25 over term-count postings that change in place, scored with sparse matrices.

Robertson et al. (1994) term weighting; ``method`` picks the variant as in
Kamphuis et al. (2020): "lucene" (default) or "robertson" (what
``rank_bm25.BM25Okapi`` computes, with negative IDF clipped to 0), or "atire". The
formulas are those of bm25s (``bm25s.scoring``), which the tests hold these scores to.

How an index changes without a rebuild: a BM25 score depends on the whole corpus (IDF on
the number of documents and each term's document frequency, length normalisation on the
average document length), so an eager matrix of per-term scores, as bm25s keeps, would go
stale with every added document. Here the index keeps only what is local to a document,
its term counts (a documents x terms sparse matrix, one row per corpus row, plus the
vocabulary), in two layouts: by document (for a document's tf-idf vector) and by term
(the postings a query reads). A change tokenises only its fresh documents and splices
their entries into both, in vectorised passes, no Python loop over documents. The
corpus-wide statistics (document frequencies, average length, IDF, each posting's
term-frequency weight, which holds the average length) are derived once per version, on
the first search after a change. IDF is applied on the query's side at query time, so a
query is still a sum of rows. Each query sums its terms in the order of the terms' text,
not of their column numbers (which depend on the order in which the vocabulary grew), so
the scores are bit for bit those of an index built from scratch on the same corpus, and
so are the rows.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from retrievers.base import RETRIEVER_KIND, RetrieverBase, damaged_index_is_a_load_error, read_card
from ricl.changes import CorpusChange
from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError
from ricl.io import atomic_dir, write_json
from ricl.text import normalize

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
_METHODS = ("lucene", "robertson", "atire")
_QUERY_CHUNK = 256
FORMAT = 2  # of a saved BM25 index: counts.npz + vocabulary.json (1: a bm25s directory)


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def analyze(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased word tokens without stopwords: the one tokenizer BM25 uses everywhere."""
    return [token for token in _WORD.findall(normalize(text)) if token not in stopwords]


# -- the variants (Kamphuis et al. 2020, as bm25s implements them) ------------------------


def idf_lucene(df: np.ndarray, n: int) -> np.ndarray:
    return np.log(1.0 + (n - df + 0.5) / (df + 0.5))


def idf_robertson(df: np.ndarray, n: int) -> np.ndarray:
    """The original IDF, clipped at 0 (bm25s's default ``allow_negative=False``)."""
    return np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))


def idf_atire(df: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)


_IDF = {"lucene": idf_lucene, "robertson": idf_robertson, "atire": idf_atire}


def term_frequency_weight(tf: np.ndarray, norm: np.ndarray, method: str, k1: float) -> np.ndarray:
    """tf / (tf + k1·(1 − b + b·dl/avgdl)), ``norm`` being the second term; ATIRE keeps
    the constant (k1 + 1) numerator that Lucene and Robertson drop."""
    weight = tf / (tf + norm)
    return weight * (k1 + 1.0) if method == "atire" else weight


@dataclass(frozen=True)
class _Statistics:
    """What one version of the counts implies for the whole corpus."""

    weights: sp.csr_matrix  # terms x documents: the postings, each its term-frequency weight
    idf: np.ndarray  # per term, the method's IDF (applied to the query's side)
    idf_lucene: np.ndarray  # per term, for the tf-idf vectors of kernels and coverage
    df: np.ndarray


class BM25Retriever(RetrieverBase):
    kind = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: bool = True):
        super().__init__()
        if method not in _METHODS:
            raise ConfigError(f"BM25 method {method!r} is unknown; choose one of {_METHODS}.")
        if not k1 >= 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={k1}, b={b}).")
        self.k1, self.b, self.method, self.use_stopwords = float(k1), float(b), method, stopwords
        self._stop = _stopwords() if stopwords else frozenset()
        self._counts: sp.csr_matrix | None = None  # documents x terms, term counts
        self._lengths: np.ndarray | None = None  # tokens per document
        self._postings: sp.csr_matrix | None = None  # terms x documents, the same counts
        self._vocab: dict[str, int] = {}
        self._statistics: _Statistics | None = None
        self._statistics_lock = threading.Lock()

    def tokenize(self, text: str) -> list[str]:
        return analyze(text, self._stop)

    def _document_tokens(self, texts: Sequence[str]) -> list[list[str]]:
        # A document without a token gets the empty token, as bm25s needs: its length
        # is 1, and BM25 scores stay those of bm25s and rank_bm25 on the same input.
        return [self.tokenize(text) or [""] for text in texts]

    def index(self, corpus: Corpus) -> BM25Retriever:
        if not isinstance(corpus, Corpus):
            self._set_corpus(corpus)  # raises the usual error
        vocab: dict[str, int] = {}
        counts = count_matrix(self._document_tokens(corpus.texts()), vocab)
        with self._rw.write():
            self._set_corpus(corpus)
            self._set_counts(vocab, counts)
        return self

    # -- changes ------------------------------------------------------------------------
    def stage(self, change: CorpusChange) -> list[list[str]]:
        return self._document_tokens(super().stage(change))

    def _set_counts(self, vocab: dict[str, int], counts: sp.csr_matrix) -> None:
        self._vocab, self._counts, self._statistics = vocab, counts, None
        self._lengths = document_lengths(counts)
        self._postings = counts.T.tocsr()

    def _apply(self, change: CorpusChange, staged: list[list[str]]) -> None:
        fresh = count_matrix(staged, self._vocab)  # the vocabulary only grows
        old = widen(self._counts, len(self._vocab))
        lengths = np.concatenate([self._lengths, document_lengths(fresh)])
        if not len(change.fresh):  # removals only
            counts = old[change.gather]
        else:
            counts = sp.vstack([old, fresh], format="csr")
            counts = counts if change.is_append else counts[change.gather]
        postings = edit_postings(self._postings, change, fresh)
        self._counts, self._postings, self._statistics = counts, postings, None
        self._lengths = lengths if change.is_append else lengths[change.gather]

    def _stats(self) -> _Statistics:
        """The corpus-wide statistics of the current counts, derived once per version."""
        stats = self._statistics
        if stats is None:
            with self._statistics_lock:
                if self._statistics is None:
                    self._statistics = derive_statistics(self._postings, self._lengths,
                                                         self.k1, self.b, self.method)
                stats = self._statistics
        return stats

    # -- search -------------------------------------------------------------------------
    def _top(self, queries: list[str], fetch: int):
        rows, scores = [], []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = self._scores(queries[start:start + _QUERY_CHUNK])
            for r, s in (_top_k_row(chunk, i, fetch) for i in range(chunk.shape[0])):
                rows.append(r)
                scores.append(s)
        return rows, scores

    def _scores(self, queries: Sequence[str]) -> sp.csr_matrix:
        """BM25 scores, queries x documents (sparse: zero where no term is shared): the
        queries' term counts (a repeated term counts twice, as in rank_bm25 and bm25s)
        weighted by IDF, times the term-frequency weights of the postings."""
        stats = self._stats()
        vocab = self._vocab
        indptr, columns, counts = [0], [], []
        for query in queries:
            # sorted by text: the sparse product sums in this order (see the module doc)
            terms = sorted(Counter(t for t in self.tokenize(query) if t in vocab).items())
            columns.extend(vocab[term] for term, _ in terms)
            counts.extend(count for _, count in terms)
            indptr.append(len(columns))
        columns = np.asarray(columns, dtype=np.int64)
        query_weights = sp.csr_matrix(
            (np.asarray(counts, dtype=np.float32) * stats.idf[columns], columns,
             np.asarray(indptr, dtype=np.int64)), shape=(len(queries), stats.weights.shape[0]))
        return query_weights @ stats.weights

    def score_rows(self, queries: Sequence[str], rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self._rw.read():
            self._require_index()
            scores = self._scores(list(queries))
            return [np.asarray(scores[i].todense()).ravel()[np.asarray(r, dtype=np.int64)]
                    for i, r in enumerate(rows)]

    def features(self, rows: np.ndarray) -> sp.csr_matrix:
        """Unit-length tf-idf vectors (sparse) of the given corpus rows (Lucene IDF)."""
        with self._rw.read():
            self._require_index()
            block = self._counts[np.asarray(rows, dtype=np.int64)]
            weighted = block.multiply(self._stats().idf_lucene[None, :]).tocsr()
            norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            return sp.csr_matrix(sp.diags(1.0 / norms) @ weighted)

    def kernel(self, rows: np.ndarray) -> np.ndarray:
        """Cosine similarity of the candidates' tf-idf vectors."""
        block = self.features(rows)
        return np.asarray((block @ block.T).todense(), dtype=np.float64)

    def term_weights(self, text: str) -> dict[str, float]:
        """IDF of each distinct term of ``text`` that the corpus holds (for term-coverage
        selection)."""
        with self._rw.read():
            self._require_index()
            stats, vocab = self._stats(), self._vocab
            return {term: float(stats.idf_lucene[vocab[term]]) for term in set(self.tokenize(text))
                    if term in vocab and stats.df[vocab[term]] > 0}

    def row_terms(self, row: int) -> set[str]:
        return set(self.tokenize(self.corpus[int(row)].text))

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the index to ``path``: new, an empty directory, or a retriever saved
        before (replaced). ``overwrite=True`` also replaces another kind of ricl output;
        a user's file or directory is never replaced (``ricl.errors.OverwriteError``)."""
        with self._rw.read():
            self._require_index()
            with atomic_dir(path, RETRIEVER_KIND, overwrite=overwrite) as tmp:
                sp.save_npz(tmp / "counts.npz", self._counts)
                terms = sorted(self._vocab, key=self._vocab.__getitem__)
                write_json(tmp / "vocabulary.json", terms)
                self._write_card(tmp, {"k1": self.k1, "b": self.b, "method": self.method,
                                       "stopwords": self.use_stopwords, "format": FORMAT})

    @classmethod
    @damaged_index_is_a_load_error
    def load(cls, path: str | Path) -> BM25Retriever:
        path = Path(path)
        card, corpus = read_card(path)
        retriever = cls(card["k1"], card["b"], card["method"], card["stopwords"])
        if not (path / "counts.npz").is_file() and (path / "bm25s").is_dir():
            log.info("%s holds a BM25 index saved by an earlier ricl (bm25s); indexing its "
                     "corpus again.", path)
            return retriever.index(corpus)
        try:
            counts = sp.load_npz(path / "counts.npz").tocsr()
            terms = json.loads((path / "vocabulary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise IndexLoadError(f"The BM25 index at {path} is corrupted ({exc}). "
                                 "Rebuild it with index() + save().") from None
        if (not isinstance(terms, list) or len(set(terms)) != len(terms)
                or counts.shape != (len(corpus), len(terms))):
            raise IndexLoadError(f"The BM25 index at {path} holds {counts.shape} term counts for "
                                 f"{len(corpus)} examples and a vocabulary of "
                                 f"{len(terms) if isinstance(terms, list) else '?'} terms. "
                                 "Rebuild it.")
        retriever._set_corpus(corpus)
        retriever._set_counts({term: column for column, term in enumerate(terms)}, counts)
        return retriever


def count_matrix(documents: Sequence[Sequence[str]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Term counts, one row per tokenised document, columns by ``vocab`` (terms it does
    not hold yet are added to it)."""
    indptr, indices, data = [0], [], []
    for tokens in documents:
        counts = Counter(vocab.setdefault(token, len(vocab)) for token in tokens)
        indices.extend(counts)
        data.extend(counts.values())
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                          np.asarray(indptr, dtype=np.int64)), shape=(len(documents), len(vocab)))


def widen(counts: sp.csr_matrix, n_terms: int) -> sp.csr_matrix:
    """The same rows with room for ``n_terms`` columns (no copy)."""
    if counts.shape[1] == n_terms:
        return counts
    return sp.csr_matrix((counts.data, counts.indices, counts.indptr),
                         shape=(counts.shape[0], n_terms))


def document_lengths(counts: sp.csr_matrix) -> np.ndarray:
    """Tokens per document (every document has at least one: see ``_document_tokens``)."""
    return np.add.reduceat(counts.data, counts.indptr[:-1]).astype(np.float32) \
        if counts.shape[0] else np.zeros(0, dtype=np.float32)


def edit_postings(postings: sp.csr_matrix, change: CorpusChange,
                  fresh: sp.csr_matrix) -> sp.csr_matrix:
    """The postings (terms x documents) after ``change``, without transposing the counts
    again: entries of removed or replaced documents are dropped and the others renumbered
    (one vectorised pass), and each term's entries of the fresh documents (``fresh``:
    their counts, one row each) are inserted at the end of its row. A row's entries need
    not be in document order: a query's score sums over its terms, not over a row."""
    n_terms = fresh.shape[1]
    indptr = np.concatenate([postings.indptr, np.full(n_terms - postings.shape[0],
                                                      postings.indptr[-1])])
    indices, data = postings.indices, postings.data
    if not change.is_append:
        continuing = np.ones(len(change.new), dtype=bool)
        continuing[change.fresh] = False
        new_row = np.full(len(change.old), -1, dtype=indices.dtype)
        new_row[change.origin[continuing]] = np.flatnonzero(continuing)
        indices = new_row[indices]
        keep = indices >= 0
        dropped = np.flatnonzero(~keep)  # few: the changed documents' entries
        per_term = np.bincount(np.searchsorted(indptr, dropped, side="right") - 1,
                               minlength=n_terms)
        indices, data = indices[keep], data[keep]
        indptr = indptr - np.concatenate([[0], np.cumsum(per_term)])
    if fresh.nnz:
        by_term = fresh.T.tocsr()
        per_term = np.diff(by_term.indptr)
        at = np.repeat(indptr[1:], per_term)  # the end of each term's row
        indices = np.insert(indices, at, change.fresh[by_term.indices].astype(indices.dtype))
        data = np.insert(data, at, by_term.data)
        indptr = indptr + np.concatenate([[0], np.cumsum(per_term)])
    return sp.csr_matrix((data, indices, indptr), shape=(n_terms, len(change.new)))


def derive_statistics(postings: sp.csr_matrix, lengths: np.ndarray, k1: float, b: float,
                      method: str) -> _Statistics:
    """Weighted postings and IDF of the corpus whose term counts these are (float32,
    as bm25s keeps them)."""
    n = postings.shape[1]
    df = np.diff(postings.indptr).astype(np.float64)  # one entry per (term, document)
    average = float(lengths.sum(dtype=np.float64)) / n
    norm = (k1 * ((1.0 - b) + b * lengths.astype(np.float64) / average)).astype(np.float32)
    weights = term_frequency_weight(postings.data, norm[postings.indices], method, k1)
    return _Statistics(weights=sp.csr_matrix((weights.astype(np.float32, copy=False),
                                              postings.indices, postings.indptr),
                                             shape=postings.shape),
                       idf=_IDF[method](df, n).astype(np.float32),
                       idf_lucene=idf_lucene(df, n), df=df)


def _top_k_row(scores: sp.csr_matrix, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` documents of one query row, ties broken by lower row index.

    Only documents sharing a term with the query have a non-zero score; when there
    are fewer than ``k`` of those, zero-score documents (lowest rows first) fill up.
    """
    start, end = scores.indptr[i], scores.indptr[i + 1]
    docs = scores.indices[start:end].astype(np.int64)
    values = scores.data[start:end]
    if len(docs) > k:
        keep = np.argpartition(-values, k - 1)[:k]
        cutoff = values[keep].min()
        keep = np.flatnonzero(values >= cutoff)  # all ties at the cut-off, then trim below
        docs, values = docs[keep], values[keep]
    order = np.lexsort((docs, -values))[:k]
    docs, values = docs[order], values[order].astype(np.float32)
    if len(docs) < k:
        fill = np.setdiff1d(np.arange(k + len(docs)), docs)[: k - len(docs)]
        docs = np.concatenate([docs, fill])
        values = np.concatenate([values, np.zeros(len(fill), dtype=np.float32)])
    return docs, values
