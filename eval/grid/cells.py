"""How one cell of a grid is evaluated: prompts for its test queries, then the LM's
labels, choices or answers (or, for the LM-free baselines, the majority label and the
kNN vote), scored into one result row and one prediction per test example."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval import metrics
from ricl import inference
from eval.grid.plan import KEY_FIELDS, KNN_VOTE, MAJORITY, ZERO_SHOT, Cell
from eval.grid.store import predictions_file
from eval.grid.suite_run import SuiteRun


@dataclass
class GridState:
    """What cells share within a run: the LM (loaded when the first LM cell needs it)
    and the last similarity prompts (the kNN vote of the same retriever and k reuses
    them)."""

    lm: Any
    max_new_tokens: int
    dtype: str = "float32"
    similarity_prompts: tuple[tuple, list] | None = None  # reused by the kNN vote

    def get_lm(self):
        if self.lm is None:
            from ricl.lm import TransformersLM

            self.lm = TransformersLM(dtype=self.dtype)
        return self.lm


def run_cell(cell: Cell, run: SuiteRun, state: GridState) -> tuple[dict, list[dict]]:
    """Evaluate one cell: its result row and its per-example predictions."""
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


def _prompts(cell: Cell, run: SuiteRun, state: GridState):
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
                            tokenizer=tokenizer, format=cell.format, order=cell.order)
    prompts = builder.build_many(run.queries)
    if selector_name == "similarity" and cell.selector != ZERO_SHOT:
        state.similarity_prompts = ((cell.suite, cell.retriever, "similarity", cell.k), prompts)
    return prompts, builder


def _base_row(cell: Cell, run: SuiteRun, metric: str, n: int) -> dict[str, Any]:
    row = {name: getattr(cell, name) for name in KEY_FIELDS}
    row.update(method=cell.method, task=run.task, metric=metric, uses_lm=cell.uses_lm, n=n,
               predictions=predictions_file(cell))
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


def _majority_cell(cell: Cell, run: SuiteRun) -> tuple[dict, list[dict]]:
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


def _knn_cell(cell: Cell, run: SuiteRun, prompts) -> tuple[dict, list[dict]]:
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


def _classification_cell(cell: Cell, run: SuiteRun, state: GridState, prompts,
                         builder) -> tuple[dict, list[dict]]:
    lm = state.get_lm()
    content_free = None
    if cell.calibrate:
        content_free = inference.content_free_prompts(prompts, builder.template, run.input_fields,
                                                      builder=builder)
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


def _choice_cell(cell: Cell, run: SuiteRun, state: GridState, prompts) -> tuple[dict, list[dict]]:
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


def _open_qa_cell(cell: Cell, run: SuiteRun, state: GridState, prompts) -> tuple[dict, list[dict]]:
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
