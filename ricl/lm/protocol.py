"""The language-model protocol ricl scores and generates with, and the checks every adapter shares.

Adapters (``TransformersLM`` in process, ``OpenAICompletionsLM`` over HTTP)
validate their arguments and cut generated text with these same functions, so
that a bad argument is the same ``ConfigError`` and a stop string cuts the same
way whichever model answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ricl.errors import ConfigError
from ricl.text import check_text

Normalize = Literal["sum", "mean"]


@runtime_checkable
class LM(Protocol):
    """What ricl needs from a language model. Scores are natural-log probabilities."""

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """``log p(continuations[i] | prompts[i])`` summed over the continuation's tokens, shape (n,)."""
        ...

    def score_choices(
        self, prompts: Sequence[str], choices: Sequence[str], normalize: Normalize = "sum"
    ) -> np.ndarray:
        """Log-probability of every choice after every prompt, shape (n_prompts, n_choices).

        ``choices`` is one list shared by all prompts (label words such as
        ``[" negative", " positive"]``). ``normalize="mean"`` divides each
        choice's summed log-probability by its number of tokens.
        """
        ...

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Greedy continuations, each cut before the first stop string."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text takes as a prompt."""
        ...


def text_list(texts: Sequence[str], name: str) -> list[str]:
    """``texts`` as a list of strings; a bare string is refused, since it would be read as characters."""
    if isinstance(texts, str):
        raise ConfigError(f"{name} must be a list of strings, not a single string: wrap it as [{name}].")
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise ConfigError(f"{name} must all be strings; found {sorted(set(bad))}.")
    for i, text in enumerate(texts):  # before a tokenizer fails on it deep inside
        check_text(text, f"{name}[{i}]")
    return texts


def pair_args(prompts: Sequence[str], continuations: Sequence[str]) -> tuple[list[str], list[str]]:
    """Checked ``score`` arguments: two lists of the same length."""
    prompts = text_list(prompts, "prompts")
    continuations = text_list(continuations, "continuations")
    if len(prompts) != len(continuations):
        raise ConfigError(f"score() pairs prompts with continuations: got {len(prompts)} prompts "
                          f"and {len(continuations)} continuations.")
    return prompts, continuations


def choice_args(prompts: Sequence[str], choices: Sequence[str],
                normalize: str) -> tuple[list[str], list[str]]:
    """Checked ``score_choices`` arguments, prompts and choices as lists."""
    prompts, choices = text_list(prompts, "prompts"), text_list(choices, "choices")
    if normalize not in ("sum", "mean"):
        raise ConfigError(f"normalize must be 'sum' or 'mean', got {normalize!r}.")
    if not choices:
        raise ConfigError("score_choices() needs at least one choice.")
    return prompts, choices


def generation_args(prompts: Sequence[str], max_new_tokens: int,
                    stop: Sequence[str] | str) -> tuple[list[str], list[str]]:
    """Checked ``generate`` arguments: the prompts as a list, the non-empty stop strings."""
    prompts = text_list(prompts, "prompts")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be at least 0, got {max_new_tokens}.")
    return prompts, [stop] if isinstance(stop, str) else [s for s in stop if s]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string it holds."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text
