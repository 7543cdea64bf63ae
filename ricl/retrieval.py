"""What a retriever is to the core: the protocol every retriever answers, the
candidate lists it returns, and the self-exclusion rule all of them share.

Retrievers themselves live in the ``retrievers`` package; a user may write their
own (anything with these methods) and pass it as ``PromptBuilder(retriever=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ricl.data import Corpus
from ricl.errors import ConfigError
from ricl.text import check_text, normalize


@runtime_checkable
class Retriever(Protocol):
    """Where candidate demonstrations come from: what ``PromptBuilder(retriever=...)``
    accepts besides a name.

    Required: ``index(corpus)`` does the heavy work once and returns the retriever;
    ``search(queries, n, *, exclude_self=True)`` is batched over queries and returns
    :class:`Candidates` (corpus rows and scores per query, best first). A retriever
    that ignores ``exclude_self`` is fine: the builder drops a query's own row itself.

    Optional, used when present: ``kind`` (a short name shown in ``Prompt.retriever``),
    ``corpus`` (the indexed Corpus), ``score_rows(queries, rows)`` (scores of demos a
    selector picked beyond the candidates, e.g. ``random``), ``kernel(rows)``
    (candidate-candidate similarities, needed by ``mmr`` and ``dpp``),
    ``features(rows)`` (vectors, needed by ``votek``), ``encode(texts)`` (scores
    supporting documents), ``save(path)`` (ricl's own retrievers persist; a builder
    over a user's retriever is not saved), ``apply(change)`` (follow a
    :class:`ricl.changes.CorpusChange` without redoing the work for unchanged examples,
    with results equal to ``index(change.new)``; a builder over a retriever without it
    re-indexes the changed corpus) and ``stage(change)`` (the heavy, read-only part of
    ``apply``, run before the builder stops its builds: ``apply(change, staged)``).
    """

    def index(self, corpus: Corpus) -> "Retriever": ...

    def search(self, queries: Sequence[str], n: int, *, exclude_self: bool = True) -> "Candidates": ...


@dataclass(frozen=True)
class Candidates:
    """Top-n candidates per query, best first.

    ``rows[i]`` are corpus row indices for query ``i`` and ``scores[i]`` their
    retriever scores (cosine for dense, BM25 otherwise). Lists are ragged only when
    the corpus has fewer than ``n`` usable examples for a query. ``excluded[i]``: the
    rows left out because they are query ``i`` itself (empty: not reported).
    """

    queries: tuple[str, ...]
    rows: tuple[np.ndarray, ...]
    scores: tuple[np.ndarray, ...]
    retriever: Any = field(default=None, repr=False)
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
        check_text(query, f"query {i}", ConfigError)
    return queries


class SelfExclusion:
    """Finds, per query, the corpus rows whose normalised input equals the query.

    A query that is itself in the corpus must never come back as its own
    demonstration: that would leak the answer. Texts map to example ids, not rows, so a
    change to the corpus is applied in place in time proportional to the change.
    """

    def __init__(self, corpus: Corpus):
        self._corpus = corpus
        self._ids_by_text: dict[str, list[str]] = {}
        for example, text in zip(corpus, corpus.normalized_texts()):
            self._ids_by_text.setdefault(text, []).append(example.id)

    def rows_of(self, queries: Sequence[str]) -> list[frozenset[int]]:
        corpus = self._corpus
        return [frozenset(corpus.row_of(i) for i in self._ids_by_text.get(normalize(query), ()))
                for query in queries]

    def apply(self, change: Any) -> None:
        """Follow a :class:`ricl.changes.CorpusChange` (the owner holds its write lock)."""
        for example in change.gone:
            text = normalize(example.text)
            ids = [i for i in self._ids_by_text.get(text, ()) if i != example.id]
            if ids:
                self._ids_by_text[text] = ids
            else:
                self._ids_by_text.pop(text, None)
        for row in change.fresh:
            example = change.new[int(row)]
            self._ids_by_text.setdefault(normalize(example.text), []).append(example.id)
        self._corpus = change.new


def trim(rows: np.ndarray, scores: np.ndarray, excluded: frozenset[int], n: int):
    """Drop excluded rows and keep the best ``n``."""
    if excluded:
        keep = ~np.isin(rows, list(excluded))
        rows, scores = rows[keep], scores[keep]
    return rows[:n], scores[:n]
