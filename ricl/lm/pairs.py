"""Pair scoring: ``log p(continuation | prompt)`` for a batch of joined prompt+continuation rows.

Logits are computed only at the positions that predict a continuation token,
so a long prompt with a short continuation costs one vocabulary projection per
continuation token, not per prompt token.
"""

from __future__ import annotations

from typing import Any

from ricl.lm.batching import forward, left_pad, log_probs_of


def score_continuations(model: Any, sequences: list[list[int]], n_continuation: list[int],
                        pad_id: int) -> Any:
    """Summed log-probs of the last ``n_continuation[r]`` tokens of each row ``sequences[r]``,
    float64 of shape (rows,). Each row is ``prompt + continuation`` token ids."""
    import torch

    ids, mask, positions = left_pad(sequences, pad_id)
    width = ids.shape[1]
    # Read logits only where the next token is a continuation token: in a
    # left-padded row those are the n_cont positions before the last one.
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    owner = []
    for r, m in enumerate(n_continuation):
        keep[r, width - 1 - m : width - 1] = True
        owner += [r] * m
    targets = ids[:, 1:][keep[:, :-1]]
    logits = forward(model, ids, mask, positions, logits_to_keep=keep).logits
    token_logp = log_probs_of(logits.reshape(-1, logits.shape[-1]), targets)
    sums = torch.zeros(len(sequences), dtype=torch.float64)
    sums.index_add_(0, torch.tensor(owner), token_logp.double())
    return sums
