"""The split: a seeded test set and a demonstration pool that leaks none of it."""

from __future__ import annotations

import bisect
import enum
import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from eval.suites.dedup import _Deduplicated, _deduplicated, _key
from eval.suites.model import Record, Suite, SuiteSpec
from eval.suites.registry import _spec
from ricl.data import Corpus
from ricl.errors import ConfigError

logger = logging.getLogger(__name__)


_WORD = re.compile(r"\S+")


class _Default(enum.Enum):
    SUITE = "the suite's default"


SUITE_DEFAULT = _Default.SUITE
"""Passed as ``n_test`` or ``max_words``: use the suite's own default."""


def _cut_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` words of ``text``, original spacing kept."""
    if max_words is None:
        return text
    for count, match in enumerate(_WORD.finditer(text), start=1):
        if count == max_words:
            return text[:match.end()]
    return text


def _leaks(candidates: Sequence[str], tests: Sequence[str]) -> list[bool]:
    """For each normalised candidate: does it contain a test text, or sit inside one?

    Containment is word-aligned (``"chris"`` is not inside ``"christmas"``) and
    includes equality. Each test text is searched once in one string holding all the
    candidates, so the work is a few C-level scans rather than a Python loop over
    every (candidate, test) pair. Normalised texts hold no newline, so a match never
    spans two texts.
    """
    padded = [f" {text} " for text in candidates]
    blob = "\n".join(padded)
    starts, offset = [], 0
    for text in padded:
        starts.append(offset)
        offset += len(text) + 1
    leaked = [False] * len(candidates)
    for test in tests:
        needle, at = f" {test} ", 0
        while (at := blob.find(needle, at)) != -1:
            row = bisect.bisect_right(starts, at) - 1
            leaked[row] = True
            at = starts[row] + len(padded[row])  # resume after this candidate
    test_blob = "\n".join(f" {test} " for test in tests)
    longest = max((len(test) + 2 for test in tests), default=0)
    for row, text in enumerate(padded):
        if not leaked[row] and len(text) <= longest and text in test_blob:
            leaked[row] = True
    return leaked


def _check_count(value: Any, what: str, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if allow_none else ""
        raise ConfigError(f"`{what}` must be a positive integer{none}, got {value!r}.")


def _make_record(spec: SuiteSpec, row_id: str, record: Record,
                 max_words: int | None) -> Record:
    """The suite's record: ``id`` first, inputs cut to ``max_words`` words, lists
    copied so that a caller editing a record cannot change the cached rows."""
    out = {"id": row_id, **{key: list(value) if isinstance(value, list) else value
                            for key, value in record.items()}}
    for name in spec.input_fields:
        out[name] = _cut_words(record[name], max_words)
    return out


def load_suite(name: str, n_test: int | _Default = SUITE_DEFAULT, pool_size: int | None = 5000,
               seed: int = 0, max_words: int | None | _Default = SUITE_DEFAULT) -> Suite:
    """A test set and a demonstration pool that leaks none of it, the same for a seed.

    Exact duplicates (case-insensitive, whitespace-normalised inputs) are removed,
    keeping the first copy, and inputs are cut to ``max_words`` words (``None``: no
    cut). A suite with one file is shuffled with ``random.Random(seed)``: the first
    ``n_test`` items are the test set and the following items, in shuffled order, fill
    the pool up to ``pool_size`` (``None``: all of them); this is the protocol of the
    reference numbers in BASELINES.md. A suite with a test file and a pool file takes
    the test set from the first and the pool from the second, each shuffled by the
    same generator (test first). Either way a pool candidate whose normalised (cut)
    inputs contain a test item's or sit inside them is skipped and the next candidate
    takes its place, so the pool has ``pool_size`` items whenever the suite is large
    enough. ``n_test`` and ``max_words`` default to the suite's own
    (``suite_info(name)["default_n_test"]``, ``["default_max_words"]``).
    """
    spec = _spec(name)
    n_test = spec.n_test if n_test is SUITE_DEFAULT else n_test
    max_words = spec.max_words if max_words is SUITE_DEFAULT else max_words
    _check_count(n_test, "n_test", allow_none=False)
    _check_count(pool_size, "pool_size", allow_none=True)
    _check_count(max_words, "max_words", allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    rng = random.Random(seed)
    if spec.test_file is None:
        rows = list(_deduplicated(name).rows)
        if n_test >= len(rows):
            raise ConfigError(f"n_test={n_test} leaves no pool: suite '{name}' has "
                              f"{len(rows)} unique items. Ask for fewer test items.")
        rng.shuffle(rows)
        test_rows, candidates = rows[:n_test], rows[n_test:]
        test_tag = pool_tag = ""
    else:
        tests = list(_deduplicated(name, "test").rows)
        if n_test > len(tests):
            raise ConfigError(f"n_test={n_test} is more than the {len(tests)} unique items "
                              f"of suite '{name}''s test split ({spec.test_file.split}). "
                              "Ask for fewer test items.")
        rng.shuffle(tests)
        candidates = list(_deduplicated(name).rows)
        rng.shuffle(candidates)
        test_rows = tests[:n_test]
        test_tag, pool_tag = f"{spec.test_file.tag}-", f"{spec.tag}-"

    test = [_make_record(spec, f"{name}-{test_tag}{index}", record, max_words)
            for index, record in test_rows]
    wanted = len(candidates) if pool_size is None else pool_size
    pool, dropped = _fill_pool(spec, candidates, test, wanted, pool_tag, max_words)
    if pool_size is not None and len(pool) < pool_size:
        # Leaks that cost items the caller asked for deserve a warning; a small source
        # is what it is (the notes give the sizes).
        level = logging.WARNING if len(pool) + dropped >= pool_size else logging.INFO
        logger.log(level, "Suite '%s': the pool has %d items, fewer than the %d asked for.",
                   name, len(pool), pool_size)
    notes = _split_notes(spec, n_test, len(pool), dropped, seed, max_words)
    return Suite(name=name, pool=tuple(pool), test=tuple(test), labels=spec.labels,
                 template=spec.template, metric=spec.metric, source=spec.source,
                 license=spec.license, notes=notes, task=spec.task,
                 input_fields=spec.input_fields)


def _fill_pool(spec: SuiteSpec, candidates: Sequence[tuple[int, Record]],
               test: Sequence[Record], wanted: int, tag: str,
               max_words: int | None) -> tuple[list[Record], int]:
    """The first ``wanted`` candidates that leak no test item, and how many were skipped."""
    fields = spec.compared_fields
    test_keys = [_key(item, fields) for item in test]
    pool: list[Record] = []
    dropped, position = 0, 0
    while len(pool) < wanted and position < len(candidates):
        # Check a chunk a little larger than what is missing; most items pass.
        chunk = [_make_record(spec, f"{spec.name}-{tag}{index}", record, max_words)
                 for index, record in candidates[position:position + wanted - len(pool) + 256]]
        position += len(chunk)
        leaked = _leaks([_key(item, fields) for item in chunk], test_keys)
        for item, is_leak in zip(chunk, leaked):
            if len(pool) == wanted:
                break
            if is_leak:
                dropped += 1
            else:
                pool.append(item)
    return pool, dropped


def _dedup_note(dedup: _Deduplicated, where: str) -> str:
    conflicting = (f" ({dedup.n_conflicting} of them with a different label)"
                   if dedup.n_conflicting else "")
    empty = f"; {dedup.n_empty} empty texts dropped" if dedup.n_empty else ""
    return (f"{dedup.n_raw} rows in {where}; {dedup.n_duplicates} exact duplicates "
            f"(case-insensitive, whitespace-normalised) dropped, first copy kept{conflicting}"
            f"{empty}")


def _split_notes(spec: SuiteSpec, n_test: int, n_pool: int, dropped: int, seed: int,
                 max_words: int | None) -> str:
    fields = spec.compared_fields
    what = "text" if fields == ("text",) else " + ".join(fields)
    skipped = (f"skipping {dropped} candidates whose normalised {what} contains a test "
               f"{what} or sits inside one (word-aligned)")
    cut = "no cut" if max_words is None else f"cut to {max_words} words"
    main = spec.main_file
    if spec.test_file is None:
        dedup = _deduplicated(spec.name)
        where = spec.source if spec.package == "StaICC" else f"{main.split}, {main.source}"
        notes = (f"{_dedup_note(dedup, where)}; {len(dedup.rows)} unique rows shuffled with "
                 f"random.Random({seed}); test = the first {n_test}; pool = the next "
                 f"{n_pool} in shuffled order, {skipped}; texts {cut}.")
    else:
        test_file = spec.test_file
        tests, pool = _deduplicated(spec.name, "test"), _deduplicated(spec.name)
        notes = (f"Test: {_dedup_note(tests, f'{test_file.split}, {test_file.source}')}; "
                 f"{len(tests.rows)} unique rows shuffled with random.Random({seed}); test = "
                 f"the first {n_test}. Pool: {_dedup_note(pool, f'{main.split}, {main.source}')}"
                 f"; {len(pool.rows)} unique rows shuffled by the same generator; pool = the "
                 f"first {n_pool}, {skipped}; texts {cut}.")
    return f"{notes} {spec.note}" if spec.note else notes


def suite_corpus(name: str, pool_size: int | None = 5000, seed: int = 0) -> tuple[Corpus, str]:
    """A packaged suite's pool as a Corpus, with the suite's template: the corpus
    source behind ``ricl score/train --suite`` (registered in ``ricl.registry``)."""
    suite = load_suite(name, pool_size=pool_size, seed=seed)
    return suite.corpus(), suite.template
