"""Metrics, baselines and paired significance tests for ICL evaluations.

Small pure functions, one idea each:

- accuracy and its standard error;
- SQuAD-style answer normalisation, exact match and token F1, each the maximum
  over all gold answers (TriviaQA lists aliases);
- baselines that use no LM: the majority pool label, and the kNN label vote over
  a prompt's demonstrations (how much of ICL's gain is label copying);
- per-label prediction counts (a small confusion summary), which shows a model
  collapsing onto one label;
- paired tests between two systems scored on the same examples: the exact
  McNemar test and a seeded paired bootstrap.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ricl.errors import ConfigError

# -- accuracy ----------------------------------------------------------------------------


def accuracy(predictions: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Fraction of predictions equal to the gold label."""
    _check_paired(predictions, gold, "predictions", "gold")
    if not gold:
        raise ConfigError("accuracy() of no examples is undefined: pass at least one.")
    return sum(p == g for p, g in zip(predictions, gold)) / len(gold)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-example scores.

    Uses the plug-in variance (ddof=0), so for 0/1 scores it is the familiar
    ``sqrt(p (1 - p) / n)``.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan")
    return float(values.std() / math.sqrt(values.size))


# -- open QA: SQuAD normalisation, exact match, token F1 ----------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles
    (a, an, the), single spaces (Rajpurkar et al. 2016, the official evaluate script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _answers(answers: str | Iterable[str]) -> list[str]:
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ConfigError("A QA example needs at least one gold answer.")
    return answers


def exact_match(prediction: str, answers: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    guess = normalize_answer(prediction)
    return float(any(guess == normalize_answer(a) for a in _answers(answers)))


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        # SQuAD v2 convention: two empty answers agree; one empty answer scores 0.
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: str | Iterable[str]) -> float:
    """Bag-of-tokens F1 of the normalised prediction, the best over all gold answers."""
    guess = normalize_answer(prediction).split()
    return max(_f1(guess, normalize_answer(a).split()) for a in _answers(answers))


# -- baselines without an LM ----------------------------------------------------------------


def majority_label(labels: Iterable[str]) -> str:
    """The most frequent label; ties go to the label seen first."""
    counts = Counter(labels)
    if not counts:
        raise ConfigError("majority_label() needs at least one label.")
    return max(counts, key=counts.__getitem__)  # max keeps the first of equal counts


def majority_baseline(pool_labels: Iterable[str], gold: Sequence[str]) -> tuple[str, float]:
    """Predict the most frequent pool label for every test example: (label, accuracy)."""
    label = majority_label(pool_labels)
    return label, accuracy([label] * len(gold), gold)


def knn_vote(demos: Sequence[Any]) -> str | None:
    """Majority label of a prompt's demonstrations (objects with ``output``, ``score``
    and ``rank``, such as ``ricl.prompt.Demo``); None when there are none.

    A tie goes to the label of the most similar demo among the tied labels: the
    highest retriever score, or the earliest selection rank when scores are missing.
    """
    if not demos:
        return None
    votes = Counter(demo.output for demo in demos)
    best = max(votes.values())
    by_similarity = sorted(demos, key=_similarity_key)
    return next(demo.output for demo in by_similarity if votes[demo.output] == best)


def _similarity_key(demo: Any) -> tuple[float, int]:
    score = getattr(demo, "score", None)
    return (-score if score is not None else math.inf, getattr(demo, "rank", 0))


def prediction_counts(predictions: Iterable[Hashable],
                      labels: Sequence[Hashable] | None = None) -> dict[str, int]:
    """How often each label was predicted; with ``labels``, every label appears
    (zeros included) in that order, and any other prediction after them."""
    counts = Counter(predictions)
    known = list(labels or [])
    others = sorted((p for p in counts if p not in set(known)), key=str)
    return {str(label): counts.get(label, 0) for label in known + others}


def confusion_counts(gold: Sequence[Hashable], predictions: Sequence[Hashable],
                     labels: Sequence[Hashable] | None = None) -> dict[str, dict[str, int]]:
    """``{gold label: {predicted label: count}}``, rows and columns in ``labels`` order."""
    _check_paired(predictions, gold, "predictions", "gold")
    labels = list(labels) if labels is not None else sorted(set(gold) | set(predictions), key=str)
    pairs = Counter(zip(gold, predictions))
    return {str(g): {str(p): pairs.get((g, p), 0) for p in labels} for g in labels}


# -- paired significance ------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. ``only_a``: examples A gets right and B wrong; ``only_b``:
    the reverse. ``p_value`` is two-sided."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact (binomial) McNemar test on paired per-example correctness.

    Under the null both systems are equally good, so each discordant pair is a fair
    coin: the two-sided exact binomial test of ``only_a`` successes in ``only_a +
    only_b`` trials at p = 1/2, that is ``min(1, 2 P[X <= min(b, c)])`` with
    ``X ~ Binomial(b + c, 1/2)`` (McNemar 1947; the exact form is Edwards'
    recommendation for small counts). SciPy's ``binomtest`` computes it.
    """
    from scipy.stats import binomtest  # here: scipy.stats takes a second to import

    _check_paired(correct_a, correct_b, "correct_a", "correct_b")
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return McNemarResult(only_a, only_b, 1.0)
    return McNemarResult(only_a, only_b, float(binomtest(only_a, n, 0.5).pvalue))


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``mean(a) - mean(b)``: the observed difference, a percentile
    confidence interval and a two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n_resamples: int


def paired_bootstrap(scores_a: Sequence[float], scores_b: Sequence[float],
                     n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> BootstrapResult:
    """Resample examples with replacement (the same rows for both systems).

    The p-value tests ``delta == 0`` with the resampled differences shifted to the
    null (centred on zero): the share whose magnitude reaches the observed one
    (Efron & Tibshirani 1993, section 16.4). Seeded, so reruns give the same answer.
    """
    _check_paired(scores_a, scores_b, "scores_a", "scores_b")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, got {n_resamples}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}.")
    diff = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    if diff.size == 0:
        raise ConfigError("paired_bootstrap() needs at least one example.")
    delta = float(diff.mean())
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # bounded memory for large test sets
        stop = min(start + 1000, n_resamples)
        rows = rng.integers(0, diff.size, size=(stop - start, diff.size))
        resampled[start:stop] = diff[rows].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    # A tolerance so that an observed 0 (or exact ties) counts as "reaching" it.
    p_value = float(np.mean(np.abs(resampled - delta) >= abs(delta) - 1e-12))
    return BootstrapResult(delta, float(low), float(high), p_value, n_resamples)


def _check_paired(a: Sequence[Any], b: Sequence[Any], name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ConfigError(f"{name_a} and {name_b} must pair up one to one: "
                          f"got {len(a)} and {len(b)} items.")
