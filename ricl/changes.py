"""Changing a corpus without rebuilding its index: add, update (upsert by id), remove.

A :class:`CorpusChange` is made from the corpus as it is and the records or ids a caller
gives. The records are validated exactly as :meth:`Corpus.from_records` validates them,
and every check runs before anything is touched, so a bad call raises a typed error from
``ricl.errors`` and changes nothing. The change then tells each index how to turn its
rows for ``old`` into rows for ``new`` while redoing work (embedding, tokenising) only
for the examples whose content is new.

Row order of ``new``: the rows of ``old`` that remain, in their order, with an updated
example in the place of the one it replaces, then the added examples in the order given.
An index built from scratch on ``new`` is what an index must equal after the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ricl.data import Corpus, Example
from ricl.errors import ConfigError, CorpusError, DuplicateIdError, UnknownIdError

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CorpusChange:
    """One change from ``old`` to ``new``.

    ``origin[r]``: the row of ``old`` that row ``r`` of ``new`` continues (the same id),
    or -1 for an added example. ``fresh``: the rows of ``new`` whose content is new (added
    or updated), ascending. ``removed``: the rows of ``old`` that are gone, ascending.
    """

    old: Corpus
    new: Corpus
    origin: np.ndarray
    fresh: np.ndarray
    removed: np.ndarray

    # -- what changed ----------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return len(self.fresh) == 0 and len(self.removed) == 0

    @property
    def is_append(self) -> bool:
        """Only additions: ``new`` is ``old`` followed by the fresh rows."""
        return len(self.removed) == 0 and bool(np.all(self.origin[self.fresh] < 0))

    @property
    def updated(self) -> np.ndarray:
        """Rows of ``new`` that replace an example of ``old`` in place."""
        return self.fresh[self.origin[self.fresh] >= 0]

    @property
    def added_ids(self) -> tuple[str, ...]:
        return tuple(self.new[int(r)].id for r in self.fresh[self.origin[self.fresh] < 0])

    @property
    def updated_ids(self) -> tuple[str, ...]:
        return tuple(self.new[int(r)].id for r in self.updated)

    @property
    def removed_ids(self) -> tuple[str, ...]:
        return tuple(self.old[int(r)].id for r in self.removed)

    @property
    def gone(self) -> list[Example]:
        """The examples of ``old`` that are no longer there as they were (removed or
        replaced by an update)."""
        return ([self.old[int(r)] for r in self.removed]
                + [self.old[int(self.origin[r])] for r in self.updated])

    @property
    def gather(self) -> np.ndarray:
        """Per row of ``new``, where its index row comes from: a row of ``old``
        (``0 .. len(old)-1``), or ``len(old) + j`` for the ``j``-th fresh row. An index
        keeps one row per example as an array or matrix ``M``:
        ``concatenate([M, rows_for_fresh])[gather]`` is ``M`` for ``new``."""
        gather = self.origin.copy()
        gather[self.fresh] = len(self.old) + np.arange(len(self.fresh))
        return gather

    def __repr__(self) -> str:
        return (f"CorpusChange({len(self.old)} -> {len(self.new)} examples: "
                f"{len(self.added_ids)} added, {len(self.updated)} updated, "
                f"{len(self.removed)} removed)")

    # -- making one ------------------------------------------------------------------------
    @classmethod
    def add(cls, corpus: Corpus, records: Iterable[Any], *, id: str | None = "id") -> CorpusChange:
        """Add new examples at the end; an id the corpus already holds is a
        :class:`DuplicateIdError` that points to :meth:`update`."""
        examples = _examples(corpus, records, id, "add")
        present = [e.id for e in examples if corpus.has_id(e.id)]
        if present:
            more = f" (and {len(present) - 1} more)" if len(present) > 1 else ""
            raise DuplicateIdError(
                f"add(): id {present[0]!r}{more} is already in the corpus (row "
                f"{corpus.row_of(present[0])}); nothing was added. Use update() to change an "
                "existing example, or give the new records ids of their own.")
        n = len(corpus)
        new = corpus._with({}, examples) if examples else corpus
        origin = np.concatenate([np.arange(n, dtype=np.int64),
                                 np.full(len(examples), -1, dtype=np.int64)])
        return cls(corpus, new, origin, np.arange(n, n + len(examples), dtype=np.int64), _EMPTY)

    @classmethod
    def update(cls, corpus: Corpus, records: Iterable[Any], *,
               id: str | None = "id") -> CorpusChange:
        """Upsert by id: a record whose id is in the corpus replaces that example in its
        row; a record with a new id is added at the end. A record equal to the example
        it would replace changes nothing."""
        examples = _examples(corpus, records, id, "update")
        replaced: dict[int, Example] = {}
        appended: list[Example] = []
        for example in examples:
            if not corpus.has_id(example.id):
                appended.append(example)
            elif corpus[corpus.row_of(example.id)] != example:
                replaced[corpus.row_of(example.id)] = example
        n = len(corpus)
        new = corpus._with(replaced, appended) if replaced or appended else corpus
        origin = np.concatenate([np.arange(n, dtype=np.int64),
                                 np.full(len(appended), -1, dtype=np.int64)])
        fresh = np.concatenate([np.asarray(sorted(replaced), dtype=np.int64),
                                np.arange(n, n + len(appended), dtype=np.int64)])
        return cls(corpus, new, origin, fresh, _EMPTY)

    @classmethod
    def remove(cls, corpus: Corpus, ids: Iterable[str | int]) -> CorpusChange:
        """Remove the examples with these ids; an id the corpus does not hold is an
        :class:`UnknownIdError`, and nothing is removed."""
        if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, Iterable):
            raise ConfigError(f"remove() takes a list of ids, not {type(ids).__name__}; "
                              "wrap a single id as [id].")
        wanted = []
        for i, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ConfigError(f"remove(): id {i} is {type(value).__name__} ({value!r:.40}); "
                                  "ids are strings (or integers).")
            wanted.append(str(value))
        _check_unique(wanted, "remove")
        unknown = [i for i in wanted if not corpus.has_id(i)]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise UnknownIdError(f"remove(): no example has id {unknown[0]!r}{more}; nothing was "
                                 "removed. Check the ids (they are strings: Example.id).")
        if not wanted:
            return cls(corpus, corpus, np.arange(len(corpus), dtype=np.int64), _EMPTY, _EMPTY)
        if len(wanted) == len(corpus):
            raise CorpusError(f"remove(): removing all {len(corpus)} examples would leave the "
                              "corpus empty; nothing was removed. Build a new corpus instead.")
        removed = np.sort(np.asarray([corpus.row_of(i) for i in wanted], dtype=np.int64))
        keep = np.ones(len(corpus), dtype=bool)
        keep[removed] = False
        return cls(corpus, corpus._without(removed), np.flatnonzero(keep).astype(np.int64),
                   _EMPTY, removed)


def _examples(corpus: Corpus, records: Iterable[Any], id: str | None, verb: str) -> list[Example]:
    """``records`` (dicts with the corpus's fields, or Examples) validated as
    ``Corpus.from_records`` validates them, under the corpus's field names and labels."""
    if isinstance(records, (str, bytes, Mapping, Example)) or not isinstance(records, Iterable):
        raise ConfigError(f"{verb}() takes a list of records, not {type(records).__name__}; "
                          "wrap a single record as [record].")
    items = list(records)
    if not items:
        return []
    dicts = [_as_record(item, corpus, id, verb, i) for i, item in enumerate(items)]
    inputs = list(corpus.input_names)
    try:
        parsed = Corpus.from_records(dicts, input=inputs[0] if len(inputs) == 1 else inputs,
                                     output=corpus.output_name, id=id, labels=corpus.labels,
                                     source=f"{verb}() record")
    except DuplicateIdError as exc:
        raise DuplicateIdError(f"{verb}(): {exc} Nothing was changed.") from None
    return list(parsed)


def _as_record(item: Any, corpus: Corpus, id: str | None, verb: str, i: int) -> Mapping[str, Any]:
    if isinstance(item, Example):
        return {**item.meta, **item.inputs, corpus.output_name: item.output, (id or "id"): item.id}
    if not isinstance(item, Mapping):
        raise CorpusError(f"{verb}() record {i} is a {type(item).__name__}, not a dict of fields "
                          f"({', '.join([*corpus.input_names, corpus.output_name])}) or a "
                          "ricl.Example.")
    return item


def _check_unique(ids: list[str], verb: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(ids):
        if value in seen:
            raise DuplicateIdError(f"{verb}(): id {value!r} is given twice (items {seen[value]} "
                                   f"and {i}); nothing was changed. Give each id once.")
        seen[value] = i
