"""Prompts of one batch that share token prefixes, so an LM (or a server's prefix cache)
computes each shared token once.

Retrieved demonstrations differ from query to query, but a batch reuses many of them:
with dense top-8 over a 5,000-demo pool, about a third of TREC's prompt slots hold a
demo that another query of a 200-query batch also uses, and the overlap grows with the
batch. A causal LM computes the same keys and values for the same token prefix, so two
prompts that begin with the same tokens need those tokens computed once. Three pieces:

- ``shared_heads`` / ``shared_first_positions``: the order of each prompt's demos. Demos
  that other prompts of the batch also use come first, chosen as a greedy trie over the
  batch (the demo that saves the most tokens opens the prompts that hold it, then the
  same within each branch); the rest follow in the builder's own order, and the last
  ``similar_last`` positions always keep that order (by default the most similar demo
  nearest the query).
- ``trie_order``: the batch sorted by token ids, the depth-first order of their trie, so
  that each prompt follows the earlier prompt it shares most with.
- ``shared_prefix_tokens`` / ``PrefixSharing``: per prompt, in batch order, the longest
  token prefix it shares with any earlier prompt: what a prefix cache (vLLM's automatic
  prefix caching, SGLang's radix cache, ``TransformersLM(share_prefixes=...)``) can skip.
  Shared means the same token ids, counted with the target LM's tokenizer: two texts
  that start alike but tokenize differently at a boundary share only up to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ricl.errors import ConfigError

SIMILAR_LAST = 2
"""Demos at the end of a prompt that keep the builder's order under ``share_prefixes``
(chosen from the study in ``eval/experiments/prefix_order.py``)."""


def check_similar_last(similar_last: int) -> int:
    if isinstance(similar_last, bool) or not isinstance(similar_last, int) or similar_last < 0:
        raise ConfigError(f"similar_last={similar_last!r}: the number of demos that keep the "
                          "builder's order at the end of a prompt must be an integer >= 0.")
    return similar_last


def shared_heads(demos: Sequence[Collection[int]], tokens: Callable[[int], int]) -> list[list[int]]:
    """For each prompt, the demos (corpus rows, out of ``demos[i]``) that open it, in order,
    chosen so that the batch's prompts share long prefixes: a greedy trie.

    Among prompts whose openings are equal so far, the demo that saves the most tokens if
    it comes next, (prompts holding it - 1) x its ``tokens``, opens the next position of
    every prompt that holds it (ties: the lower row); the others try the next best; a
    demo that only one prompt of its branch holds opens nothing. It refines FP-growth's
    order (Han, Pei and Yin 2000; every transaction sorted by one global item frequency,
    so that transactions share tree prefixes) by counting within each branch.
    """
    heads: list[list[int]] = [[] for _ in demos]
    left = [set(d) for d in demos]
    stack = [(list(range(len(demos))), Counter(row for held in left for row in held))]
    while stack:
        group, counts = stack.pop()
        best, gain = -1, 0
        for row, count in counts.items():
            saved = (count - 1) * tokens(row)
            if count >= 2 and (saved > gain or (saved == gain and row < best)):
                best, gain = row, saved
        if best < 0:
            continue
        holding = [i for i in group if best in left[i]]
        rest = [i for i in group if best not in left[i]]
        others = counts.copy()
        for i in holding:
            others.subtract(left[i])
            heads[i].append(best)
            left[i].discard(best)
        stack.append((rest, +others))
        stack.append((holding, Counter(row for i in holding for row in left[i])))
    return heads


def shared_first_positions(rows: Sequence[int], base: Sequence[int], head: Sequence[int],
                           similar_last: int) -> list[int]:
    """One prompt's demo positions (indices into ``rows``, first to last in the prompt).

    ``base`` is the builder's own order of the same demos (``placement.order_demos``);
    its last ``similar_last`` positions stay last, in that order. The others that are in
    ``head`` (the prompt's opening demos, from :func:`shared_heads`) come first, in that
    order, and the rest keep their ``base`` order after them.
    """
    cut = max(len(base) - similar_last, 0)
    free, tail = list(base[:cut]), list(base[cut:])
    rank = {row: r for r, row in enumerate(head)}
    opening = sorted((i for i in free if rows[i] in rank), key=lambda i: rank[rows[i]])
    chosen = set(opening)
    return opening + [i for i in free if i not in chosen] + tail


def trie_order(sequences: Sequence[Sequence[int]]) -> list[int]:
    """Indices of ``sequences`` sorted by their token ids: the depth-first order of their
    trie, in which each sequence's longest common prefix with any earlier one is its
    common prefix with the one just before it. Ties keep the input order."""
    return sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))


def shared_prefix_tokens(sequences: Sequence[Sequence[int]],
                         order: Sequence[int] | None = None) -> list[int]:
    """For each sequence (indexed as given), the length of the longest prefix it shares with
    any sequence before it in ``order`` (default: as given). A trie over token ids, so
    the work is linear in the tokens."""
    order = range(len(sequences)) if order is None else order
    if sorted(order) != list(range(len(sequences))):
        raise ConfigError(f"order must list each of the {len(sequences)} sequences once.")
    root: dict = {}
    shared = [0] * len(sequences)
    for i in order:
        node, depth = root, 0
        tokens = sequences[i]
        while depth < len(tokens) and tokens[depth] in node:  # the part seen before
            node = node[tokens[depth]]
            depth += 1
        shared[i] = depth
        for token in tokens[depth:]:  # the rest, new
            node = node.setdefault(token, {})
    return shared


@dataclass(frozen=True)
class PrefixSharing:
    """How much of a batch of prompts a prefix cache can skip, run in ``order``.

    ``order``: the batch's prompts (indices into the caller's list) in the order to run
    them, the trie order. ``total_tokens``: prompt tokens in the batch.
    ``shared_tokens``: tokens each prompt shares, as a prefix, with a prompt run before
    it (what a prefix cache skips). ``computed_tokens`` = total - shared.
    """

    order: tuple[int, ...]
    total_tokens: int
    shared_tokens: int

    @property
    def computed_tokens(self) -> int:
        return self.total_tokens - self.shared_tokens

    @property
    def ratio(self) -> float:
        """Shared tokens / total tokens: the fraction a prefix cache skips."""
        return self.shared_tokens / self.total_tokens if self.total_tokens else 0.0

    @property
    def speedup(self) -> float:
        """Total / computed tokens: how many times fewer tokens the LM computes."""
        return self.total_tokens / self.computed_tokens if self.computed_tokens else 1.0

    def __str__(self) -> str:
        return (f"{len(self.order)} prompts, {self.total_tokens} tokens, {self.shared_tokens} "
                f"in shared prefixes ({self.ratio:.1%}); {self.computed_tokens} computed "
                f"({self.speedup:.2f}x fewer)")


def prefix_sharing(sequences: Sequence[Sequence[int]]) -> PrefixSharing:
    """The trie order of a batch of token sequences and what running it in that order
    shares (see :class:`PrefixSharing`)."""
    order = trie_order(sequences)
    shared = shared_prefix_tokens(sequences, order)
    return PrefixSharing(tuple(order), sum(len(s) for s in sequences), sum(shared))
