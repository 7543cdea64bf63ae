"""Scoring a batch of token sequences that share prefixes, each shared token computed once.

The batch's sequences, sorted, form a radix tree: a node is a run of tokens that the
same sequences hold at the same positions, so its keys and values are the same for
all of them (a causal model's state at a position depends only on the tokens up to
it). A node runs after its parent: its tokens against its parent's keys and values,
gathered into a KV cache rather than recomputed, parents left-padded and segments
right-padded so that each row's valid keys stay contiguous; its own keys and values
are kept for its children. Shared nodes run level by level; then all leaves (each
prompt's own tail) run in one pool, sorted by length, so that they batch as whole
prompts would. A shared node that saves fewer than ``MIN_SAVED`` tokens (a few words
prompts happen to share) is merged into its children: one more level would cost more.
Logits are computed only where a score is read. The tree is built per group (a
contiguous run of the sorted batch, bounded in tokens so that the kept keys and
values stay small); what it computes is, up to those merges and group edges, the sum
over prompts of the tokens not shared with an earlier prompt of the sorted batch
(``ricl.prefix_sharing``).

This is the general form of the two-level reuse in ``training.prefix_cache`` (one
prefix per pair, then the pair's suffix), which runs its suffixes with
:func:`run_after_cache` too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ricl.lm.batching import forward

Read = tuple[int, int]  # (sequence index, position whose next-token distribution is read)


@dataclass(eq=False)
class _Node:
    start: int  # position of the node's first token
    end: int  # one past its last
    parent: _Node | None
    seq: int  # a sequence that holds the node's tokens at [start, end)
    children: list[_Node] = field(default_factory=list)
    reads: dict[int, list[int]] = field(default_factory=dict)  # position -> read indices


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def radix_tree(sequences: Sequence[Sequence[int]], order: Sequence[int]) -> tuple[_Node, dict[int, _Node]]:
    """The radix tree of ``sequences[i]`` for ``i`` in ``order`` (non-empty, distinct,
    sorted); returns the root (no tokens) and each sequence's last node."""
    root = _Node(0, 0, None, -1)
    last: dict[int, _Node] = {}
    path = [root]
    previous: Sequence[int] = ()
    for i in order:
        tokens = sequences[i]
        shared = _lcp(previous, tokens)
        while len(path) > 1 and path[-1].start >= shared:
            path.pop()
        top = path[-1]
        if top.end > shared:  # the new sequence leaves inside ``top``: split it there
            middle = _Node(top.start, shared, top.parent, top.seq, [top])
            siblings = top.parent.children
            siblings[siblings.index(top)] = middle
            top.start, top.parent = shared, middle
            path[-1] = middle
        leaf = _Node(shared, len(tokens), path[-1], i)
        path[-1].children.append(leaf)
        path.append(leaf)
        last[i] = leaf
        previous = tokens
    return root, last


MIN_SAVED = 16
"""A shared node that saves fewer tokens than this, (children - 1) x its length, is
merged into its children: a few words that prompts happen to share are cheaper to
recompute than to run as one more level."""


def merge_small(root: _Node, min_saved: int = MIN_SAVED) -> None:
    """Merge, top down, every shared node that saves fewer than ``min_saved`` tokens and
    ends no sequence into its children (each child then starts where it started)."""
    stack = list(root.children)
    while stack:
        node = stack.pop()
        if not node.children:
            continue
        if not node.reads and (len(node.children) - 1) * (node.end - node.start) < min_saved:
            siblings = node.parent.children
            at = siblings.index(node)
            siblings[at:at + 1] = node.children
            for child in node.children:
                child.start, child.parent = node.start, node.parent
            stack += node.children
        else:
            stack += node.children


def sliding_window(model: Any) -> int | None:
    """The attention window of a model with sliding-window layers (Gemma 3), else None."""
    config = model.config
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if any("sliding" in str(t) for t in getattr(config, "layer_types", None) or ()):
        return getattr(config, "sliding_window", None)
    return None


def cache_from_rows(model: Any, rows: Sequence[Sequence[tuple[Any, Any]]]) -> tuple[Any, Any, Any]:
    """A ``DynamicCache`` holding, row by row, the given per-layer (keys, values) (each
    (heads, length, dim)), left-padded to one width; with its attention mask and each
    row's length."""
    import torch
    from transformers import DynamicCache

    lengths = torch.tensor([row[0][0].shape[1] for row in rows])
    width = int(lengths.max())
    layers = []
    for layer in range(len(rows[0])):
        keys, values = rows[0][layer]
        k = keys.new_zeros((len(rows), keys.shape[0], width, keys.shape[2]))
        v = values.new_zeros((len(rows), values.shape[0], width, values.shape[2]))
        for r, row in enumerate(rows):
            n = row[layer][0].shape[1]
            k[r, :, width - n:] = row[layer][0]
            v[r, :, width - n:] = row[layer][1]
        layers.append((k, v))
    mask = (torch.arange(width)[None, :] >= (width - lengths)[:, None]).long()
    return DynamicCache(ddp_cache_data=layers, config=model.config), mask, lengths


def run_after_cache(model: Any, cache: Any, cache_mask: Any, cache_lengths: Any,
                    segments: Sequence[Sequence[int]], keep: Any, pad_id: int) -> Any:
    """``segments`` (right-padded) run after each row's cached prefix (left-padded; a
    ``cache_mask`` of None: the cache is empty, the segments start the sequences), with
    logits only where ``keep`` is true. Right padding: a pad is seen by no real token
    (causal), and what pads compute is never read."""
    import torch

    span = max(len(s) for s in segments)
    ids = torch.full((len(segments), span), pad_id, dtype=torch.long)
    mask = torch.zeros((len(segments), span), dtype=torch.long)
    for r, tokens in enumerate(segments):
        ids[r, : len(tokens)] = torch.tensor(tokens)
        mask[r, : len(tokens)] = 1
    if cache_mask is None:
        positions = torch.arange(span)[None, :].expand(len(segments), span)
    else:
        positions = cache_lengths[:, None] + torch.arange(span)[None, :]
        mask = torch.cat([cache_mask, mask], dim=1)
    return forward(model, ids, mask, positions, logits_to_keep=keep, past_key_values=cache)


def score_tree(model: Any, sequences: Sequence[Sequence[int]], reads: Sequence[Read],
               targets: Sequence[Sequence[int]], pad_id: int, batch_size: int,
               max_batch_tokens: int) -> Any:
    """Log-probs of the tokens ``targets[j]`` in the next-token distribution at
    ``reads[j] = (sequence, position)``, float64 of shape (reads, longest targets), zero
    past a read's own targets: every sequence run through ``model`` with its prefixes
    shared (see the module). Sequences must be non-empty; identical ones run once.
    """
    import torch

    distinct: dict[tuple[int, ...], int] = {}
    unique_of = [distinct.setdefault(tuple(s), len(distinct)) for s in sequences]
    unique = list(distinct)
    reads_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for j, (s, position) in enumerate(reads):
        reads_of[unique_of[s]].append((position, j))
    out = torch.zeros((len(reads), max((len(t) for t in targets), default=0)), dtype=torch.float64)
    order = sorted(range(len(unique)), key=lambda i: unique[i])
    for group in _groups(order, unique, 2 * max_batch_tokens):
        root, last = radix_tree(unique, group)
        for u in group:
            for position, j in reads_of[u]:
                node = last[u]
                while node.start > position:
                    node = node.parent
                node.reads.setdefault(position, []).append(j)
        run = _Run(model, unique, targets, out, pad_id, batch_size, max_batch_tokens)
        run.levels(root)
    return out


def _groups(order: list[int], sequences: list[tuple[int, ...]], max_tokens: int) -> list[list[int]]:
    """The sorted sequences in contiguous runs of at most ``max_tokens`` tokens (one at least)."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        if current and total + len(sequences[i]) > max_tokens:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += len(sequences[i])
    if current:
        groups.append(current)
    return groups


class _Run:
    """One group's tree: its shared nodes level by level, then all its leaves (see the module)."""

    def __init__(self, model, sequences, targets, out, pad_id, batch_size, max_batch_tokens):
        self.model, self.sequences, self.targets, self.out = model, sequences, targets, out
        self.pad_id, self.batch_size, self.max_batch_tokens = pad_id, batch_size, max_batch_tokens
        self.kv: dict[int, list[tuple[Any, Any]]] = {}  # id(node) -> keys/values of [0, end)

    def levels(self, root: _Node) -> None:
        """Shared nodes level by level (a node after its parent), then the leaves in one
        pool, so that leaves of all depths batch by length as whole prompts would."""
        merge_small(root)
        level, leaves = [], []
        for node in root.children:
            (level if node.children else leaves).append(node)
        while level:
            for batch in self._batches(level):
                self._run(batch)
            children = [child for node in level for child in node.children]
            level = [child for child in children if child.children]
            leaves += [child for child in children if not child.children]
        for batch in self._batches(leaves):
            self._run(batch)
        self.kv.clear()

    def _batches(self, nodes: list[_Node]) -> list[list[_Node]]:
        """Nodes by segment length, longest first, those with a parent apart from those
        without; each batch bounded in computed (padded) tokens and in tokens attended
        to (cache plus segment)."""
        ordered = sorted(nodes, key=lambda n: (n.start == 0, -(n.end - n.start), -n.start))
        batches: list[list[_Node]] = []
        current: list[_Node] = []
        span = width = 0
        for node in ordered:
            grown_span, grown_width = max(span, node.end - node.start), max(width, node.start)
            rows = len(current) + 1
            if current and ((node.start == 0) != (current[0].start == 0) or rows > 4 * self.batch_size
                            or rows * grown_span > self.max_batch_tokens
                            or rows * (grown_width + grown_span) > self.max_batch_tokens):
                batches.append(current)
                current, grown_span, grown_width = [], node.end - node.start, node.start
            current.append(node)
            span, width = grown_span, grown_width
        if current:
            batches.append(current)
        return batches

    def _run(self, batch: list[_Node]) -> None:
        import torch
        from transformers import DynamicCache

        if batch[0].start == 0:  # the first level: nothing before it
            cache, cache_mask, lengths = DynamicCache(config=self.model.config), None, None
            width = 0
        else:
            cache, cache_mask, lengths = cache_from_rows(self.model, [self.kv[id(n.parent)] for n in batch])
            width = cache_mask.shape[1]
        segments = [self.sequences[n.seq][n.start:n.end] for n in batch]
        span = max(len(s) for s in segments)
        keep = torch.zeros((len(batch), span), dtype=torch.bool)
        for r, node in enumerate(batch):
            for position in node.reads:
                keep[r, position - node.start] = True
        result = run_after_cache(self.model, cache, cache_mask, lengths, segments, keep, self.pad_id)
        if bool(keep.any()):
            logp = result.logits.reshape(-1, result.logits.shape[-1]).float().log_softmax(-1)
            row = 0
            for node in batch:
                for position in sorted(node.reads):
                    for j in node.reads[position]:
                        wanted = self.targets[j]
                        self.out[j, : len(wanted)] = logp[row, list(wanted)].double()
                    row += 1
        for r, node in enumerate(batch):
            if node.children:
                first = width - node.start
                self.kv[id(node)] = [(layer.keys[r, :, first:width + node.end - node.start],
                                      layer.values[r, :, first:width + node.end - node.start])
                                     for layer in cache.layers]
