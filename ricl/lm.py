"""The language-model protocol ricl scores and generates with, and a local transformers adapter.

On a CPU the LM dominates every run, so ``TransformersLM`` computes as few
tokens as it can:

- prompts are sorted by length and batched with left padding, so a batch
  carries little padding; results come back in the caller's order;
- the vocabulary projection (a fifth of SmolLM2-135M's FLOPs) runs only at
  the positions whose next-token distribution is read (``logits_to_keep``);
- label scoring reads every single-token label from one forward pass per
  prompt; multi-token labels are scored from the prompt's KV cache in one more
  pass, all labels at once, each attending to the prompt and to its own
  earlier tokens only (a block-diagonal "tree" mask, as in speculative
  decoding), so the prompt is neither recomputed nor copied per label;
- pairs that share a prefix (LM feedback on candidate demos: a demo followed by
  each query that retrieved it) run each prefix once into a KV cache, then the
  suffixes, sorted by length, against the rows of that cache they need
  (``score_shared_prefixes``).

Every fast path equals running each prompt+continuation through the model
alone (tests/test_lm.py checks it to 1e-4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from ricl.errors import ConfigError
from ricl.models import load_causal_lm

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


class TransformersLM:
    """``LM`` over a local transformers causal model (by default SmolLM2-135M-Instruct, fp32, CPU).

    Args:
        model: ``None`` for the default model, a local model directory, or a
            ``(model, tokenizer)`` pair already loaded (see ``ricl.models.load_causal_lm``).
        batch_size: most prompts per forward pass.
        max_batch_tokens: most padded tokens per forward pass; long prompts
            get smaller batches so that memory stays bounded.
        progress: show a tqdm bar over batches.
        dtype: ``"float32"`` (default, exact) or ``"bfloat16"`` (about 3x the speed
            on CPUs with AMX/AVX-512 BF16; scores are rounded, see ``eval.benchmarks.inference``).
    """

    def __init__(
        self,
        model: Any = None,
        batch_size: int = 16,
        max_batch_tokens: int = 8192,
        progress: bool = False,
        dtype: str = "float32",
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        if max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}.")
        self.model, self.tokenizer = load_causal_lm(model, dtype)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.progress = progress
        config = self.model.config
        self.max_length: int | None = getattr(config, "max_position_embeddings", None)
        eos = _as_list(getattr(self.model.generation_config, "eos_token_id", None))
        eos += _as_list(self.tokenizer.eos_token_id)
        self._eos_ids = frozenset(eos)
        start = self.tokenizer.bos_token_id
        self._start_id = start if start is not None else (eos[0] if eos else 0)
        pad = self.tokenizer.pad_token_id
        # Padding is always masked out, so any valid id will do.
        self._pad_id = pad if pad is not None else self._start_id

    # ------------------------------------------------------------------ protocol

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        texts = _text_list(texts, "texts")
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        prompts, continuations = pair_args(prompts, continuations)
        return self.score_ids(self._encode_prompts(prompts), self._encode(continuations))

    def score_choices(
        self, prompts: Sequence[str], choices: Sequence[str], normalize: Normalize = "sum"
    ) -> np.ndarray:
        import torch

        prompts, choices = choice_args(prompts, choices, normalize)
        choice_ids = self._encode(choices)
        empty = [c for c, ids in zip(choices, choice_ids) if not ids]
        if empty:
            raise ConfigError(f"Choices must not be empty strings: {empty!r}.")
        prompt_ids = self._encode_prompts(prompts)
        longest_choice = max(len(c) for c in choice_ids)
        self._check_lengths([p + [0] * longest_choice for p in prompt_ids])

        scores = np.zeros((len(prompts), len(choices)))
        with torch.inference_mode():
            for rows in self._batches([len(p) for p in prompt_ids]):
                batch = [prompt_ids[i] for i in rows]
                if longest_choice == 1:
                    scores[rows] = self._score_single_token(batch, choice_ids).numpy()
                else:
                    scores[rows] = self._score_from_cache(batch, choice_ids).numpy()
        if normalize == "mean":
            scores /= np.array([len(c) for c in choice_ids], dtype=float)
        return scores

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        import torch

        prompts, stop = generation_args(prompts, max_new_tokens, stop)
        prompt_ids = self._encode_prompts(prompts)
        self._check_lengths([p + [0] * max_new_tokens for p in prompt_ids])
        texts = [""] * len(prompts)
        if max_new_tokens == 0:
            return texts
        with torch.inference_mode():
            for rows in self._batches([len(p) for p in prompt_ids]):
                for i, text in zip(rows, self._generate_batch([prompt_ids[i] for i in rows], max_new_tokens, stop)):
                    texts[i] = text
        return texts

    # ------------------------------------------------------------------ pair scoring

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
        self._check_lengths(sequences)
        scores = np.zeros(len(prompt_ids))
        with torch.inference_mode():
            for rows in self._batches([len(s) for s in sequences]):
                n_cont = [len(cont_ids[i]) for i in rows]
                if sum(n_cont) == 0:
                    continue
                ids, mask, positions = self._left_pad([sequences[i] for i in rows])
                width = ids.shape[1]
                # Read logits only where the next token is a continuation token: in a
                # left-padded row those are the n_cont positions before the last one.
                keep = torch.zeros(ids.shape, dtype=torch.bool)
                owner = []
                for r, m in enumerate(n_cont):
                    keep[r, width - 1 - m : width - 1] = True
                    owner += [r] * m
                targets = ids[:, 1:][keep[:, :-1]]
                logits = self._forward(ids, mask, positions, logits_to_keep=keep).logits
                token_logp = _log_probs_of(logits.reshape(-1, logits.shape[-1]), targets)
                sums = torch.zeros(len(rows), dtype=torch.float64)
                sums.index_add_(0, torch.tensor(owner), token_logp.double())
                scores[rows] = sums.numpy()
        return scores

    def score_shared_prefix(
        self, prefix: str, prompts_after_prefix: Sequence[str], continuations: Sequence[str]
    ) -> np.ndarray:
        """``log p(continuations[i] | prefix + prompts_after_prefix[i])``, the prefix run once.

        See ``score_shared_prefixes``; this is its one-prefix case.
        """
        prompts_after_prefix = _text_list(prompts_after_prefix, "prompts_after_prefix")
        return self.score_shared_prefixes([prefix], prompts_after_prefix, continuations,
                                          [0] * len(prompts_after_prefix))

    def score_shared_prefixes(
        self,
        prefixes: Sequence[str],
        suffixes: Sequence[str],
        continuations: Sequence[str],
        prefix_of: Sequence[int],
        on_scored: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``log p(continuations[i] | prefixes[prefix_of[i]] + suffixes[i])`` for every i, shape (n,).

        Built for many pairs that share few prefixes (a candidate demonstration
        followed by each query that retrieved it): each prefix's KV cache is
        computed once and reused by all its suffixes. Prefix, suffix and
        continuation are tokenized apart and their ids concatenated, so a prefix
        should end where the tokenizer cuts anyway, before a space and a word
        (ricl's feedback scoring cuts ``"...\\n\\nQuestion:" | " How far ..."``);
        then the numbers equal ``score(prefix + suffix, continuation)``. They
        always equal ``score_ids(prefix_ids + suffix_ids, continuation_ids)``.
        ``on_scored(k)`` is called as each batch of k pairs is done.
        """
        prefixes = _text_list(prefixes, "prefixes")
        suffixes = _text_list(suffixes, "suffixes")
        continuations = _text_list(continuations, "continuations")
        if not len(suffixes) == len(continuations) == len(prefix_of):
            raise ConfigError(
                f"score_shared_prefixes() needs one suffix, continuation and prefix index per pair: got "
                f"{len(suffixes)} suffixes, {len(continuations)} continuations, {len(prefix_of)} indices."
            )
        return self.score_prefixed_ids(
            self._encode_prompts(prefixes), self._encode(suffixes), self._encode(continuations),
            prefix_of, on_scored=on_scored,
        )

    def score_prefixed_ids(
        self,
        prefix_ids: Sequence[Sequence[int]],
        suffix_ids: Sequence[Sequence[int]],
        continuation_ids: Sequence[Sequence[int]],
        prefix_of: Sequence[int],
        on_scored: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``score_shared_prefixes`` on token ids.

        Prefixes are run in length-sorted batches with a KV cache; the pairs of
        a prefix batch are then sorted by suffix length and run in batches
        against the rows of that cache they need (gathered, not recomputed), with
        logits only at the continuation positions. A continuation's last token
        is never fed: nothing reads what it predicts.
        """
        import torch

        prefix_ids = [list(p) for p in prefix_ids]
        suffix_ids = [list(s) for s in suffix_ids]
        cont_ids = [list(c) for c in continuation_ids]
        owner_prefix = [int(p) for p in prefix_of]
        n = len(suffix_ids)
        if not len(cont_ids) == len(owner_prefix) == n:
            raise ConfigError(
                f"score_prefixed_ids() needs one suffix, continuation and prefix index per pair: got "
                f"{n} suffixes, {len(cont_ids)} continuations, {len(owner_prefix)} indices."
            )
        bad = [p for p in owner_prefix if not 0 <= p < len(prefix_ids)]
        if bad:
            raise ConfigError(f"prefix_of holds {bad[0]}, outside 0..{len(prefix_ids) - 1}.")
        if any(not prefix_ids[p] for p in set(owner_prefix)):
            raise ConfigError("score_prefixed_ids(): every prefix needs at least one token.")
        self._check_lengths([prefix_ids[p] + s + c for p, s, c in zip(owner_prefix, suffix_ids, cont_ids)])

        scores = np.zeros(n)
        pairs_of: dict[int, list[int]] = {}
        for i in range(n):
            if cont_ids[i]:
                pairs_of.setdefault(owner_prefix[i], []).append(i)
        with torch.inference_mode():
            for group in self._prefix_groups(prefix_ids, pairs_of):
                for i, value in self._score_prefix_group(prefix_ids, suffix_ids, cont_ids, owner_prefix,
                                                         pairs_of, group, on_scored):
                    scores[i] = value
        if on_scored is not None and n > sum(len(v) for v in pairs_of.values()):
            on_scored(n - sum(len(v) for v in pairs_of.values()))  # empty continuations: nothing to run
        return scores

    def _prefix_groups(self, prefix_ids: list[list[int]], pairs_of: dict[int, list[int]]) -> list[list[int]]:
        """Prefixes in groups of similar length, each bounded in pairs and in padded tokens.

        A group carries several suffix batches' worth of pairs, so sorting its
        pairs by suffix length leaves little padding.
        """
        used = sorted(pairs_of, key=lambda p: (-len(prefix_ids[p]), p))
        most_pairs = 16 * self.batch_size
        groups: list[list[int]] = []
        current: list[int] = []
        width = n_pairs = 0
        for p in used:
            grown = max(width, len(prefix_ids[p])) * (len(current) + 1)
            if current and (n_pairs + len(pairs_of[p]) > most_pairs or grown > self.max_batch_tokens):
                groups.append(current)
                current, width, n_pairs = [], 0, 0
            current.append(p)
            width = max(width, len(prefix_ids[p]))
            n_pairs += len(pairs_of[p])
        if current:
            groups.append(current)
        return groups

    def _score_prefix_group(
        self,
        prefix_ids: list[list[int]],
        suffix_ids: list[list[int]],
        cont_ids: list[list[int]],
        owner_prefix: list[int],
        pairs_of: dict[int, list[int]],
        group: list[int],
        on_scored: Callable[[int], None] | None,
    ) -> Any:
        """Yield ``(pair index, score)`` for every pair whose prefix is in ``group`` (longest first)."""
        import torch

        slot_of = {p: s for s, p in enumerate(group)}
        pairs = [i for p in group for i in pairs_of[p]]
        # The prefix's own last logits are needed only for a pair with an empty suffix.
        need_last = any(not suffix_ids[i] for i in pairs)
        layers, prefix_mask, last_logp = self._prefix_cache([prefix_ids[p] for p in group], need_last)
        prefix_lengths = torch.tensor([len(prefix_ids[p]) for p in group])

        # Feed suffix + continuation minus its last token; position j (0-based in
        # the fed row) predicts continuation token j - len(suffix) + 1.
        fed = {i: suffix_ids[i] + cont_ids[i][:-1] for i in pairs}
        by_length = sorted(pairs, key=lambda i: (-len(fed[i]), i))
        for rows in self._suffix_batches(by_length, fed, prefix_mask.shape[1]):
            scores = torch.zeros(len(rows), dtype=torch.float64)
            slots = torch.tensor([slot_of[owner_prefix[i]] for i in rows])
            if need_last:
                for r, i in enumerate(rows):
                    if not suffix_ids[i]:
                        scores[r] += last_logp[slots[r], cont_ids[i][0]].double()
            span = max(len(fed[i]) for i in rows)
            if span:
                scores += self._score_suffixes(rows, fed, suffix_ids, cont_ids, layers, slots,
                                               prefix_mask, prefix_lengths, span)
            if on_scored is not None:
                on_scored(len(rows))
            yield from zip(rows, scores.tolist())

    def _prefix_cache(self, prefixes: list[list[int]], need_last: bool) -> tuple[list[Any], Any, Any]:
        """Per-layer (keys, values) of all ``prefixes`` (longest first), left-padded to one width.

        Run in batches of ``2 * batch_size`` prefixes (about the tokens of ``batch_size``
        whole prompts), so that a batch spans few lengths and computes little padding;
        padding added to the cache afterwards costs no compute, only masked keys.
        Also returns the attention mask and, if asked, each prefix's next-token log-probs.
        """
        import torch
        from torch.nn.functional import pad
        from transformers import DynamicCache

        width = max(len(p) for p in prefixes)
        step = max(1, min(2 * self.batch_size, self.max_batch_tokens // width))
        keys: list[list[Any]] = []
        values: list[list[Any]] = []
        masks, lasts = [], []
        for start in range(0, len(prefixes), step):
            ids, mask, positions = self._left_pad(prefixes[start : start + step])
            cache = DynamicCache(config=self.model.config)
            out = self._forward(ids, mask, positions, past_key_values=cache,
                                logits_to_keep=1 if need_last else torch.zeros(0, dtype=torch.long))
            if need_last:
                lasts.append(out.logits[:, -1].float().log_softmax(-1))
            extra = width - ids.shape[1]
            for layer_index, layer in enumerate(cache.layers):
                if layer_index == len(keys):
                    keys.append([])
                    values.append([])
                keys[layer_index].append(pad(layer.keys, (0, 0, extra, 0)) if extra else layer.keys)
                values[layer_index].append(pad(layer.values, (0, 0, extra, 0)) if extra else layer.values)
            mask = mask if mask is not None else torch.ones(ids.shape, dtype=torch.long)
            masks.append(pad(mask, (extra, 0)) if extra else mask)
        layers = [(torch.cat(k), torch.cat(v)) for k, v in zip(keys, values)]
        return layers, torch.cat(masks), torch.cat(lasts) if need_last else None

    def _suffix_batches(self, rows: list[int], fed: dict[int, list[int]], prefix_width: int) -> list[list[int]]:
        """Rows (longest first) in batches that compute about as many tokens as ``batch_size``
        whole prompts would: suffixes are short, and a CPU runs larger matrices faster."""
        batches: list[list[int]] = []
        current: list[int] = []
        span = 0
        for i in rows:
            wider = max(span, len(fed[i]))
            computed = wider * (len(current) + 1)
            attended = (prefix_width + wider) * (len(current) + 1)
            if current and (computed > self.batch_size * (prefix_width + wider)
                            or attended > self.max_batch_tokens):
                batches.append(current)
                current, span = [], 0
            current.append(i)
            span = max(span, len(fed[i]))
        if current:
            batches.append(current)
        return batches

    def _score_suffixes(self, rows, fed, suffix_ids, cont_ids, layers, slots, prefix_mask, prefix_lengths,
                        span: int) -> Any:
        """Summed continuation log-probs of ``rows``, run as right-padded suffixes after their prefixes' cache."""
        import torch
        from transformers import DynamicCache

        n_rows = len(rows)
        ids = torch.full((n_rows, span), self._pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((n_rows, span), dtype=torch.long)
        keep = torch.zeros((n_rows, span), dtype=torch.bool)
        targets: list[int] = []
        owner: list[int] = []
        for r, i in enumerate(rows):
            tokens = fed[i]
            if tokens:
                ids[r, : len(tokens)] = torch.tensor(tokens)
                suffix_mask[r, : len(tokens)] = 1
            first = len(suffix_ids[i]) - 1  # the position that predicts the first continuation token
            predicted = cont_ids[i][1:] if first < 0 else cont_ids[i]
            start = max(first, 0)
            keep[r, start : start + len(predicted)] = True
            targets += predicted
            owner += [r] * len(predicted)
        if not targets:
            return torch.zeros(n_rows, dtype=torch.float64)
        # Right padding: a pad is seen by no real token (causal), and what pads compute is never read.
        cache = DynamicCache(
            ddp_cache_data=[(k.index_select(0, slots), v.index_select(0, slots)) for k, v in layers],
            config=self.model.config,
        )
        mask = torch.cat([prefix_mask.index_select(0, slots), suffix_mask], dim=1)
        positions = prefix_lengths.index_select(0, slots)[:, None] + torch.arange(span)[None, :]
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        ).logits
        token_logp = _log_probs_of(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets))
        sums = torch.zeros(n_rows, dtype=torch.float64)
        sums.index_add_(0, torch.tensor(owner), token_logp.double())
        return sums

    # ------------------------------------------------------------------ label scoring

    def _score_single_token(self, prompt_ids: list[list[int]], choice_ids: list[list[int]]) -> Any:
        """All single-token choices read from the last position's distribution: one pass, one logit row."""
        ids, mask, positions = self._left_pad(prompt_ids)
        logits = self._forward(ids, mask, positions, logits_to_keep=1).logits[:, -1]
        log_probs = logits.float().log_softmax(-1)
        return log_probs[:, [c[0] for c in choice_ids]].double()

    def _score_from_cache(self, prompt_ids: list[list[int]], choice_ids: list[list[int]]) -> Any:
        """Multi-token choices: the prompt once, then every choice from its KV cache in one pass.

        The second pass lays the choices side by side after the prompt, choice
        ``j`` in slots ``j*S .. j*S+S-1``; each slot sees the prompt's real
        tokens and the earlier slots of its own choice, and is positioned as if
        it directly followed the prompt.
        """
        import torch
        from transformers import DynamicCache

        model = self.model
        ids, mask, positions = self._left_pad(prompt_ids)
        n_rows, width = ids.shape
        cache = DynamicCache(config=model.config)
        out = self._forward(ids, mask, positions, logits_to_keep=1, past_key_values=cache)
        first = out.logits[:, -1].float().log_softmax(-1)[:, [c[0] for c in choice_ids]].double()

        # Choice j feeds its tokens but the last; slot t of it predicts token t+1.
        n_choices = len(choice_ids)
        slots = max(len(c) for c in choice_ids) - 1
        fed = torch.full((n_choices, slots), self._pad_id, dtype=torch.long)
        predicted = torch.zeros((n_choices, slots), dtype=torch.long)
        real = torch.zeros((n_choices, slots), dtype=torch.bool)
        for j, c in enumerate(choice_ids):
            fed[j, : len(c) - 1] = torch.tensor(c[:-1])
            predicted[j, : len(c) - 1] = torch.tensor(c[1:])
            real[j, : len(c) - 1] = True
        span = n_choices * slots
        suffix_ids = fed.reshape(1, span).expand(n_rows, span)
        prompt_lengths = torch.tensor([len(p) for p in prompt_ids])
        suffix_positions = prompt_lengths[:, None] + torch.arange(slots).repeat(n_choices)[None, :]

        # Tree attention: prompt keys (minus padding) for every slot, then causal within a choice.
        choice_of_slot = torch.arange(n_choices).repeat_interleave(slots)
        step_of_slot = torch.arange(slots).repeat(n_choices)
        within = (choice_of_slot[:, None] == choice_of_slot[None, :]) & (
            step_of_slot[None, :] <= step_of_slot[:, None]
        )
        prompt_keys = (
            mask.bool() if mask is not None else torch.ones((n_rows, width), dtype=torch.bool)
        )
        allowed = torch.cat(
            [prompt_keys[:, None, :].expand(n_rows, span, width), within[None].expand(n_rows, span, span)],
            dim=-1,
        )
        dtype = model.dtype
        additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)

        keep = real.reshape(1, span).expand(n_rows, span)
        out = model(
            input_ids=suffix_ids,
            attention_mask=additive[:, None],
            position_ids=suffix_positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        targets = predicted.reshape(1, span).expand(n_rows, span)[keep]
        token_logp = _log_probs_of(out.logits.reshape(-1, out.logits.shape[-1]), targets)
        # Rows of `keep` are identical, so the kept tokens reshape to (rows, tokens per row).
        per_row = token_logp.reshape(n_rows, -1).double()
        to_choice = torch.nn.functional.one_hot(choice_of_slot[real.reshape(-1)], n_choices).double()
        return first + per_row @ to_choice

    # ------------------------------------------------------------------ generation

    def _generate_batch(self, prompt_ids: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy decoding; a row leaves the batch (and the KV cache) as soon as it is done."""
        import torch
        from transformers import DynamicCache

        ids, mask, positions = self._left_pad(prompt_ids)
        n_rows, width = ids.shape
        mask = mask if mask is not None else torch.ones((n_rows, width), dtype=torch.long)
        next_position = torch.tensor([len(p) for p in prompt_ids])
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, positions, logits_to_keep=1, past_key_values=cache).logits
        active = list(range(n_rows))
        generated: list[list[int]] = [[] for _ in range(n_rows)]
        texts = [""] * n_rows
        for step in range(max_new_tokens):
            tokens = logits[:, -1].argmax(-1)
            still = []
            for r, token in enumerate(tokens.tolist()):
                row = active[r]
                if token in self._eos_ids:
                    continue
                generated[row].append(token)
                texts[row] = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                if not any(s in texts[row] for s in stop):
                    still.append(r)
            if not still or step == max_new_tokens - 1:
                break
            if len(still) < len(active):
                index = torch.tensor(still)
                cache.batch_select_indices(index)
                mask, tokens, next_position = mask[index], tokens[index], next_position[index]
                active = [active[r] for r in still]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype)], dim=1)
            logits = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits
            next_position = next_position + 1
        return [_cut_at_stop(text, stop) for text in texts]

    # ------------------------------------------------------------------ plumbing

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Continuation token ids: no special tokens, tokenized apart from the prompt."""
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        """Prompt token ids as the tokenizer adds them; an empty prompt becomes the start token,
        so the first continuation token still has a position that predicts it."""
        if not prompts:
            return []
        encoded = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        return [list(ids) if len(ids) else [self._start_id] for ids in encoded]

    def _check_lengths(self, sequences: list[list[int]]) -> None:
        if self.max_length is None or not sequences:
            return
        longest = max(len(s) for s in sequences)
        if longest > self.max_length:
            raise ConfigError(
                f"A prompt with its continuation takes {longest} tokens, more than the model's "
                f"{self.max_length}. Shorten it, or build prompts with a token budget."
            )

    def _batches(self, lengths: list[int]) -> Any:
        """Row indices grouped longest first, so each batch holds prompts of similar length.

        Longest first also means a batch too large for memory fails at once, not at the end.
        """
        order = np.argsort(-np.asarray(lengths), kind="stable")
        batches: list[np.ndarray] = []
        current: list[int] = []
        width = 0
        for i in order:
            grown = max(width, lengths[i]) * (len(current) + 1)
            if current and (len(current) == self.batch_size or grown > self.max_batch_tokens):
                batches.append(np.array(current))
                current, width = [], 0
            current.append(int(i))
            width = max(width, lengths[i])
        if current:
            batches.append(np.array(current))
        return tqdm(batches, disable=not self.progress, desc="LM batches", leave=False)

    def _left_pad(self, sequences: list[list[int]]) -> tuple[Any, Any, Any]:
        """Input ids, attention mask and position ids, padded on the left.

        Mask and positions are ``None`` when no row needs padding, which lets
        the model take its plain causal path.
        """
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for r, s in enumerate(sequences):
            ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s) :] = 1
        if bool(mask.all()):
            return ids, None, None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, positions

    def _forward(self, ids: Any, mask: Any, positions: Any, *, logits_to_keep: Any, past_key_values: Any = None) -> Any:
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past_key_values,
            use_cache=past_key_values is not None,
            logits_to_keep=logits_to_keep,
        )


def _log_probs_of(logits: Any, targets: Any) -> Any:
    """log_softmax(logits)[i, targets[i]] for each row i, in float32."""
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def _cut_at_stop(text: str, stop: list[str]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def pair_args(prompts: Sequence[str], continuations: Sequence[str]) -> tuple[list[str], list[str]]:
    """Checked ``score`` arguments: two lists of the same length."""
    prompts = _text_list(prompts, "prompts")
    continuations = _text_list(continuations, "continuations")
    if len(prompts) != len(continuations):
        raise ConfigError(f"score() pairs prompts with continuations: got {len(prompts)} prompts "
                          f"and {len(continuations)} continuations.")
    return prompts, continuations


def choice_args(prompts: Sequence[str], choices: Sequence[str],
                normalize: str) -> tuple[list[str], list[str]]:
    """Checked ``score_choices`` arguments, prompts and choices as lists."""
    prompts, choices = _text_list(prompts, "prompts"), _text_list(choices, "choices")
    if normalize not in ("sum", "mean"):
        raise ConfigError(f"normalize must be 'sum' or 'mean', got {normalize!r}.")
    if not choices:
        raise ConfigError("score_choices() needs at least one choice.")
    return prompts, choices


def generation_args(prompts: Sequence[str], max_new_tokens: int,
                    stop: Sequence[str] | str) -> tuple[list[str], list[str]]:
    """Checked ``generate`` arguments: the prompts as a list, the non-empty stop strings."""
    prompts = _text_list(prompts, "prompts")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be at least 0, got {max_new_tokens}.")
    return prompts, [stop] if isinstance(stop, str) else [s for s in stop if s]


def _text_list(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError(f"{name} must be a list of strings, not a single string: wrap it as [{name}].")
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise ConfigError(f"{name} must all be strings; found {sorted(set(bad))}.")
    return texts
