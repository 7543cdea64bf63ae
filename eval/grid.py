"""Experiment grids: suites x retrievers x selectors x k x seeds, resumable.

Each cell of the grid writes two things, each atomically (temporary file + rename):
its per-example predictions to ``predictions/<cell>.jsonl`` and then its row in
``results.jsonl``. A cell counts as finished only when both exist, so a grid that was
interrupted (or whose prediction file was deleted) recomputes exactly the missing
cells on the next run.

Which cells run:

- k = 0 is zero-shot: no retriever or selector is involved, so it runs once per suite.
- ``random`` runs once per seed (``RandomSelector(seed)``); the other selectors are
  deterministic and run once (their rows carry ``seed: null``).
- Classification suites also get two rows that use no LM: ``majority`` (the most
  frequent pool label, once per suite) and ``knn-vote`` (the majority label of each
  query's top-k most similar demos, per retriever and k). Much of ICL's gain can be
  label copying; these rows show how much.

Each retriever is indexed once per suite and shared by every selector and k.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval import inference, metrics
from ricl.errors import ConfigError
from ricl.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
PREDICTIONS = "predictions"
ZERO_SHOT, MAJORITY, KNN_VOTE = "zero-shot", "majority", "knn-vote"
NO_RETRIEVER = "none"
TASKS = ("classification", "multiple_choice", "open_qa")
KEY_FIELDS = ("suite", "retriever", "selector", "k", "seed", "n_test", "pool_size",
              "calibrate", "normalize")


@dataclass(frozen=True)
class Cell:
    """One point of the grid; its fields (all of them) are the resume key."""

    suite: str
    retriever: str
    selector: str
    k: int | None
    seed: int | None
    n_test: int
    pool_size: int
    calibrate: bool
    normalize: str | None

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    @property
    def uses_lm(self) -> bool:
        return self.selector not in (MAJORITY, KNN_VOTE)

    @property
    def method(self) -> str:
        if self.retriever == NO_RETRIEVER:
            return self.selector
        return f"{self.retriever} + {self.selector}"

    @property
    def name(self) -> str:
        """A file-system-safe stem, unique per key."""
        parts = [self.suite, self.retriever, self.selector,
                 "k-" if self.k is None else f"k{self.k}",
                 "s-" if self.seed is None else f"s{self.seed}",
                 f"n{self.n_test}", f"pool{self.pool_size}"]
        if self.calibrate:
            parts.append("cal")
        if self.normalize not in (None, "sum"):
            parts.append(self.normalize)
        return "__".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(part)) for part in parts)


def row_key(row: Mapping[str, Any]) -> tuple:
    return tuple(row.get(name) for name in KEY_FIELDS)


# -- the suites and their retrievers ------------------------------------------------------


class _SuiteRun:
    """One suite's test slice, its corpus and its indexed retrievers, built lazily."""

    def __init__(self, suite: Any, n_test: int, retriever_specs: Mapping[str, Any]):
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
        self._corpus = None
        self._retrievers: dict[str, Any] = {}

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


def _retriever_specs(retrievers: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
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


def _load_suites(suites: Iterable[Any], n_test: int, pool_size: int | None,
                 split_seed: int) -> list[Any]:
    from eval.suites import load_suite

    loaded = []
    for suite in suites:
        loaded.append(load_suite(suite, n_test=n_test, pool_size=pool_size, seed=split_seed)
                      if isinstance(suite, str) else suite)
    names = [s.name for s in loaded]
    if len(set(names)) != len(names):
        raise ConfigError(f"suites repeat: {names}.")
    return loaded


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds={seeds!r}: give a count or a list of integers.")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds}: at least one seed is needed.")
        return list(range(int(seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds}: give distinct integers, at least one.")
    return seeds


# -- planning -----------------------------------------------------------------------------


def plan_cells(runs: Sequence[_SuiteRun], retrievers: Sequence[str], selectors: Sequence[str],
               ks: Sequence[int], seeds: Sequence[int], n_test: int, calibrate: bool,
               normalize: str) -> list[Cell]:
    """Every cell, in the order they run: suite by suite, retriever by retriever."""
    cells = []
    for run in runs:
        def cell(retriever, selector, k, seed, lm=True):
            uses_calibration = calibrate and lm and run.task == "classification"
            return Cell(run.name, retriever, selector, k, seed, n_test, run.pool_size,
                        uses_calibration, normalize if lm else None)

        classification = run.task == "classification"
        if classification:
            cells.append(cell(NO_RETRIEVER, MAJORITY, None, None, lm=False))
        if 0 in ks:
            cells.append(cell(NO_RETRIEVER, ZERO_SHOT, 0, None))
        for retriever in retrievers:
            for k in (k for k in ks if k > 0):
                for selector in selectors:
                    for seed in (seeds if selector == "random" else [None]):
                        cells.append(cell(retriever, selector, k, seed))
                if classification:
                    cells.append(cell(retriever, KNN_VOTE, k, None, lm=False))
    return cells


# -- running ------------------------------------------------------------------------------


def run_grid(suites: Sequence[Any], retrievers: Sequence[Any] | Mapping[str, Any],
             selectors: Sequence[str], ks: Sequence[int], seeds: int | Sequence[int],
             n_test: int, out_dir: str | Path, lm: Any = None, calibrate: bool = False,
             progress: bool = True, *, pool_size: int | None = 5000, split_seed: int = 0,
             normalize: str = "sum", max_new_tokens: int = 16,
             dtype: str = "float32") -> list[dict[str, Any]]:
    """Run (or resume) a grid and return one row per cell, in plan order.

    ``suites``: names for :func:`eval.suites.load_suite` (split with ``n_test``,
    ``pool_size`` and ``split_seed``) or loaded ``Suite`` objects (their first
    ``n_test`` test items are used). ``retrievers``: names ("bm25", "dense",
    "dense:chroma", a model directory) or a dict ``{name: spec or zero-argument
    factory}``. ``selectors``: selector names. ``seeds``: a count (``3`` means
    0, 1, 2) or a list; only ``random`` uses them. ``lm``: an ``ricl.lm.LM``; None
    loads the default ``TransformersLM`` (in ``dtype``) when the first LM cell runs.
    ``calibrate``: also report contextual calibration (classification only).

    Rows go to ``out_dir/results.jsonl`` and predictions to ``out_dir/predictions/``.
    """
    from ricl.selectors import SELECTORS

    if isinstance(suites, str) or hasattr(suites, "pool"):
        suites = [suites]
    selectors = [selectors] if isinstance(selectors, str) else list(dict.fromkeys(selectors))
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise ConfigError(f"unknown selector(s) {unknown}; choose from {sorted(SELECTORS)}.")
    ks = sorted({int(k) for k in ([ks] if isinstance(ks, int) else ks)})
    if not ks or ks[0] < 0:
        raise ConfigError(f"ks={ks}: give at least one k, each >= 0.")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise ConfigError(f"n_test={n_test!r}: must be a positive integer.")
    inference._check_normalize(normalize)
    seeds = _seed_list(seeds)
    specs = _retriever_specs(retrievers)
    if not specs and any(k > 0 for k in ks):
        raise ConfigError("k > 0 needs at least one retriever.")

    out_dir = Path(out_dir)
    runs = [_SuiteRun(s, n_test, specs)
            for s in _load_suites(suites, n_test, pool_size, split_seed)]
    cells = plan_cells(runs, list(specs), selectors, ks, seeds, n_test, calibrate, normalize)
    finished = _finished_rows(out_dir)
    todo = sum(cell.key not in finished for cell in cells)
    log.info("grid: %d cells, %d already finished in %s", len(cells), len(cells) - todo, out_dir)

    state = _GridState(lm=lm, max_new_tokens=max_new_tokens, dtype=dtype)
    by_suite = {run.name: run for run in runs}
    rows = []
    from tqdm.auto import tqdm

    for cell in tqdm(cells, desc="grid cells", unit="cell", disable=not progress):
        done = finished.get(cell.key)
        if done is not None:
            rows.append(done)
            continue
        run = by_suite[cell.suite]
        started = time.perf_counter()
        row, predictions = _run_cell(cell, run, state)
        row["seconds"] = round(time.perf_counter() - started, 3)
        if cell.uses_lm:
            from ricl.models import weights_dtype

            row["lm_dtype"] = weights_dtype(getattr(state.lm, "model", None))
        _write_cell(out_dir, cell, row, predictions)
        log.info("%s %s k=%s seed=%s: %s %.3f (%.1fs)", cell.suite, cell.method, cell.k,
                 cell.seed, row["metric"], row["value"], row["seconds"])
        rows.append(row)
    return rows


@dataclass
class _GridState:
    lm: Any
    max_new_tokens: int
    dtype: str = "float32"
    similarity_prompts: tuple[tuple, list] | None = None  # reused by the kNN vote

    def get_lm(self):
        if self.lm is None:
            from ricl.lm import TransformersLM

            self.lm = TransformersLM(dtype=self.dtype)
        return self.lm


def _run_cell(cell: Cell, run: _SuiteRun, state: _GridState) -> tuple[dict, list[dict]]:
    if cell.selector == MAJORITY:
        return _majority_cell(cell, run)
    prompts, builder = _prompts(cell, run, state)
    if cell.selector == KNN_VOTE:
        return _knn_cell(cell, run, prompts)
    if run.task == "classification":
        return _classification_cell(cell, run, state, prompts, builder)
    if run.task == "multiple_choice":
        return _choice_cell(cell, run, state, prompts)
    return _open_qa_cell(cell, run, state, prompts)


def _prompts(cell: Cell, run: _SuiteRun, state: _GridState):
    from ricl.builder import PromptBuilder
    from ricl.selectors import RandomSelector

    selector_name = "similarity" if cell.selector == KNN_VOTE else cell.selector
    reuse_key = (cell.suite, cell.retriever, "similarity", cell.k)
    if cell.selector == KNN_VOTE and state.similarity_prompts \
            and state.similarity_prompts[0] == reuse_key:
        return state.similarity_prompts[1], None
    if cell.uses_lm:
        state.get_lm()  # so that prompts count tokens with the LM's own tokenizer
    if cell.selector == ZERO_SHOT:
        retriever, selector = run.any_retriever(), "similarity"
    else:
        retriever = run.retriever(cell.retriever)
        selector = RandomSelector(cell.seed) if selector_name == "random" else selector_name
    tokenizer = getattr(state.lm, "tokenizer", None) if state.lm is not None else None
    builder = PromptBuilder(run.corpus, retriever=retriever, selector=selector, k=cell.k,
                            template=run.suite.template, seed=cell.seed or 0,
                            tokenizer=tokenizer)
    prompts = builder.build_many(run.queries)
    if selector_name == "similarity" and cell.selector != ZERO_SHOT:
        state.similarity_prompts = ((cell.suite, cell.retriever, "similarity", cell.k), prompts)
    return prompts, builder


def _base_row(cell: Cell, run: _SuiteRun, metric: str, n: int) -> dict[str, Any]:
    row = {name: getattr(cell, name) for name in KEY_FIELDS}
    row.update(method=cell.method, task=run.task, metric=metric, uses_lm=cell.uses_lm, n=n,
               predictions=f"{PREDICTIONS}/{cell.name}.jsonl.gz")
    return row


def _demo_fields(prompt) -> dict[str, Any]:
    return {"demo_ids": prompt.demo_ids,
            "demo_scores": [None if d.score is None else round(float(d.score), 5)
                            for d in prompt.demos],
            "prompt_tokens": prompt.token_count}


def _accuracy_fields(correct: Sequence[bool], predictions: Sequence[str], gold: Sequence[str],
                     labels: Sequence[str]) -> dict[str, Any]:
    correct = np.asarray(correct, dtype=float)
    return {"accuracy": float(correct.mean()) if len(correct) else float("nan"),
            "stderr": metrics.standard_error(correct),
            "label_counts": metrics.prediction_counts(predictions, labels or None)}


def _majority_cell(cell: Cell, run: _SuiteRun) -> tuple[dict, list[dict]]:
    label = metrics.majority_label(record["label"] for record in run.suite.pool)
    gold = run.gold
    correct = [g == label for g in gold]
    row = _base_row(cell, run, "accuracy", len(gold))
    row.update(_accuracy_fields(correct, [label] * len(gold), gold, run.labels))
    row.update(value=row["accuracy"], majority_label=label,
               gold_counts=metrics.prediction_counts(gold, run.labels))
    predictions = [{"id": r["id"], "gold": r["label"], "prediction": label, "correct": c}
                   for r, c in zip(run.test, correct)]
    return row, predictions


def _knn_cell(cell: Cell, run: _SuiteRun, prompts) -> tuple[dict, list[dict]]:
    gold = run.gold
    votes = [metrics.knn_vote(p.demos) for p in prompts]
    correct = [v == g for v, g in zip(votes, gold)]
    row = _base_row(cell, run, "accuracy", len(gold))
    row.update(_accuracy_fields(correct, votes, gold, run.labels))
    row.update(value=row["accuracy"], gold_counts=metrics.prediction_counts(gold, run.labels))
    predictions = [{"id": r["id"], "gold": r["label"], "prediction": v, "correct": c,
                    **_demo_fields(p), "demo_labels": [d.output for d in p.demos]}
                   for r, v, c, p in zip(run.test, votes, correct, prompts)]
    return row, predictions


def _classification_cell(cell: Cell, run: _SuiteRun, state: _GridState, prompts,
                         builder) -> tuple[dict, list[dict]]:
    lm = state.get_lm()
    content_free = None
    if cell.calibrate:
        content_free = inference.content_free_prompts(prompts, builder.template, run.input_fields)
    answer_prefix = prompts[0].answer_prefix if prompts else " "
    result = inference.classify(lm, prompts, run.labels, answer_prefix=answer_prefix,
                                normalize=cell.normalize, content_free=content_free)
    gold = run.gold
    correct = [p == g for p, g in zip(result.predictions, gold)]
    row = _base_row(cell, run, "accuracy", len(gold))
    row.update(_accuracy_fields(correct, result.predictions, gold, run.labels))
    row.update(value=row["accuracy"], gold_counts=metrics.prediction_counts(gold, run.labels),
               tokens_per_prompt=_mean_tokens(prompts))
    predictions = []
    for i, (record, prompt) in enumerate(zip(run.test, prompts)):
        item = {"id": record["id"], "gold": record["label"],
                "prediction": result.predictions[i], "correct": correct[i],
                **_demo_fields(prompt),
                "scores": {label: round(float(s), 5)
                           for label, s in zip(run.labels, result.log_probs[i])}}
        predictions.append(item)
    if result.calibrated is not None:
        calibrated_correct = [p == g for p, g in zip(result.calibrated, gold)]
        row["calibrated"] = _accuracy_fields(calibrated_correct, result.calibrated, gold,
                                             run.labels)
        row["calibrated"]["content_free"] = list(inference.CONTENT_FREE)
        for i, item in enumerate(predictions):
            item.update(calibrated_prediction=result.calibrated[i],
                        calibrated_correct=calibrated_correct[i],
                        calibrated_probs={label: round(float(p), 5) for label, p in
                                          zip(run.labels, result.calibrated_probs[i])})
    return row, predictions


def _choice_cell(cell: Cell, run: _SuiteRun, state: _GridState, prompts) -> tuple[dict, list[dict]]:
    choices = [list(record["choices"]) for record in run.test]
    answer_prefix = prompts[0].answer_prefix if prompts else " "
    result = inference.choose(state.get_lm(), prompts, choices, answer_prefix=answer_prefix,
                              normalize=cell.normalize)
    gold = run.gold
    correct = [p == g for p, g in zip(result.predictions, gold)]
    row = _base_row(cell, run, "accuracy", len(gold))
    row.update(accuracy=float(np.mean(correct)) if correct else float("nan"),
               stderr=metrics.standard_error(np.asarray(correct, dtype=float)),
               tokens_per_prompt=_mean_tokens(prompts))
    row["value"] = row["accuracy"]
    predictions = [{"id": r["id"], "gold": r["label"], "prediction": p, "correct": c,
                    **_demo_fields(prompt), "choices": options,
                    "scores": [round(float(s), 5) for s in scores]}
                   for r, p, c, prompt, options, scores in
                   zip(run.test, result.predictions, correct, prompts, choices, result.scores)]
    return row, predictions


def _open_qa_cell(cell: Cell, run: _SuiteRun, state: _GridState, prompts) -> tuple[dict, list[dict]]:
    texts = inference.answer(state.get_lm(), prompts, max_new_tokens=state.max_new_tokens)
    answers = [run.answers(record) for record in run.test]
    em = np.array([metrics.exact_match(t, a) for t, a in zip(texts, answers)])
    f1 = np.array([metrics.token_f1(t, a) for t, a in zip(texts, answers)])
    row = _base_row(cell, run, "exact_match", len(texts))
    row.update(exact_match=float(em.mean()) if len(em) else float("nan"),
               stderr=metrics.standard_error(em),
               f1=float(f1.mean()) if len(f1) else float("nan"),
               f1_stderr=metrics.standard_error(f1), tokens_per_prompt=_mean_tokens(prompts))
    row["value"] = row["exact_match"]
    predictions = [{"id": r["id"], "gold": a, "prediction": t, "correct": bool(e),
                    "exact_match": float(e), "f1": round(float(f), 5), **_demo_fields(p)}
                   for r, a, t, e, f, p in zip(run.test, answers, texts, em, f1, prompts)]
    return row, predictions


def _mean_tokens(prompts) -> float:
    return round(float(np.mean([p.token_count for p in prompts])), 1) if prompts else 0.0


# -- files --------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (gzipped when it ends in .gz); a torn last line (from a crash
    mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d is not valid JSON; skipped", path, line_no)
    return rows


def _finished_rows(out_dir: Path) -> dict[tuple, dict[str, Any]]:
    """Rows whose predictions file also exists: those cells need no recomputing."""
    finished = {}
    for row in read_jsonl(out_dir / RESULTS):
        predictions = row.get("predictions")
        if predictions and (out_dir / predictions).is_file():
            finished[row_key(row)] = row
    return finished


def _write_cell(out_dir: Path, cell: Cell, row: dict[str, Any], predictions: list[dict]) -> None:
    """Predictions first, then the row: a crash in between leaves a cell that reruns."""
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    # Predictions are gzipped (mtime=0: the same cell gives the same bytes): a
    # published run's predictions stay small enough to commit beside its table.
    atomic_write_bytes(out_dir / row["predictions"], gzip.compress(text.encode("utf-8"), mtime=0))
    kept = [r for r in read_jsonl(out_dir / RESULTS) if row_key(r) != cell.key]
    lines = [json.dumps(r, ensure_ascii=False) for r in kept + [row]]
    atomic_write_text(out_dir / RESULTS, "\n".join(lines) + "\n")


__all__ = ["Cell", "plan_cells", "read_jsonl", "run_grid"]
