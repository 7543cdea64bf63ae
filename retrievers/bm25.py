"""BM25 on bm25s: the index is a sparse matrix, a batch of queries is a sum of rows.

Robertson et al. (1994) term weighting; ``method`` picks the variant as in
Kamphuis et al. (2020): "lucene" (default) or "robertson" (what
``rank_bm25.BM25Okapi`` computes, with negative IDF clipped to 0).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from retrievers.base import RETRIEVER_KIND, RetrieverBase, damaged_index_is_a_load_error, read_card
from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError
from ricl.io import atomic_dir
from ricl.text import normalize

# bm25s logs every index build at DEBUG through its own handler; keep it quiet
logging.getLogger("bm25s").setLevel(logging.WARNING)

_WORD = re.compile(r"\w+")
_METHODS = ("lucene", "robertson", "atire")
_QUERY_CHUNK = 256


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def analyze(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased word tokens without stopwords: the one tokenizer BM25 uses everywhere."""
    return [token for token in _WORD.findall(normalize(text)) if token not in stopwords]


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
        self._bm25 = None
        self._terms: sp.csr_matrix | None = None  # l2-normalised tf-idf rows, for kernels
        self._matrix: sp.csr_matrix | None = None

    def tokenize(self, text: str) -> list[str]:
        return analyze(text, self._stop)

    def index(self, corpus: Corpus) -> BM25Retriever:
        import bm25s

        self._set_corpus(corpus)
        tokens = [self.tokenize(text) or [""] for text in corpus.texts()]
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._bm25.index(tokens, show_progress=len(tokens) > 20_000)
        self._matrix = None
        self.__dict__.pop("_idf", None)  # a new index has new document frequencies
        self._terms = _tfidf(tokens, self._bm25.vocab_dict)
        return self

    def _top(self, queries: list[str], fetch: int):
        rows, scores = [], []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = self._query_matrix(queries[start:start + _QUERY_CHUNK]) @ self._score_matrix()
            for r, s in (_top_k_row(chunk, i, fetch) for i in range(chunk.shape[0])):
                rows.append(r)
                scores.append(s)
        return rows, scores

    def _score_matrix(self) -> sp.csr_matrix:
        """bm25s's eager index as a (terms x documents) sparse matrix of per-term scores."""
        if self._matrix is None:
            s = self._bm25.scores
            self._matrix = sp.csr_matrix((s["data"], s["indices"], s["indptr"]),
                                         shape=(len(s["indptr"]) - 1, s["num_docs"]))
        return self._matrix

    def _query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Term counts per query (repeated terms count twice, as in rank_bm25 and bm25s)."""
        vocab = self._bm25.vocab_dict
        rows, cols = [], []
        for i, query in enumerate(queries):
            for term in self.tokenize(query):
                if term in vocab:
                    rows.append(i)
                    cols.append(vocab[term])
        counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                               shape=(len(queries), self._score_matrix().shape[0]))
        counts.sum_duplicates()
        return counts

    def score_rows(self, queries: Sequence[str], rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._require_index()
        return [self._bm25.get_scores(self.tokenize(query))[np.asarray(r, dtype=np.int64)]
                for query, r in zip(queries, rows)]

    def features(self, rows: np.ndarray) -> sp.csr_matrix:
        """Unit-length tf-idf vectors (sparse) of the given corpus rows."""
        self._require_index()
        return self._terms[np.asarray(rows, dtype=np.int64)]

    def kernel(self, rows: np.ndarray) -> np.ndarray:
        """Cosine similarity of the candidates' tf-idf vectors."""
        block = self.features(rows)
        return np.asarray((block @ block.T).todense(), dtype=np.float64)

    def term_weights(self, text: str) -> dict[str, float]:
        """IDF of each distinct known term of ``text`` (for term-coverage selection)."""
        self._require_index()
        vocab = self._bm25.vocab_dict
        return {term: float(self._idf[vocab[term]]) for term in set(self.tokenize(text))
                if term in vocab}

    def row_terms(self, row: int) -> set[str]:
        return set(self.tokenize(self.corpus[int(row)].text))

    @functools.cached_property
    def _idf(self) -> np.ndarray:
        """Lucene IDF per term, computed once per index (the coverage selector asks per query)."""
        df = np.bincount(self._terms.indices, minlength=self._terms.shape[1])
        n = self._terms.shape[0]
        return np.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the index to ``path``: new, an empty directory, or a retriever saved
        before (replaced). ``overwrite=True`` also replaces another kind of ricl output;
        a user's file or directory is never replaced (``ricl.errors.OverwriteError``)."""
        self._require_index()
        with atomic_dir(path, RETRIEVER_KIND, overwrite=overwrite) as tmp:
            self._bm25.save(str(tmp / "bm25s"))
            sp.save_npz(tmp / "terms.npz", self._terms)
            self._write_card(tmp, {"k1": self.k1, "b": self.b, "method": self.method,
                                   "stopwords": self.use_stopwords})

    @classmethod
    @damaged_index_is_a_load_error
    def load(cls, path: str | Path) -> BM25Retriever:
        import bm25s

        card, corpus = read_card(path)
        retriever = cls(card["k1"], card["b"], card["method"], card["stopwords"])
        try:
            retriever._bm25 = bm25s.BM25.load(str(Path(path) / "bm25s"))
            retriever._terms = sp.load_npz(Path(path) / "terms.npz").tocsr()
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise IndexLoadError(f"The BM25 index at {path} is corrupted ({exc}). "
                                 "Rebuild it with index() + save().") from None
        retriever._set_corpus(corpus)
        params = [getattr(retriever._bm25, "k1", None), getattr(retriever._bm25, "b", None),
                  (getattr(retriever._bm25, "scores", None) or {}).get("num_docs")]
        if any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in params) \
                or params[2] != len(corpus):
            raise IndexLoadError(f"The BM25 index at {path} has damaged parameters "
                                 f"(k1, b, num_docs = {params}). Rebuild it.")
        if retriever._terms.shape[0] != len(corpus):
            raise IndexLoadError(f"The BM25 index at {path} has {retriever._terms.shape[0]} rows "
                                 f"but its corpus has {len(corpus)}. Rebuild it.")
        return retriever


def _tfidf(tokens: list[list[str]], vocab: dict[str, int]) -> sp.csr_matrix:
    rows, cols = [], []
    for row, doc in enumerate(tokens):
        for term in doc:
            rows.append(row)
            cols.append(vocab[term])
    tf = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                       shape=(len(tokens), len(vocab)))
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=len(vocab))
    idf = np.log(1.0 + (len(tokens) - df + 0.5) / (df + 0.5)).astype(np.float32)
    weighted = tf.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.diags(1.0 / norms) @ weighted


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
