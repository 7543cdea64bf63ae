"""Turning prompts into predictions: label scoring, choice scoring, generation.

- Classification scores every label word as a continuation of the prompt
  (``answer_prefix + label``, e.g. ``" positive"``) and predicts the most likely.
  With contextual calibration (Zhao et al. 2021, "Calibrate Before Use") the same
  demos are rendered with content-free inputs ("N/A", "", "[MASK]"); the label
  distribution they give, ``p_cf``, is averaged, and the calibrated distribution is
  ``softmax(log p) / p_cf`` renormalised. Both predictions are returned, so that a
  report can show calibrated and uncalibrated results side by side.
- Multiple choice scores each question's own options pairwise (``lm.score``),
  summed or length-normalised.
- Open QA generates greedily up to a newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ricl.errors import ConfigError
from ricl.prompt import Prompt
from ricl.template import Template

CONTENT_FREE = ("N/A", "", "[MASK]")
NORMALIZE = ("sum", "mean")


@dataclass(frozen=True)
class Classified:
    """Label scoring of n prompts over L labels.

    ``log_probs``: (n, L) LM scores of each label continuation. ``calibrated``
    and ``calibrated_probs`` are None unless contextual calibration ran;
    ``content_free_probs`` is then p_cf, the averaged content-free distribution.
    """

    labels: tuple[str, ...]
    predictions: list[str]
    log_probs: np.ndarray
    calibrated: list[str] | None = None
    calibrated_probs: np.ndarray | None = None
    content_free_probs: np.ndarray | None = None


@dataclass(frozen=True)
class Chosen:
    """Multiple choice: the chosen option's text and every option's score per prompt."""

    predictions: list[str]
    scores: list[np.ndarray]


def prompt_texts(prompts: Sequence[Prompt | str]) -> list[str]:
    return [p.text if isinstance(p, Prompt) else p for p in prompts]


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def contextual_calibration(log_probs: np.ndarray, content_free_log_probs: Sequence[np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated label distributions and p_cf (Zhao et al. 2021, W = diag(p_cf)^-1, b = 0).

    ``log_probs``: (n, L). ``content_free_log_probs``: one (n, L) array per
    content-free input, each rendered with the same demos as the real query.
    """
    if not len(content_free_log_probs):
        raise ConfigError("contextual calibration needs at least one content-free input.")
    p_cf = np.mean([softmax(lp) for lp in content_free_log_probs], axis=0)
    weighted = softmax(log_probs) / np.maximum(p_cf, 1e-300)
    return weighted / weighted.sum(axis=-1, keepdims=True), p_cf


def content_free_prompts(prompts: Sequence[Prompt], template: Template,
                         input_names: Sequence[str],
                         inputs: Sequence[str] = CONTENT_FREE, builder: Any = None
                         ) -> list[list[str]]:
    """For each prompt, its text with the query's input fields replaced by each
    content-free string, the demos (and their order) unchanged. Chat prompts (their
    query is not the end of the text) are recomposed by the ``builder`` that made them."""
    result = []
    for i, prompt in enumerate(prompts):
        if prompt.messages:
            if builder is None:
                raise ConfigError("calibrating chat prompts needs the builder that made them "
                                  "(content_free_prompts(..., builder=builder)).")
            result.append([builder.recompose(prompt, dict.fromkeys(input_names, cf))
                           for cf in inputs])
            continue
        query = _query_fields(prompt.query, input_names)
        query_text = template.render_query(query)
        if not prompt.text.endswith(query_text):
            raise ConfigError(f"prompt {i} does not end with its rendered query, so its demos "
                              "cannot be reused for calibration; pass the builder's template.")
        head = prompt.text[:len(prompt.text) - len(query_text)]
        result.append([head + template.render_query(_query_fields(dict.fromkeys(input_names, cf),
                                                                  input_names))
                       for cf in inputs])
    return result


def _query_fields(values: dict[str, str], input_names: Sequence[str]) -> dict[str, str]:
    fields = {name: values[name] for name in input_names}
    fields["input"] = "\n".join(fields[name] for name in input_names)
    return fields


def classify(lm: Any, prompts: Sequence[Prompt | str], labels: Sequence[str],
             answer_prefix: str = " ", normalize: str = "sum",
             content_free: Sequence[Sequence[str]] | None = None) -> Classified:
    """Score each label word after each prompt; predict the most likely.

    ``content_free``: per prompt, its content-free renderings (see
    :func:`content_free_prompts`); when given, calibrated predictions come too.
    All prompts, real and content-free, go to the LM in one call, so it batches them.
    """
    check_normalize(normalize)
    labels = tuple(labels)
    if not labels:
        raise ConfigError("classify() needs the label words.")
    texts = prompt_texts(prompts)
    n = len(texts)
    extra: list[str] = []
    if content_free is not None:
        if len(content_free) != n:
            raise ConfigError(f"content_free has {len(content_free)} entries for {n} prompts.")
        widths = {len(group) for group in content_free}
        if len(widths) != 1 or 0 in widths:
            raise ConfigError("every prompt needs the same, non-zero number of content-free prompts.")
        extra = [text for group in content_free for text in group]
    if not texts:
        return Classified(labels, [], np.zeros((0, len(labels))))
    # Identical texts are scored once: content-free prompts repeat whenever the demos
    # do (zero-shot, vote-k), so calibration then costs a few prompts, not 3 per query.
    unique = list(dict.fromkeys(texts + extra))
    where = {text: i for i, text in enumerate(unique)}
    unique_scores = np.asarray(lm.score_choices(unique, [answer_prefix + label for label in labels],
                                                normalize=normalize), dtype=float)
    scores = unique_scores[[where[text] for text in texts + extra]]
    log_probs = np.asarray(scores[:n], dtype=float)
    predictions = [labels[j] for j in log_probs.argmax(axis=1)]
    if content_free is None:
        return Classified(labels, predictions, log_probs)
    per_prompt = len(content_free[0])
    cf = np.asarray(scores[n:], dtype=float).reshape(n, per_prompt, len(labels))
    calibrated_probs, p_cf = contextual_calibration(log_probs, [cf[:, j] for j in range(per_prompt)])
    calibrated = [labels[j] for j in calibrated_probs.argmax(axis=1)]
    return Classified(labels, predictions, log_probs, calibrated, calibrated_probs, p_cf)


def choose(lm: Any, prompts: Sequence[Prompt | str], choices: Sequence[Sequence[str]],
           answer_prefix: str = " ", normalize: str = "sum") -> Chosen:
    """Multiple choice: each prompt's own options scored pairwise with ``lm.score``;
    ``normalize="mean"`` divides by the option's token count."""
    check_normalize(normalize)
    texts = prompt_texts(prompts)
    if len(choices) != len(texts):
        raise ConfigError(f"choose() got {len(choices)} choice lists for {len(texts)} prompts.")
    empty = [i for i, options in enumerate(choices) if not options]
    if empty:
        raise ConfigError(f"prompts {empty[:5]} have no choices.")
    flat_prompts = [text for text, options in zip(texts, choices) for _ in options]
    flat_choices = [answer_prefix + option for options in choices for option in options]
    if not flat_prompts:
        return Chosen([], [])
    scores = np.asarray(lm.score(flat_prompts, flat_choices), dtype=float)
    if normalize == "mean":
        scores = scores / np.maximum(continuation_lengths(lm, flat_choices), 1)
    predictions, per_prompt, start = [], [], 0
    for options in choices:
        part = scores[start:start + len(options)]
        start += len(options)
        per_prompt.append(part)
        predictions.append(options[int(part.argmax())])
    return Chosen(predictions, per_prompt)


def answer(lm: Any, prompts: Sequence[Prompt | str], max_new_tokens: int = 16,
           stop: Sequence[str] = ("\n",)) -> list[str]:
    """Open QA: greedy continuations cut at the first stop string, stripped."""
    return [text.strip() for text in lm.generate(prompt_texts(prompts),
                                                 max_new_tokens=max_new_tokens, stop=list(stop))]


def continuation_lengths(lm: Any, texts: Sequence[str]) -> np.ndarray:
    """Tokens per continuation as the LM scores it (no special tokens)."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is not None:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return np.array([len(i) for i in ids], dtype=float)
    return np.asarray(lm.count_tokens(list(texts)), dtype=float)


def check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {NORMALIZE}, got {normalize!r}.")
