"""How ``TransformersLM`` runs token ids through its model: length-sorted batches, left padding,
one forward pass, and the log-probs of the tokens that were read.

On a CPU the LM dominates every run, so every batch should carry little
padding: prompts are sorted by length, and a batch is bounded both in rows and
in padded tokens. Results go back in the caller's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def length_batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[np.ndarray]:
    """Row indices grouped longest first, so each batch holds prompts of similar length.

    A batch holds at most ``batch_size`` rows and ``max_batch_tokens`` padded
    tokens. Longest first also means a batch too large for memory fails at
    once, not at the end.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    width = 0
    for i in order:
        grown = max(width, lengths[i]) * (len(current) + 1)
        if current and (len(current) == batch_size or grown > max_batch_tokens):
            batches.append(np.array(current))
            current, width = [], 0
        current.append(int(i))
        width = max(width, lengths[i])
    if current:
        batches.append(np.array(current))
    return batches


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """Input ids, attention mask and position ids, padded on the left.

    Mask and positions are ``None`` when no row needs padding, which lets
    the model take its plain causal path.
    """
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s) :] = 1
    if bool(mask.all()):
        return ids, None, None
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def forward(model: Any, ids: Any, mask: Any, positions: Any, *, logits_to_keep: Any,
            past_key_values: Any = None) -> Any:
    """One pass of ``model``; the vocabulary projection runs only where ``logits_to_keep`` says,
    since it is a fifth of SmolLM2-135M's FLOPs and most positions are never read."""
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=past_key_values,
        use_cache=past_key_values is not None,
        logits_to_keep=logits_to_keep,
    )


def log_probs_of(logits: Any, targets: Any) -> Any:
    """log_softmax(logits)[i, targets[i]] for each row i, in float32."""
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
