"""``LM`` over a local transformers causal model, computing as few tokens as it can.

The work is split by idea: ``batching`` (length-sorted batches, left padding,
logits only where read), ``pairs`` (``score``), ``choices`` (``score_choices``,
single- and multi-token labels from one prompt pass) and ``generation``. This
class holds the model and tokenizer, checks arguments at the door and hands
token ids to those functions. Every fast path equals running each
prompt+continuation through the model alone (tests/test_lm.py checks it to 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ricl.devices import resolve_device, resolve_dtype
from ricl.errors import ConfigError
from ricl.lm.batching import length_batches
from ricl.lm.choices import score_from_cache, score_single_token
from ricl.lm.generation import generate_batch
from ricl.lm.pairs import score_continuations
from ricl.lm.prefix_tree import score_tree, sliding_window
from ricl.lm.protocol import Normalize, choice_args, generation_args, pair_args, text_list
from ricl.models import load_causal_lm
from ricl.prefix_sharing import prefix_sharing

SHARE_PREFIXES = ("auto", True, False)
AUTO_SHARED = 0.25  # "auto" shares prefixes when they hold at least this fraction of a batch's tokens


class TransformersLM:
    """``LM`` over a local transformers causal model (by default SmolLM2-135M-Instruct, fp32).

    Args:
        model: ``None`` for the default model, a packaged model's short name
            (``"smollm2-135m"``, the default; ``"gemma3-270m"``, Gemma 3 270M base:
            see ``ricl.models.PACKAGED_LMS``), a local model directory, or a
            ``(model, tokenizer)`` pair already loaded (see ``ricl.models.load_causal_lm``).
        batch_size: most prompts per forward pass.
        max_batch_tokens: most padded tokens per forward pass; long prompts
            get smaller batches so that memory stays bounded.
        progress: show a tqdm bar over batches.
        dtype: ``"float32"`` (default, exact), ``"bfloat16"`` (about 3x the speed on
            CPUs with AMX/AVX-512 BF16; scores are rounded, see
            ``eval.benchmarks.inference``), ``"float16"`` (GPUs), or ``"auto"``
            (bfloat16 where the hardware computes it natively, see ``ricl.devices``).
        device: ``"auto"`` (default: a GPU when torch sees one, else the CPU),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``. A model passed in as a
            ``(model, tokenizer)`` pair keeps its own device.
        device_map: e.g. ``"auto"`` to spread a model too large for one GPU over
            several (accelerate), instead of ``device``.
        share_prefixes: how ``score_choices`` treats prompts of a batch that begin with
            the same tokens (``PromptBuilder.build_many(share_prefixes=True)`` makes
            many): ``True`` computes each shared prefix once (``ricl.lm.prefix_tree``)
            and reads every label from the prompts' last positions; ``False`` runs each
            prompt whole; ``"auto"`` (default) shares when shared prefixes hold at least
            a quarter of the batch's prompt tokens: below that, the tree's extra passes
            and padding cost about what sharing saves (``eval.benchmarks.prefix_sharing``).
            Both give the same scores (float32: within 1e-4,
            tests/test_prefix_sharing.py); with bfloat16 they differ by rounding, as
            batches of different shapes do.
    """

    def __init__(
        self,
        model: Any = None,
        batch_size: int = 16,
        max_batch_tokens: int = 8192,
        progress: bool = False,
        dtype: str = "float32",
        device: Any = "auto",
        device_map: Any = None,
        share_prefixes: bool | str = "auto",
    ):
        if share_prefixes not in SHARE_PREFIXES or not isinstance(share_prefixes, (bool, str)):
            raise ConfigError(f"share_prefixes={share_prefixes!r}: choose True, False or 'auto'.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        if max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}.")
        if not isinstance(model, tuple) and device_map is None:
            device = resolve_device(device)
        self.model, self.tokenizer = load_causal_lm(model, resolve_dtype(dtype, device),
                                                    device, device_map)
        self.device = self.model.device  # where inputs go (the first shard under device_map)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.progress = progress
        self.share_prefixes = share_prefixes
        config = self.model.config
        self.max_length: int | None = getattr(config, "max_position_embeddings", None)
        eos = _as_list(getattr(self.model.generation_config, "eos_token_id", None))
        eos += _as_list(self.tokenizer.eos_token_id)
        self._eos_ids = frozenset(eos)
        start = self.tokenizer.bos_token_id
        self._start_id = start if start is not None else (eos[0] if eos else 0)
        pad = self.tokenizer.pad_token_id
        # Padding is always masked out, so any valid id will do.
        self.pad_id: int = pad if pad is not None else self._start_id

    # ------------------------------------------------------------------ protocol

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        texts = text_list(texts, "texts")
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        prompts, continuations = pair_args(prompts, continuations)
        return self.score_ids(self.encode_prompts(prompts), self.encode_continuations(continuations))

    def score_choices(
        self, prompts: Sequence[str], choices: Sequence[str], normalize: Normalize = "sum"
    ) -> np.ndarray:
        import torch

        prompts, choices = choice_args(prompts, choices, normalize)
        choice_ids = self.encode_continuations(choices)
        empty = [c for c, ids in zip(choices, choice_ids) if not ids]
        if empty:
            raise ConfigError(f"Choices must not be empty strings: {empty!r}.")
        prompt_ids = self.encode_prompts(prompts)
        longest_choice = max(len(c) for c in choice_ids)
        self.check_lengths([p + [0] * longest_choice for p in prompt_ids])

        if self._shares(prompt_ids, longest_choice):
            scores = self._score_choices_shared(prompt_ids, choice_ids)
        else:
            score_batch = score_single_token if longest_choice == 1 else score_from_cache
            scores = np.zeros((len(prompts), len(choices)))
            with torch.inference_mode(), torch.device(self.device):  # tensors born on the model's device
                for rows in self._batches([len(p) for p in prompt_ids]):
                    batch = [prompt_ids[i] for i in rows]
                    scores[rows] = score_batch(self.model, batch, choice_ids, self.pad_id).cpu().numpy()
        if normalize == "mean":
            scores /= np.array([len(c) for c in choice_ids], dtype=float)
        return scores

    def _shares(self, prompt_ids: list[list[int]], longest_choice: int) -> bool:
        """Whether ``score_choices`` computes shared prefixes once (``share_prefixes``)."""
        if self.share_prefixes is False or len(prompt_ids) < 2:
            return False
        window = sliding_window(self.model)  # kept keys would be cut to the window
        if window is not None and max(len(p) for p in prompt_ids) + longest_choice >= window:
            return False
        return self.share_prefixes is True or prefix_sharing(prompt_ids).ratio >= AUTO_SHARED

    def _score_choices_shared(self, prompt_ids: list[list[int]], choice_ids: list[list[int]]) -> np.ndarray:
        """Every choice after every prompt from one radix tree over the batch: a prompt's
        last position reads every choice's first token, and a multi-token choice's own
        tokens run after the prompt as one more branch of the tree."""
        import torch

        sequences, reads, targets, owner = [], [], [], []
        if all(len(c) == 1 for c in choice_ids):
            sequences = prompt_ids
            reads = [(i, len(p) - 1) for i, p in enumerate(prompt_ids)]
            targets = [[c[0] for c in choice_ids]] * len(prompt_ids)
        else:
            for i, p in enumerate(prompt_ids):
                for j, c in enumerate(choice_ids):
                    sequences.append(p + c[:-1])
                    for t, token in enumerate(c):
                        reads.append((len(sequences) - 1, len(p) - 1 + t))
                        targets.append([token])
                        owner.append(i * len(choice_ids) + j)
        with torch.inference_mode(), torch.device(self.device):  # tensors born on the model's device
            logp = score_tree(self.model, sequences, reads, targets, self.pad_id, self.batch_size,
                              self.max_batch_tokens).cpu().numpy()
        if not owner:
            return logp
        sums = np.zeros(len(prompt_ids) * len(choice_ids))
        np.add.at(sums, owner, logp[:, 0])
        return sums.reshape(len(prompt_ids), len(choice_ids))

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        import torch

        prompts, stop = generation_args(prompts, max_new_tokens, stop)
        prompt_ids = self.encode_prompts(prompts)
        self.check_lengths([p + [0] * max_new_tokens for p in prompt_ids])
        texts = [""] * len(prompts)
        if max_new_tokens == 0:
            return texts
        with torch.inference_mode(), torch.device(self.device):  # tensors born on the model's device
            for rows in self._batches([len(p) for p in prompt_ids]):
                batch = [prompt_ids[i] for i in rows]
                done = generate_batch(self.model, self.tokenizer, batch, max_new_tokens, stop,
                                      self._eos_ids, self.pad_id)
                for i, text in zip(rows, done):
                    texts[i] = text
        return texts

    # ------------------------------------------------------------------ token ids

    def score_ids(self, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``score`` on token ids: ``log p(continuation_ids[i] | prompt_ids[i])``, shape (n,).

        Each row is ``prompt_ids[i] + continuation_ids[i]`` run as given; a prompt
        must hold at least one token when its continuation is not empty.
        """
        import torch

        prompt_ids = [list(p) for p in prompt_ids]
        cont_ids = [list(c) for c in continuation_ids]
        if len(prompt_ids) != len(cont_ids):
            raise ConfigError(
                f"score_ids() pairs prompts with continuations: got {len(prompt_ids)} prompts "
                f"and {len(cont_ids)} continuations."
            )
        if any(c and not p for p, c in zip(prompt_ids, cont_ids)):
            raise ConfigError("score_ids(): a prompt with a continuation needs at least one token.")
        sequences = [p + c for p, c in zip(prompt_ids, cont_ids)]
        self.check_lengths(sequences)
        scores = np.zeros(len(prompt_ids))
        with torch.inference_mode(), torch.device(self.device):  # tensors born on the model's device
            for rows in self._batches([len(s) for s in sequences]):
                n_cont = [len(cont_ids[i]) for i in rows]
                if sum(n_cont) == 0:
                    continue
                sums = score_continuations(self.model, [sequences[i] for i in rows], n_cont, self.pad_id)
                scores[rows] = sums.cpu().numpy()
        return scores

    def encode_continuations(self, texts: list[str]) -> list[list[int]]:
        """Continuation token ids: no special tokens, tokenized apart from the prompt."""
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        """Prompt token ids as the tokenizer adds them; an empty prompt becomes the start token,
        so the first continuation token still has a position that predicts it."""
        if not prompts:
            return []
        encoded = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        return [list(ids) if len(ids) else [self._start_id] for ids in encoded]

    def check_lengths(self, sequences: list[list[int]]) -> None:
        """A ``ConfigError`` if any sequence of token ids is longer than the model's context."""
        if self.max_length is None or not sequences:
            return
        longest = max(len(s) for s in sequences)
        if longest > self.max_length:
            raise ConfigError(
                f"A prompt with its continuation takes {longest} tokens, more than the model's "
                f"{self.max_length}. Shorten it, or build prompts with a token budget."
            )

    def _batches(self, lengths: list[int]) -> Any:
        batches = length_batches(lengths, self.batch_size, self.max_batch_tokens)
        return tqdm(batches, disable=not self.progress, desc="LM batches", leave=False)


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
