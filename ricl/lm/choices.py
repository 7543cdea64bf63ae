"""Label scoring: every choice after every prompt of a batch, the prompt computed once.

Single-token labels are all read from one forward pass per prompt, at one
logit row. Multi-token labels are scored from the prompt's KV cache in one more
pass, all labels at once, each attending to the prompt and to its own earlier
tokens only (a block-diagonal "tree" mask, as in speculative decoding), so the
prompt is neither recomputed nor copied per label.
"""

from __future__ import annotations

from typing import Any

from ricl.lm.batching import forward, left_pad, log_probs_of


def score_single_token(model: Any, prompt_ids: list[list[int]], choice_ids: list[list[int]],
                       pad_id: int) -> Any:
    """All single-token choices read from the last position's distribution: one pass, one logit row."""
    ids, mask, positions = left_pad(prompt_ids, pad_id)
    logits = forward(model, ids, mask, positions, logits_to_keep=1).logits[:, -1]
    log_probs = logits.float().log_softmax(-1)
    return log_probs[:, [c[0] for c in choice_ids]].double()


def score_from_cache(model: Any, prompt_ids: list[list[int]], choice_ids: list[list[int]],
                     pad_id: int) -> Any:
    """Multi-token choices: the prompt once, then every choice from its KV cache in one pass.

    The second pass lays the choices side by side after the prompt, choice
    ``j`` in slots ``j*S .. j*S+S-1``; each slot sees the prompt's real
    tokens and the earlier slots of its own choice, and is positioned as if
    it directly followed the prompt.
    """
    import torch
    from transformers import DynamicCache

    ids, mask, positions = left_pad(prompt_ids, pad_id)
    n_rows, width = ids.shape
    cache = DynamicCache(config=model.config)
    out = forward(model, ids, mask, positions, logits_to_keep=1, past_key_values=cache)
    first = out.logits[:, -1].float().log_softmax(-1)[:, [c[0] for c in choice_ids]].double()

    # Choice j feeds its tokens but the last; slot t of it predicts token t+1.
    n_choices = len(choice_ids)
    slots = max(len(c) for c in choice_ids) - 1
    fed = torch.full((n_choices, slots), pad_id, dtype=torch.long)
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
    token_logp = log_probs_of(out.logits.reshape(-1, out.logits.shape[-1]), targets)
    # Rows of `keep` are identical, so the kept tokens reshape to (rows, tokens per row).
    per_row = token_logp.reshape(n_rows, -1).double()
    to_choice = torch.nn.functional.one_hot(choice_of_slot[real.reshape(-1)], n_choices).double()
    return first + per_row @ to_choice
