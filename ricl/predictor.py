"""Predictions in one call: a prompt builder and an LM, turning queries into labels,
chosen options or generated answers, with their probabilities and the prompts used.

    predictor = ricl.Predictor(builder, lm)
    for p in predictor.predict(["what is the capital of peru ?"]):
        print(p.output, p.probabilities, p.prompt.demo_ids)

The task follows from what is given: per-query ``choices`` make it multiple choice,
a corpus with label words makes it classification, anything else is generation.
Any object with the ``ricl.LM`` protocol works: the in-process ``TransformersLM`` or
an ``OpenAICompletionsLM`` talking to a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ricl import inference
from ricl.errors import ConfigError
from ricl.prompt import Prompt

TASKS = ("auto", "classification", "multiple_choice", "generation")
_CHUNK = 256  # queries per build-and-score step: bounds memory, drives the progress bar


@dataclass(frozen=True)
class Prediction:
    """One query's prediction.

    ``output``: the predicted label word, the chosen option, or the generated answer.
    ``probabilities``: label (or option) -> probability under the LM, normalised over
    the labels (options); empty for generation. ``calibrated`` and
    ``calibrated_probabilities`` are set when contextual calibration ran.
    """

    output: str
    prompt: Prompt
    probabilities: dict[str, float] = field(default_factory=dict)
    log_probs: dict[str, float] = field(default_factory=dict)
    calibrated: str | None = None
    calibrated_probabilities: dict[str, float] | None = None


class Predictor:
    """A builder plus an LM (``calibrate``: also report contextual calibration, Zhao et
    al. 2021, for classification; ``normalize``: "sum" or "mean" log-probs of
    multi-token labels and options; ``share_prefixes``: build all queries of a
    ``predict`` call as one batch with ``build_many(share_prefixes=True)`` and send them
    to the LM in chunks of prompts that share prefixes, see ``ricl.prefix_sharing``)."""

    def __init__(self, builder: Any, lm: Any, *, task: str = "auto", calibrate: bool = False,
                 normalize: str = "sum", max_new_tokens: int = 16,
                 stop: Sequence[str] = ("\n",), share_prefixes: bool = False):
        if task not in TASKS:
            raise ConfigError(f"task={task!r} is unknown; choose one of {TASKS}.")
        inference.check_normalize(normalize)
        for method in ("score_choices", "score", "generate"):
            if not callable(getattr(lm, method, None)):
                raise ConfigError(f"lm={type(lm).__name__} lacks {method}(); pass a ricl LM "
                                  "(ricl.TransformersLM, ricl.OpenAICompletionsLM) or any "
                                  "object with the ricl.LM protocol.")
        self.builder, self.lm, self.task = builder, lm, task
        self.calibrate, self.normalize = bool(calibrate), normalize
        self.max_new_tokens, self.stop = int(max_new_tokens), tuple(stop)
        self.share_prefixes = bool(share_prefixes)

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.builder.labels

    def predict(self, queries: Sequence[Any], *, choices: Sequence[Sequence[str]] | None = None,
                documents: Sequence[Sequence[Any]] | None = None,
                progress: bool = False) -> list[Prediction]:
        """One :class:`Prediction` per query (strings, or dicts of input fields)."""
        if isinstance(queries, (str, Mapping)):
            raise ConfigError("predict() takes a list of queries; wrap one query as [query].")
        task = self._task(choices)
        if choices is not None and len(choices) != len(queries):
            raise ConfigError(f"choices has {len(choices)} lists for {len(queries)} queries.")
        order, built = list(range(len(queries))), None
        if self.share_prefixes:  # one batch; chunks of prompts that share prefixes (sorted text)
            built = self.builder.build_many(list(queries), documents, share_prefixes=True)
            order = sorted(order, key=lambda i: built[i].text)
        starts = range(0, len(queries), _CHUNK)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predict", unit="chunk")
        out: list[Prediction | None] = [None] * len(queries)
        for start in starts:
            rows = order[start:start + _CHUNK]
            if built is not None:
                prompts = [built[i] for i in rows]
            else:
                prompts = self.builder.build_many(
                    [queries[i] for i in rows], None if documents is None else [documents[i] for i in rows])
            if task == "classification":
                done = self._classify(prompts)
            elif task == "multiple_choice":
                done = self._choose(prompts, [choices[i] for i in rows])
            else:
                answers = inference.answer(self.lm, prompts, self.max_new_tokens, self.stop)
                done = [Prediction(text, prompt) for text, prompt in zip(answers, prompts)]
            for i, prediction in zip(rows, done):
                out[i] = prediction
        return out

    def predict_proba(self, queries: Sequence[Any], progress: bool = False) -> np.ndarray:
        """(n queries, n labels) label probabilities, columns in ``labels`` order."""
        if self._task(None) != "classification":
            raise ConfigError("predict_proba() needs a classification corpus (label words).")
        predictions = self.predict(queries, progress=progress)
        return np.array([[p.probabilities[label] for label in self.labels] for p in predictions])

    def _task(self, choices: Any) -> str:
        if self.task != "auto":
            if self.task == "multiple_choice" and choices is None:
                raise ConfigError("task='multiple_choice' needs choices=[[option, ...], ...].")
            if self.task == "classification" and not self.labels:
                raise ConfigError("task='classification' needs a corpus with label words "
                                  "(Corpus.from_records(..., labels=[...])).")
            return self.task
        if choices is not None:
            return "multiple_choice"
        return "classification" if self.labels else "generation"

    def _answer_prefix(self, prompts: list[Prompt]) -> str:
        return prompts[0].answer_prefix if prompts else " "

    def _classify(self, prompts: list[Prompt]) -> list[Prediction]:
        labels = self.labels
        content_free = None
        if self.calibrate:
            content_free = inference.content_free_prompts(prompts, self.builder.template,
                                                          self.builder.corpus.input_names,
                                                          builder=self.builder)
        result = inference.classify(self.lm, prompts, labels, self._answer_prefix(prompts),
                                    self.normalize, content_free)
        probs = inference.softmax(result.log_probs) if len(prompts) else result.log_probs
        out = []
        for i, prompt in enumerate(prompts):
            calibrated = calibrated_probs = None
            if result.calibrated is not None:
                calibrated = result.calibrated[i]
                calibrated_probs = dict(zip(labels, map(float, result.calibrated_probs[i])))
            out.append(Prediction(result.predictions[i], prompt,
                                  dict(zip(labels, map(float, probs[i]))),
                                  dict(zip(labels, map(float, result.log_probs[i]))),
                                  calibrated, calibrated_probs))
        return out

    def _choose(self, prompts: list[Prompt], choices: Sequence[Sequence[str]]) -> list[Prediction]:
        result = inference.choose(self.lm, prompts, choices, self._answer_prefix(prompts),
                                  self.normalize)
        out = []
        for prompt, options, chosen, scores in zip(prompts, choices, result.predictions,
                                                    result.scores):
            probs = inference.softmax(scores)
            out.append(Prediction(chosen, prompt, dict(zip(options, map(float, probs))),
                                  dict(zip(options, map(float, scores)))))
        return out
