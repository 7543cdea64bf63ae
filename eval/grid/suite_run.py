"""One suite as a grid sees it: its test slice, its corpus and its retrievers, each
indexed once (lazily) and shared by every selector and k."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.suites import TASKS
from ricl.errors import ConfigError

log = logging.getLogger(__name__)


class SuiteRun:
    """``retriever_specs``: ``{name: spec or zero-argument factory}``, indexed when first
    asked for; ``indexed``: retrievers already indexed on ``corpus`` (default: the
    suite's own corpus, built when first needed)."""

    def __init__(self, suite: Any, n_test: int, retriever_specs: Mapping[str, Any],
                 *, corpus: Any = None, indexed: Mapping[str, Any] | None = None):
        self.suite = suite
        self.name = suite.name
        self.task = getattr(suite, "task", "classification")
        if self.task not in TASKS:
            raise ConfigError(f"suite {self.name!r} has task {self.task!r}; expected one of {TASKS}.")
        self.input_fields = tuple(getattr(suite, "input_fields", ("text",)))
        self.labels = tuple(suite.labels or ())
        self.test = list(suite.test[:n_test])
        if len(self.test) < n_test:
            log.warning("suite %s has %d test items, fewer than n_test=%d", self.name,
                        len(self.test), n_test)
        self.pool_size = len(suite.pool)
        self._specs = retriever_specs
        self._corpus = corpus
        self._retrievers: dict[str, Any] = dict(indexed or {})

    @property
    def corpus(self):
        if self._corpus is None:
            self._corpus = self.suite.corpus()
        return self._corpus

    def retriever(self, name: str):
        if name not in self._retrievers:
            started = time.perf_counter()
            self._retrievers[name] = _make_retriever(self._specs[name]).index(self.corpus)
            log.info("%s: indexed %d demos with %s in %.1fs", self.name, len(self.corpus), name,
                     time.perf_counter() - started)
        return self._retrievers[name]

    def any_retriever(self):
        """For zero-shot prompts (which search nothing): an index already built, else BM25."""
        if self._retrievers:
            return next(iter(self._retrievers.values()))
        if "bm25" in self._specs:
            return self.retriever("bm25")
        from retrievers import BM25Retriever

        self._retrievers["_zero_shot_bm25"] = BM25Retriever().index(self.corpus)
        return self._retrievers["_zero_shot_bm25"]

    @property
    def queries(self) -> list[dict[str, str]]:
        return [{name: record[name] for name in self.input_fields} for record in self.test]

    @property
    def gold(self) -> list[str]:
        return [record["label"] for record in self.test]

    def answers(self, record: Mapping[str, Any]) -> list[str]:
        answers = record.get("answers") or [record["label"]]
        return [answers] if isinstance(answers, str) else list(answers)


def _make_retriever(spec: Any):
    from retrievers import make_retriever

    if callable(spec) and not hasattr(spec, "search"):
        return spec()
    return make_retriever(spec)


def retriever_specs(retrievers: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Names for retrievers: a mapping is taken as given; a name ("bm25", "dense") names
    itself; a model directory is named by its folder."""
    if isinstance(retrievers, Mapping):
        return dict(retrievers)
    if isinstance(retrievers, (str, Path)):
        retrievers = [retrievers]
    specs: dict[str, Any] = {}
    for spec in retrievers:
        if isinstance(spec, (str, Path)):
            name = str(spec) if "/" not in str(spec) else Path(spec).name
        else:
            raise ConfigError(f"retriever {spec!r}: pass names/paths, or a dict "
                              "{name: spec or factory} for retriever objects.")
        if name in specs:
            raise ConfigError(f"retriever name {name!r} appears twice.")
        specs[name] = spec
    return specs


def load_suites(suites: Iterable[Any], n_test: int, pool_size: int | None,
                split_seed: int) -> list[Any]:
    """Suite names loaded and split (``eval.suites.load_suite``); Suite objects as given."""
    from eval.suites import load_suite

    loaded = []
    for suite in suites:
        loaded.append(load_suite(suite, n_test=n_test, pool_size=pool_size, seed=split_seed)
                      if isinstance(suite, str) else suite)
    names = [s.name for s in loaded]
    if len(set(names)) != len(names):
        raise ConfigError(f"suites repeat: {names}.")
    return loaded
