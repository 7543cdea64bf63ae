"""Greedy generation for ``TransformersLM``: one batch of prompts, decoded token by token."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ricl.lm.batching import forward, left_pad
from ricl.lm.protocol import cut_at_stop


def generate_batch(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int,
                   stop: list[str], eos_ids: Collection[int], pad_id: int) -> list[str]:
    """Greedy decoding; a row leaves the batch (and the KV cache) as soon as it is done.

    A row is done at an end-of-sequence token or once its text holds a stop
    string; texts come back cut before the first stop string.
    """
    import torch
    from transformers import DynamicCache

    ids, mask, positions = left_pad(prompt_ids, pad_id)
    n_rows, width = ids.shape
    mask = mask if mask is not None else torch.ones((n_rows, width), dtype=torch.long)
    next_position = torch.tensor([len(p) for p in prompt_ids])
    cache = DynamicCache(config=model.config)
    logits = forward(model, ids, mask, positions, logits_to_keep=1, past_key_values=cache).logits
    active = list(range(n_rows))
    generated: list[list[int]] = [[] for _ in range(n_rows)]
    texts = [""] * n_rows
    for step in range(max_new_tokens):
        tokens = logits[:, -1].argmax(-1)
        still = []
        for r, token in enumerate(tokens.tolist()):
            row = active[r]
            if token in eos_ids:
                continue
            generated[row].append(token)
            texts[row] = tokenizer.decode(generated[row], skip_special_tokens=True)
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
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits
        next_position = next_position + 1
    return [cut_at_stop(text, stop) for text in texts]
