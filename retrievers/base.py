"""Plumbing shared by ricl's retrievers: self-exclusion, trimming, the on-disk card."""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from ricl.changes import CorpusChange
from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError, IndexNotBuiltError, RiclError
from ricl.locks import ReadWriteLock
from ricl.retrieval import Candidates, SelfExclusion, check_n, check_queries, trim


RETRIEVER_KIND = "retriever"  # the kind in a saved retriever's ricl.io marker


class RetrieverBase:
    """Shared plumbing: the corpus, self-exclusion, changes, and the on-disk card.

    Each call (search, a change) sees one version of the index: searches share a
    readers-writer lock that a change holds alone. A selector that calls back between
    calls (``kernel`` after ``search``) sees one version only through a
    ``PromptBuilder``, which holds it for a whole prompt.
    """

    kind = "base"

    def __init__(self):
        self.corpus: Corpus | None = None
        self._self_rows: SelfExclusion | None = None
        self._rw = ReadWriteLock()

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
        queries, n = check_queries(queries), check_n(n)
        with self._rw.read():
            corpus = self._require_index()
            excluded = self._exclusions(queries, exclude_self)
            if not queries:
                return self._candidates(queries, [], [], [], n)
            fetch = self._fetch_size(n, excluded, len(corpus))
            rows, scores = self._top(queries, fetch, **options)
            return self._candidates(queries, rows, scores, excluded, n)

    # -- changes --------------------------------------------------------------------------
    def add(self, records, *, id: str | None = "id") -> CorpusChange:
        """Add examples (dicts with the corpus's fields, or ``ricl.Example``), validated
        as ``Corpus.from_records`` validates them; an id already there is a
        ``DuplicateIdError`` (use :meth:`update`). Searches afterwards equal those of an
        index built from scratch on the new corpus."""
        return self._change(lambda corpus: CorpusChange.add(corpus, records, id=id))

    def update(self, records, *, id: str | None = "id") -> CorpusChange:
        """Upsert by id: replace the examples with these ids in place, add the others."""
        return self._change(lambda corpus: CorpusChange.update(corpus, records, id=id))

    def remove(self, ids) -> CorpusChange:
        """Remove the examples with these ids (an unknown id: ``UnknownIdError``)."""
        return self._change(lambda corpus: CorpusChange.remove(corpus, ids))

    def _change(self, make) -> CorpusChange:
        with self._rw.write():
            change = make(self._require_index())
            self.apply(change)
        return change

    def stage(self, change: CorpusChange) -> Any:
        """The slow part of applying ``change`` (encoding or tokenising its fresh
        examples), which leaves the index as it is: a builder runs it while prompts are
        still being built, and holds them back only for :meth:`apply`."""
        return [change.new[int(row)].text for row in change.fresh]

    def apply(self, change: CorpusChange, staged: Any = None) -> None:
        """Follow ``change`` (made from this retriever's corpus) in place."""
        with self._rw.write():
            corpus = self._require_index()
            if change.old is not corpus:
                raise ConfigError("This change was made from another corpus than the one this "
                                  f"{self.kind} retriever holds now (it changed since, or it was "
                                  "never this one's); make it from retriever.corpus.")
            if change.is_empty:
                return
            self._apply(change, self.stage(change) if staged is None else staged)
            self.corpus = change.new
            self._self_rows.apply(change)

    def _apply(self, change: CorpusChange, staged: Any) -> None:
        """Turn the index for ``change.old`` into the index for ``change.new``."""
        raise NotImplementedError

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


# What reading a damaged saved index can raise from numpy, scipy, bm25s, chromadb or
# json before ricl's own checks see it: each becomes one IndexLoadError at load().
_DAMAGE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, EOFError,
           zipfile.BadZipFile)


def damaged_index_is_a_load_error(load):
    """Wrap a ``load(cls, path)``: whatever a damaged directory makes the readers raise
    comes out as :class:`IndexLoadError` naming the path; ricl's own errors pass."""

    @functools.wraps(load)
    def checked(cls, path, *args, **kwargs):
        try:
            return load(cls, path, *args, **kwargs)
        except RiclError:
            raise
        except _DAMAGE as exc:
            raise IndexLoadError(f"The saved index at {path} is damaged ({type(exc).__name__}: "
                                 f"{exc}). Delete it and rebuild with index() + save().") from None

    return checked


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
    if not isinstance(card, dict) or card.get("corpus_fingerprint") != corpus.fingerprint():
        raise IndexLoadError(f"The saved index at {path} does not match its corpus file "
                             "(it was edited or partly overwritten). Rebuild the index.")
    return card, corpus

