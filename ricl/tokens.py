"""Whose tokens a prompt's budget is counted in.

A token budget means something only in the target model's tokens. ``TokenCounter``
takes what a user has at hand: nothing (the default LM's tokenizer), a local model
directory, a Hugging Face tokenizer, or the scoring LM itself (anything with
``count_tokens(texts) -> list[int]``, such as ``ricl.TransformersLM`` or an
``OpenAICompletionsLM``), and says in ``name`` which one counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ricl.errors import ConfigError


class TokenCounter:
    """Counts tokens of prompt parts for one builder; thread-safe, loads lazily."""

    def __init__(self, spec: Any = None):
        if not (spec is None or isinstance(spec, (str, Path)) or callable(spec)
                or hasattr(spec, "count_tokens")):
            raise ConfigError(f"tokenizer={spec!r}: pass None (the default LM's), a model "
                              "directory, a Hugging Face tokenizer, or an LM with count_tokens().")
        self.spec = spec
        self._tokenizer = None
        # Rust tokenizers raise "Already borrowed" if two threads change settings mid-call.
        self._lock = threading.RLock()

    @property
    def is_lm(self) -> bool:
        """True when the spec is an LM that counts its own tokens."""
        return hasattr(self.spec, "count_tokens")

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer behind the counts (an LM's own, when it has one)."""
        with self._lock:
            if self._tokenizer is None:
                spec = self.spec
                if self.is_lm:
                    self._tokenizer = getattr(spec, "tokenizer", None)
                elif spec is None or isinstance(spec, (str, Path)):
                    from ricl.models import load_tokenizer

                    self._tokenizer = load_tokenizer(spec)
                else:
                    self._tokenizer = spec
            return self._tokenizer

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text. An LM counts as it would see the text as a prompt (its own
        special tokens included); a tokenizer counts the text alone."""
        texts = list(texts)
        if not texts:
            return []
        if self.is_lm:
            return [int(n) for n in self.spec.count_tokens(texts)]
        tokenizer = self.tokenizer
        with self._lock:
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encoder(self) -> Callable[[str], list[int]] | Any:
        """What the long-context chunker splits with: a tokenizer, or for an LM without
        one (a server) a callable whose list length is the LM's count."""
        if self.is_lm and self.tokenizer is None:
            return lambda text: [0] * self.count([text])[0]
        return self.tokenizer

    @property
    def name(self) -> str:
        """Which tokenizer counted, as ``Prompt.tokenizer`` reports it."""
        spec = self.spec
        if spec is None:
            from ricl.models import DEFAULT_LM_NAME

            return DEFAULT_LM_NAME
        if isinstance(spec, (str, Path)):
            return str(spec)
        if self.is_lm:
            model = getattr(spec, "model_name", None) or getattr(
                getattr(spec, "tokenizer", None), "name_or_path", None)
            return f"{type(spec).__name__}({model})" if model else type(spec).__name__
        return getattr(spec, "name_or_path", None) or type(spec).__name__

    def card(self) -> str | None:
        """How a saved builder finds this tokenizer again: None for the default LM's, a
        packaged model's name, a directory path, or "custom" (an object the loader must
        be given again)."""
        from ricl.models import DEFAULT_LM, PACKAGED_LMS, ricl_home

        spec = self.spec
        if spec is None:
            return None
        if isinstance(spec, str) and spec in PACKAGED_LMS:
            return None if spec == DEFAULT_LM else spec
        if not isinstance(spec, (str, Path)):
            spec = None if self.is_lm else getattr(spec, "name_or_path", None)
            if not spec or not Path(spec).is_dir():
                return "custom"
        path = Path(spec).resolve()
        # Portable: a packaged model is found again by name on whatever machine loads it.
        for name, packaged in PACKAGED_LMS.items():
            if path == (ricl_home() / "models" / packaged.folder).resolve():
                return None if name == DEFAULT_LM else name
        return str(path)
