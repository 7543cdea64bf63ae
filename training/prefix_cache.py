"""Scoring many (prefix, suffix, continuation) triples that share few prefixes, each prefix run once.

LM feedback scores a candidate demonstration followed by each query that
retrieved it: the demo is a prefix shared by all those pairs. Here each
prefix's KV cache is computed once, then the suffixes, sorted by length, run
against the rows of that cache they need (gathered, not recomputed), with
logits only at the continuation positions. It pays off in proportion to how
many queries share a candidate (see DESIGN.md, "Where the time goes").

It works on ``ricl.lm.TransformersLM``'s model and token ids; an LM without
them (a server) scores the joined prompts through ``score`` instead. The general
form, a radix tree over any batch of sequences (label scoring uses it), is
``ricl.lm.prefix_tree``; both run tokens after gathered keys and values with its
``run_after_cache``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ricl.errors import ConfigError
from ricl.lm import TransformersLM, text_list
from ricl.lm.batching import forward, left_pad, log_probs_of
from ricl.lm.prefix_tree import run_after_cache


def score_shared_prefixes(
    lm: TransformersLM,
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
    then the numbers equal ``lm.score(prefix + suffix, continuation)``. They
    always equal ``lm.score_ids(prefix_ids + suffix_ids, continuation_ids)``.
    ``on_scored(k)`` is called as each batch of k pairs is done.
    """
    prefixes = text_list(prefixes, "prefixes")
    suffixes = text_list(suffixes, "suffixes")
    continuations = text_list(continuations, "continuations")
    if not len(suffixes) == len(continuations) == len(prefix_of):
        raise ConfigError(
            f"score_shared_prefixes() needs one suffix, continuation and prefix index per pair: got "
            f"{len(suffixes)} suffixes, {len(continuations)} continuations, {len(prefix_of)} indices."
        )
    return score_prefixed_ids(
        lm, lm.encode_prompts(prefixes), lm.encode_continuations(suffixes),
        lm.encode_continuations(continuations), prefix_of, on_scored=on_scored,
    )


def score_shared_prefix(lm: TransformersLM, prefix: str, prompts_after_prefix: Sequence[str],
                        continuations: Sequence[str]) -> np.ndarray:
    """``log p(continuations[i] | prefix + prompts_after_prefix[i])``, the prefix run once.

    See ``score_shared_prefixes``; this is its one-prefix case.
    """
    prompts_after_prefix = text_list(prompts_after_prefix, "prompts_after_prefix")
    return score_shared_prefixes(lm, [prefix], prompts_after_prefix, continuations,
                                 [0] * len(prompts_after_prefix))


def score_prefixed_ids(
    lm: TransformersLM,
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
    lm.check_lengths([prefix_ids[p] + s + c for p, s, c in zip(owner_prefix, suffix_ids, cont_ids)])

    scores = np.zeros(n)
    pairs_of: dict[int, list[int]] = {}
    for i in range(n):
        if cont_ids[i]:
            pairs_of.setdefault(owner_prefix[i], []).append(i)
    with torch.inference_mode(), torch.device(lm.device):  # tensors born on the model's device
        for group in _prefix_groups(prefix_ids, pairs_of, lm.batch_size, lm.max_batch_tokens):
            for i, value in _score_prefix_group(lm, prefix_ids, suffix_ids, cont_ids, owner_prefix,
                                                pairs_of, group, on_scored):
                scores[i] = value
    if on_scored is not None and n > sum(len(v) for v in pairs_of.values()):
        on_scored(n - sum(len(v) for v in pairs_of.values()))  # empty continuations: nothing to run
    return scores


def _prefix_groups(prefix_ids: list[list[int]], pairs_of: dict[int, list[int]], batch_size: int,
                   max_batch_tokens: int) -> list[list[int]]:
    """Prefixes in groups of similar length, each bounded in pairs and in padded tokens.

    A group carries several suffix batches' worth of pairs, so sorting its
    pairs by suffix length leaves little padding.
    """
    used = sorted(pairs_of, key=lambda p: (-len(prefix_ids[p]), p))
    most_pairs = 16 * batch_size
    groups: list[list[int]] = []
    current: list[int] = []
    width = n_pairs = 0
    for p in used:
        grown = max(width, len(prefix_ids[p])) * (len(current) + 1)
        if current and (n_pairs + len(pairs_of[p]) > most_pairs or grown > max_batch_tokens):
            groups.append(current)
            current, width, n_pairs = [], 0, 0
        current.append(p)
        width = max(width, len(prefix_ids[p]))
        n_pairs += len(pairs_of[p])
    if current:
        groups.append(current)
    return groups


def _score_prefix_group(
    lm: TransformersLM,
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
    layers, prefix_mask, last_logp = _prefix_cache(lm, [prefix_ids[p] for p in group], need_last)
    prefix_lengths = torch.tensor([len(prefix_ids[p]) for p in group])

    # Feed suffix + continuation minus its last token; position j (0-based in
    # the fed row) predicts continuation token j - len(suffix) + 1.
    fed = {i: suffix_ids[i] + cont_ids[i][:-1] for i in pairs}
    by_length = sorted(pairs, key=lambda i: (-len(fed[i]), i))
    for rows in _suffix_batches(by_length, fed, prefix_mask.shape[1], lm.batch_size, lm.max_batch_tokens):
        scores = torch.zeros(len(rows), dtype=torch.float64)
        slots = torch.tensor([slot_of[owner_prefix[i]] for i in rows])
        if need_last:
            for r, i in enumerate(rows):
                if not suffix_ids[i]:
                    scores[r] += last_logp[slots[r], cont_ids[i][0]].double()
        span = max(len(fed[i]) for i in rows)
        if span:
            scores += _score_suffixes(lm, rows, fed, suffix_ids, cont_ids, layers, slots,
                                      prefix_mask, prefix_lengths, span)
        if on_scored is not None:
            on_scored(len(rows))
        yield from zip(rows, scores.tolist())


def _prefix_cache(lm: TransformersLM, prefixes: list[list[int]], need_last: bool) -> tuple[list[Any], Any, Any]:
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
    step = max(1, min(2 * lm.batch_size, lm.max_batch_tokens // width))
    keys: list[list[Any]] = []
    values: list[list[Any]] = []
    masks, lasts = [], []
    for start in range(0, len(prefixes), step):
        ids, mask, positions = left_pad(prefixes[start : start + step], lm.pad_id)
        cache = DynamicCache(config=lm.model.config)
        out = forward(lm.model, ids, mask, positions, past_key_values=cache,
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


def _suffix_batches(rows: list[int], fed: dict[int, list[int]], prefix_width: int, batch_size: int,
                    max_batch_tokens: int) -> list[list[int]]:
    """Rows (longest first) in batches that compute about as many tokens as ``batch_size``
    whole prompts would: suffixes are short, and a CPU runs larger matrices faster."""
    batches: list[list[int]] = []
    current: list[int] = []
    span = 0
    for i in rows:
        wider = max(span, len(fed[i]))
        computed = wider * (len(current) + 1)
        attended = (prefix_width + wider) * (len(current) + 1)
        if current and (computed > batch_size * (prefix_width + wider)
                        or attended > max_batch_tokens):
            batches.append(current)
            current, span = [], 0
        current.append(i)
        span = max(span, len(fed[i]))
    if current:
        batches.append(current)
    return batches


def _score_suffixes(lm: TransformersLM, rows, fed, suffix_ids, cont_ids, layers, slots, prefix_mask,
                    prefix_lengths, span: int) -> Any:
    """Summed continuation log-probs of ``rows``, run as right-padded suffixes after their prefixes' cache."""
    import torch
    from transformers import DynamicCache

    n_rows = len(rows)
    keep = torch.zeros((n_rows, span), dtype=torch.bool)
    targets: list[int] = []
    owner: list[int] = []
    for r, i in enumerate(rows):
        first = len(suffix_ids[i]) - 1  # the position that predicts the first continuation token
        predicted = cont_ids[i][1:] if first < 0 else cont_ids[i]
        start = max(first, 0)
        keep[r, start : start + len(predicted)] = True
        targets += predicted
        owner += [r] * len(predicted)
    if not targets:
        return torch.zeros(n_rows, dtype=torch.float64)
    cache = DynamicCache(
        ddp_cache_data=[(k.index_select(0, slots), v.index_select(0, slots)) for k, v in layers],
        config=lm.model.config,
    )
    logits = run_after_cache(lm.model, cache, prefix_mask.index_select(0, slots),
                             prefix_lengths.index_select(0, slots), [fed[i] for i in rows], keep,
                             lm.pad_id).logits
    token_logp = log_probs_of(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets))
    sums = torch.zeros(n_rows, dtype=torch.float64)
    sums.index_add_(0, torch.tensor(owner), token_logp.double())
    return sums
