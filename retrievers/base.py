"""The retriever protocol and the candidate lists every retriever returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError, IndexNotBuiltError
from ricl.text import normalize


@runtime_checkable
class Retriever(Protocol):
    """Where candidate demonstrations come from.

    ``index(corpus)`` does the heavy work once; ``search`` is batched over queries.
    """

    kind: str
    corpus: Corpus | None

    def index(self, corpus: Corpus) -> "Retriever": ...

    def search(self, queries: Sequence[str], n: int, *, exclude_self: bool = True) -> "Candidates": ...

    def score_rows(self, queries: Sequence[str], rows: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def features(self, rows: np.ndarray) -> Any: ...

    def kernel(self, rows: np.ndarray) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


@dataclass(frozen=True)
class Candidates:
    """Top-n candidates per query, best first.

    ``rows[i]`` are corpus row indices for query ``i`` and ``scores[i]`` their
    retriever scores (cosine for dense, BM25 otherwise). Lists are ragged only when
    the corpus has fewer than ``n`` usable examples for a query.
    """

    queries: tuple[str, ...]
    rows: tuple[np.ndarray, ...]
    scores: tuple[np.ndarray, ...]
    retriever: Any = field(repr=False)
    excluded: tuple[frozenset[int], ...] = ()

    @property
    def ids(self) -> list[list[str]]:
        corpus = self.retriever.corpus
        return [[corpus[int(row)].id for row in rows] for rows in self.rows]

    def __len__(self) -> int:
        return len(self.queries)

    def kernel(self, i: int) -> np.ndarray:
        """Cosine similarities among query ``i``'s candidates, for diversity selectors."""
        return self.retriever.kernel(self.rows[i])


def check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ConfigError(f"n={n!r}: the number of candidates must be a positive integer.")
    return int(n)


def check_queries(queries: Sequence[str] | str) -> list[str]:
    if isinstance(queries, str):
        raise ConfigError("search() takes a list of queries; wrap a single query as [query].")
    queries = list(queries)
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise ConfigError(f"query {i} is {type(query).__name__}, not a string.")
        if not query.strip():
            raise ConfigError(f"query {i} is empty: give the text to find demonstrations for.")
    return queries


class SelfExclusion:
    """Finds, per query, the corpus rows whose normalised input equals the query.

    A query that is itself in the corpus must never come back as its own
    demonstration: that would leak the answer.
    """

    def __init__(self, corpus: Corpus):
        self._rows_by_text: dict[str, list[int]] = {}
        for row, text in enumerate(corpus.normalized_texts()):
            self._rows_by_text.setdefault(text, []).append(row)

    def rows_of(self, queries: Sequence[str]) -> list[frozenset[int]]:
        return [frozenset(self._rows_by_text.get(normalize(query), ())) for query in queries]


def trim(rows: np.ndarray, scores: np.ndarray, excluded: frozenset[int], n: int):
    """Drop excluded rows and keep the best ``n``."""
    if excluded:
        keep = ~np.isin(rows, list(excluded))
        rows, scores = rows[keep], scores[keep]
    return rows[:n], scores[:n]


class RetrieverBase:
    """Shared plumbing: the corpus, self-exclusion, and the on-disk card."""

    kind = "base"

    def __init__(self):
        self.corpus: Corpus | None = None
        self._self_rows: SelfExclusion | None = None

    def _set_corpus(self, corpus: Corpus) -> None:
        if not isinstance(corpus, Corpus):
            raise ConfigError(f"index() takes a ricl.Corpus, not {type(corpus).__name__}. "
                              "Build one with ricl.Corpus.from_records(...).")
        self.corpus = corpus
        self._self_rows = SelfExclusion(corpus)

    def _require_index(self) -> Corpus:
        if self.corpus is None:
            raise IndexNotBuiltError(f"This {self.kind} retriever has no index yet: "
                                     "call .index(corpus) (or load a saved one) before searching.")
        return self.corpus

    def search(self, queries: Sequence[str], n: int, *, exclude_self: bool = True,
               **options: Any) -> Candidates:
        """Top-``n`` candidates per query, best first, never the query itself
        (unless ``exclude_self=False``)."""
        corpus = self._require_index()
        queries, n = check_queries(queries), check_n(n)
        excluded = self._exclusions(queries, exclude_self)
        if not queries:
            return self._candidates(queries, [], [], [], n)
        fetch = self._fetch_size(n, excluded, len(corpus))
        rows, scores = self._top(queries, fetch, **options)
        return self._candidates(queries, rows, scores, excluded, n)

    def _top(self, queries: list[str], fetch: int, **options: Any):
        """(rows, scores) per query: the best ``fetch`` corpus rows, best first."""
        raise NotImplementedError

    def _exclusions(self, queries: Sequence[str], exclude_self: bool) -> list[frozenset[int]]:
        if not exclude_self:
            return [frozenset()] * len(queries)
        return self._self_rows.rows_of(queries)

    def _candidates(self, queries, rows, scores, excluded, n) -> Candidates:
        kept = [trim(r, s, e, n) for r, s, e in zip(rows, scores, excluded)]
        return Candidates(queries=tuple(queries), rows=tuple(k[0] for k in kept),
                          scores=tuple(k[1] for k in kept), retriever=self,
                          excluded=tuple(excluded))

    @staticmethod
    def _fetch_size(n: int, excluded: list[frozenset[int]], corpus_size: int) -> int:
        extra = max((len(e) for e in excluded), default=0)
        return min(n + extra, corpus_size)

    def _write_card(self, path: Path, card: dict[str, Any]) -> None:
        card = {"kind": self.kind, "corpus_fingerprint": self.corpus.fingerprint(), **card}
        (path / "retriever.json").write_text(json.dumps(card, indent=2) + "\n")
        self.corpus.to_jsonl(path / "corpus.jsonl")


def read_card(path: str | Path) -> tuple[dict[str, Any], Corpus]:
    """Read a saved retriever's card and corpus, with clear errors for a broken directory."""
    path = Path(path)
    card_path = path / "retriever.json"
    if not card_path.is_file():
        raise IndexLoadError(f"{path} is not a saved ricl index (no retriever.json). "
                             "Point to the directory that save() wrote, or rebuild the index.")
    try:
        card = json.loads(card_path.read_text())
        corpus = Corpus.read_saved(path / "corpus.jsonl")
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise IndexLoadError(f"The saved index at {path} is corrupted ({exc}). "
                             "Delete it and rebuild with index() + save().") from None
    if card.get("corpus_fingerprint") != corpus.fingerprint():
        raise IndexLoadError(f"The saved index at {path} does not match its corpus file "
                             "(it was edited or partly overwritten). Rebuild the index.")
    return card, corpus

