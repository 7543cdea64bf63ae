"""Ordering demonstrations and fitting them into a token budget."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from ricl.errors import BudgetError, ConfigError

ORDERS = ("similar-last", "similar-first", "random", "selection")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ConfigError(f"order={order!r} is unknown; choose one of {ORDERS}.")
    return order


def order_demos(scores: Sequence[float | None], order: str, query: str, seed: int = 0) -> list[int]:
    """Positions (first to last in the prompt) of demos given in selection order.

    ``similar-last`` puts the highest-scoring demo right before the query, where a
    small model uses it most (Liu et al., 2022; see BASELINES.md: TREC 0.805 vs 0.665).
    Demos without a score keep their selection order, before the scored ones.
    """
    n = len(scores)
    if order == "selection":
        return list(range(n))
    if order == "random":
        digest = int(hashlib.sha1(query.encode("utf-8")).hexdigest()[:15], 16)
        return [int(i) for i in np.random.default_rng([seed, digest]).permutation(n)]
    keyed = [(-np.inf if s is None else float(s), i) for i, s in enumerate(scores)]
    # stable: ties keep selection order (earlier pick = more important)
    by_score = [i for _, i in sorted(keyed, key=lambda item: (-item[0], item[1]))]
    return by_score[::-1] if order == "similar-last" else by_score


def fit_budget(demo_tokens: Sequence[int], relevance: Sequence[float], fixed_tokens: int,
               separator_tokens: int, max_tokens: int | None) -> tuple[list[int], list[int]]:
    """Which demos to keep so the estimated total fits; drops the least relevant first.

    Returns (kept, dropped) as indices into the inputs. Raises BudgetError when the
    query and instructions alone exceed the budget.
    """
    if max_tokens is None:
        return list(range(len(demo_tokens))), []
    if fixed_tokens > max_tokens:
        raise BudgetError(f"The query alone takes {fixed_tokens} tokens, over max_tokens="
                          f"{max_tokens}. Raise max_tokens or shorten the query/instructions.")
    kept = list(range(len(demo_tokens)))
    dropped: list[int] = []
    total = fixed_tokens + sum(demo_tokens[i] + separator_tokens for i in kept)
    by_relevance = sorted(kept, key=lambda i: (relevance[i], -i))  # least relevant first
    for i in by_relevance:
        if total <= max_tokens:
            break
        kept.remove(i)
        dropped.append(i)
        total -= demo_tokens[i] + separator_tokens
    return kept, dropped


TokenCounter = Callable[[Sequence[str]], list[int]]
