"""Choosing k demonstrations from a query's candidates.

Every selector answers one protocol, :class:`Selector`: ``n_candidates(k)`` says
how many retrieved candidates it wants, and ``select(view, k) -> Selection`` picks
from ``view`` (a :class:`CandidateView`: one query's retrieved candidates, best
first, and the retriever that found them). A selection holds k distinct corpus
rows, fewer only when fewer exist, and then says why in ``note``. ``select_many``
(batched) and ``prepare`` (query-independent set-up) are optional: the builder
falls back to ``select`` per query, and :class:`SelectorBase` provides both.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ricl.errors import ConfigError


@dataclass(frozen=True)
class CandidateView:
    """One query's candidates: corpus rows and retriever scores, best first."""

    query: str
    rows: np.ndarray
    scores: np.ndarray
    retriever: Any = field(repr=False)
    excluded: frozenset[int] = frozenset()
    corpus: Any = field(default=None, repr=False)

    @property
    def corpus_size(self) -> int:
        """Rows in the corpus being searched (``excluded`` rows included)."""
        return len(self.corpus if self.corpus is not None else self.retriever.corpus)


@dataclass(frozen=True)
class Selection:
    """What a selector chose: corpus rows in order of choice, and why it chose fewer
    than k (``note``), if it did."""

    rows: tuple[int, ...]
    note: str = ""


@runtime_checkable
class Selector(Protocol):
    """What ``PromptBuilder(selector=...)`` accepts besides a selector name.

    ``n_candidates(k)``: how many retrieved candidates to hand over per query (0: none,
    the selector draws from the whole corpus, like ``random``). ``select(view, k)``: a
    :class:`Selection`, or a plain sequence of corpus rows. Optional: ``name`` (shown
    in ``Prompt.selector``), ``select_many(views, k)`` for batched work and
    ``prepare(retriever)`` for query-independent set-up (subclass :class:`SelectorBase`
    to have both).
    """

    def n_candidates(self, k: int) -> int: ...

    def select(self, view: CandidateView, k: int) -> Selection: ...


def select_many(selector: Any, views: Sequence[CandidateView], k: int) -> list[Selection]:
    """``selector.select_many`` when it has one, else ``select`` per view; every
    result checked: distinct corpus rows, at most k of them."""
    batch = getattr(selector, "select_many", None)
    chosen = batch(views, k) if batch is not None else [selector.select(view, k) for view in views]
    chosen = list(chosen)
    if len(chosen) != len(views):
        raise ConfigError(f"selector {selector_name(selector)!r} returned {len(chosen)} selections "
                          f"for {len(views)} queries; return one per query.")
    return [_checked(selection, view, k, selector) for selection, view in zip(chosen, views)]


def _checked(selection: Any, view: CandidateView, k: int, selector: Any) -> Selection:
    if not isinstance(selection, Selection):
        if isinstance(selection, (str, bytes)) or not isinstance(selection, Iterable):
            raise ConfigError(f"selector {selector_name(selector)!r} returned "
                              f"{type(selection).__name__}; return a ricl.Selection or a list "
                              "of corpus rows.")
        selection = Selection(tuple(selection))
    rows = selection.rows
    bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, (int, np.integer))
           or not 0 <= r < view.corpus_size]
    if bad:
        raise ConfigError(f"selector {selector_name(selector)!r} chose {bad[:3]!r} for query "
                          f"{view.query[:40]!r}: rows must be integers in [0, {view.corpus_size}).")
    if len(set(rows)) != len(rows) or len(rows) > k:
        raise ConfigError(f"selector {selector_name(selector)!r} chose {list(rows)!r} for query "
                          f"{view.query[:40]!r}: at most k={k} distinct rows.")
    leaked = set(rows) & view.excluded
    if leaked:
        raise ConfigError(f"selector {selector_name(selector)!r} chose row(s) {sorted(leaked)} "
                          f"for query {view.query[:40]!r}: they are the query itself "
                          "(view.excluded); leave them out.")
    return Selection(tuple(int(r) for r in rows), selection.note)


def selector_name(selector: Any) -> str:
    return getattr(selector, "name", None) or type(selector).__name__


def _need(retriever: Any, method: str, selector: str, what: str) -> None:
    if not hasattr(retriever, method):
        raise ConfigError(f"selector {selector!r} needs {what}, which this retriever "
                          f"({getattr(retriever, 'kind', type(retriever).__name__)}) lacks: give "
                          f"it a {method}() method or choose another selector.")


class SelectorBase:
    name = "base"
    pool = 0  # candidates to retrieve beyond k; 0 means exactly k

    def n_candidates(self, k: int) -> int:
        return max(k, self.pool)

    def prepare(self, retriever: Any) -> None:
        """Called once after the retriever is indexed (query-independent work)."""

    def select_many(self, views: Sequence[CandidateView], k: int) -> list[Selection]:
        return [self.select(view, k) for view in views]

    def select(self, view: CandidateView, k: int) -> Selection:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


def _short_note(got: int, k: int, available: int) -> str:
    if got >= k:
        return ""
    return (f"only {got} of k={k} demonstrations: {available} candidates were available "
            "after excluding the query itself")


def _relevance(view: CandidateView) -> np.ndarray:
    """Retriever scores mapped to [0, 1]-ish: cosines stay, BM25 is divided by its max."""
    scores = np.asarray(view.scores, dtype=np.float64)
    if getattr(view.retriever, "kind", None) == "bm25":
        top = scores.max() if len(scores) else 0.0
        return scores / top if top > 0 else np.zeros_like(scores)
    return scores


class SimilaritySelector(SelectorBase):
    """The k candidates with the highest retriever score (Liu et al. 2022, KATE)."""

    name = "similarity"

    def select(self, view: CandidateView, k: int) -> Selection:
        rows = tuple(int(r) for r in view.rows[:k])
        return Selection(rows, _short_note(len(rows), k, len(view.rows)))


class RandomSelector(SelectorBase):
    """k demonstrations drawn uniformly from the whole corpus, seeded per query."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def n_candidates(self, k: int) -> int:
        return 0

    def select(self, view: CandidateView, k: int) -> Selection:
        digest = int(hashlib.sha1(view.query.encode("utf-8")).hexdigest()[:15], 16)
        rng = np.random.default_rng([self.seed, digest])
        skipped = sorted(r for r in view.excluded if 0 <= r < view.corpus_size)
        n_pool = view.corpus_size - len(skipped)
        take = min(k, n_pool)
        # Draw positions among the n_pool allowed rows, then map each position to its row
        # by stepping over the excluded ones: O(k·|excluded|), not O(corpus), per query.
        # Generator.choice draws the same positions for an int as for an array of that
        # length, so this picks exactly what choice(allowed_rows) would.
        positions = rng.choice(n_pool, size=take, replace=False) if take else ()
        rows = tuple(_nth_allowed(int(p), skipped) for p in positions)
        return Selection(rows, _short_note(take, k, n_pool))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed}


def _nth_allowed(position: int, skipped: Sequence[int]) -> int:
    """The row at ``position`` among 0, 1, 2, ... once the sorted ``skipped`` rows are removed."""
    row = position
    for excluded in skipped:
        if excluded > row:
            break
        row += 1
    return row


class SharingSelector(SelectorBase):
    """Similarity that gives up a little of it for demonstrations other queries of the
    batch use, so that their prompts share prefixes (``build_many(share_prefixes=True)``).

    Each query keeps its ``keep`` most similar candidates (they end its prompt). Its other
    k - keep demos come from the candidates whose relevance is within ``tolerance`` of its
    k-th best: the ones the most other queries of the batch chose (ties: the more
    relevant). Choices are revised query by query for ``rounds`` passes, so that queries
    gather on common demos. ``tolerance=0`` is the similarity selector. Batch-aware: it
    sees one ``select_many`` call (the whole batch under ``share_prefixes=True``, else a
    chunk of 256 queries), so ``build_many`` differs from ``build`` one query at a time;
    for that reason it is not among the selector names: pass the object.
    """

    name = "sharing"

    def __init__(self, tolerance: float = 0.05, keep: int = 2, n: int = 32, rounds: int = 3):
        if not tolerance >= 0:
            raise ConfigError(f"tolerance={tolerance!r}: the relevance a query may give up "
                              "for a shared demo must be >= 0.")
        for name, value, least in (("keep", keep, 0), ("n", n, 1), ("rounds", rounds, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ConfigError(f"{name}={value!r}: must be an integer >= {least}.")
        self.tolerance, self.keep, self.pool, self.rounds = float(tolerance), int(keep), int(n), int(rounds)

    def select(self, view: CandidateView, k: int) -> Selection:
        return self.select_many([view], k)[0]

    def select_many(self, views: Sequence[CandidateView], k: int) -> list[Selection]:
        chosen = [[int(r) for r in view.rows[:k]] for view in views]
        counts: dict[int, int] = {}
        for rows in chosen:
            for row in rows:
                counts[row] = counts.get(row, 0) + 1
        for _ in range(self.rounds if self.tolerance > 0 else 0):
            for q, view in enumerate(views):
                n = len(chosen[q])
                if n <= self.keep:
                    continue
                relevance = _relevance(view)
                for row in chosen[q]:  # the other queries' counts, not this one's
                    counts[row] -= 1
                floor = relevance[n - 1] - self.tolerance
                near = [i for i in range(self.keep, len(view.rows)) if relevance[i] >= floor]
                near.sort(key=lambda i: (-counts.get(int(view.rows[i]), 0), -relevance[i], i))
                chosen[q] = [int(r) for r in view.rows[:self.keep]] + \
                    [int(view.rows[i]) for i in near[: n - self.keep]]
                for row in chosen[q]:
                    counts[row] = counts.get(row, 0) + 1
        return [Selection(tuple(rows), _short_note(len(rows), k, len(view.rows)))
                for view, rows in zip(views, chosen)]

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "tolerance": self.tolerance, "keep": self.keep, "n": self.pool,
                "rounds": self.rounds}


class ClusterSelector(SelectorBase):
    """Cluster-level selection, for prompts that share prefixes: the queries of a batch
    are grouped by the candidates they have in common, and every query of a group takes
    the group's ``head`` demonstrations, then its own most similar ones.

    Groups are formed greedily: the demo in the most candidate lists (top ``n``) of the
    queries not yet grouped seeds a group of up to ``group_size`` of those queries (the
    ones that rank it highest); the group's head is the ``head`` demos most of its
    queries retrieved (ties: the higher summed relevance). Each query's selection is its
    ``k - head`` most similar candidates outside the head, then the head (a head demo a
    query did not retrieve is scored by the retriever, like any selection beyond the
    candidates; one that is the query itself is left out). A query that shares no
    candidate with another ungrouped query keeps its own k. Under
    ``build_many(share_prefixes=True)`` a group's prompts then open with the same demos.
    ``head=0`` is the similarity selector. What a head costs in accuracy is measured, not
    assumed (``eval.experiments.prefix_order``). Batch-aware like
    :class:`SharingSelector`: pass the object, not a name.
    """

    name = "cluster"

    def __init__(self, head: int = 4, group_size: int = 16, n: int = 32):
        for name, value, least in (("head", head, 0), ("group_size", group_size, 1), ("n", n, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ConfigError(f"{name}={value!r}: must be an integer >= {least}.")
        self.head, self.group_size, self.pool = int(head), int(group_size), int(n)

    def select(self, view: CandidateView, k: int) -> Selection:
        return self.select_many([view], k)[0]

    def select_many(self, views: Sequence[CandidateView], k: int) -> list[Selection]:
        head = min(self.head, k)
        lists = [[int(r) for r in view.rows[:self.pool]] for view in views]
        relevance = [_relevance(view)[:self.pool] for view in views]
        heads = self._heads(lists, relevance, head) if head else [[] for _ in views]
        selections = []
        for view, own, shared in zip(views, lists, heads):
            shared = [row for row in shared if row not in view.excluded]  # never the query itself
            taken = set(shared)
            mine = [row for row in own if row not in taken][:k - len(shared)]
            rows = tuple(mine + shared)
            selections.append(Selection(rows, _short_note(len(rows), k, len(view.rows))))
        return selections

    def _heads(self, lists: list[list[int]], relevance: list[np.ndarray], head: int) -> list[list[int]]:
        """Each query's group head (empty for a query in no group: it keeps its own)."""
        holders: dict[int, list[int]] = {}  # demo -> queries whose list holds it
        rank: list[dict[int, int]] = []
        for q, rows in enumerate(lists):
            rank.append({row: i for i, row in enumerate(rows)})
            for row in rows:
                holders.setdefault(row, []).append(q)
        count = {row: len(qs) for row, qs in holders.items()}  # ungrouped queries holding it
        queue = [(-n, row) for row, n in count.items()]  # a max-heap, entries refreshed lazily
        heapq.heapify(queue)
        grouped = [False] * len(lists)
        heads: list[list[int]] = [[] for _ in lists]
        while queue:
            negative, seed = heapq.heappop(queue)
            if -negative != count[seed]:  # stale: some of its queries were grouped since
                if count[seed]:
                    heapq.heappush(queue, (-count[seed], seed))
                continue
            if count[seed] < 2:
                break  # no demo left that two ungrouped queries share
            members = sorted((q for q in holders[seed] if not grouped[q]),
                             key=lambda q: (rank[q][seed], q))[:self.group_size]
            votes: dict[int, list[float]] = {}
            for q in members:
                for row, value in zip(lists[q], relevance[q]):
                    tally = votes.setdefault(row, [0, 0.0])
                    tally[0] += 1
                    tally[1] += float(value)
            chosen = sorted(votes, key=lambda row: (-votes[row][0], -votes[row][1], row))[:head]
            for q in members:
                grouped[q] = True
                heads[q] = chosen
                for row in lists[q]:
                    count[row] -= 1
        return heads

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "head": self.head, "group_size": self.group_size, "n": self.pool}


class MMRSelector(SelectorBase):
    """Maximal marginal relevance (Carbonell & Goldstein, 1998) over the top-n candidates:
    each step picks argmax  λ·relevance − (1−λ)·max similarity to what is already picked."""

    name = "mmr"

    def __init__(self, lambda_: float = 0.5, n: int = 50):
        if not 0.0 <= lambda_ <= 1.0:
            raise ConfigError(f"MMR lambda_={lambda_}: must lie in [0, 1] "
                              "(1 = pure relevance, 0 = pure diversity).")
        self.lambda_, self.pool = float(lambda_), int(n)

    def select(self, view: CandidateView, k: int) -> Selection:
        n = len(view.rows)
        if n == 0:
            return Selection((), _short_note(0, k, 0))
        relevance = _relevance(view)
        _need(view.retriever, "kernel", self.name, "candidate similarities")
        sims = view.retriever.kernel(view.rows)
        chosen = select_mmr(relevance, sims, min(k, n), self.lambda_)
        return Selection(tuple(int(view.rows[i]) for i in chosen), _short_note(len(chosen), k, n))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lambda_": self.lambda_, "n": self.pool}


def select_mmr(relevance: np.ndarray, sims: np.ndarray, k: int, lambda_: float) -> list[int]:
    n = len(relevance)
    chosen = [int(np.argmax(relevance))]
    max_sim = sims[chosen[0]].copy()
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    for _ in range(k - 1):
        gain = lambda_ * relevance - (1.0 - lambda_) * max_sim
        gain[taken] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        taken[pick] = True
        np.maximum(max_sim, sims[pick], out=max_sim)
    return chosen


DPP_SCALE = 0.1  # the DPP's default relevance scale, at inference and in CEIL training


class DPPSelector(SelectorBase):
    """Greedy MAP inference of a DPP (Chen et al., 2018) over the top-n candidates.

    Kernel L = diag(r)·S·diag(r) with S the candidates' cosine similarities and
    r = exp(s / (2·scale)) from retriever scores s (Ye et al., 2023), so
    log det L_Y = Σ s_i / scale + log det S_Y: a small ``scale`` favours relevance,
    a large one diversity. If the kernel becomes singular (near-duplicates) before k
    items, the rest are the most relevant remaining candidates, and the note says so.
    """

    name = "dpp"

    def __init__(self, scale: float = DPP_SCALE, n: int = 50):
        if not scale > 0:
            raise ConfigError(f"DPP scale={scale}: must be > 0.")
        self.scale, self.pool = float(scale), int(n)

    def select(self, view: CandidateView, k: int) -> Selection:
        n = len(view.rows)
        if n == 0:
            return Selection((), _short_note(0, k, 0))
        relevance = _relevance(view)
        _need(view.retriever, "kernel", self.name, "candidate similarities")
        kernel = dpp_kernel(relevance, view.retriever.kernel(view.rows), self.scale)
        chosen = select_dpp_greedy(kernel, min(k, n))
        note = ""
        if len(chosen) < min(k, n):
            rest = [i for i in np.argsort(-relevance, kind="stable") if i not in set(chosen)]
            note = (f"DPP kernel became singular after {len(chosen)} picks (near-duplicate "
                    "candidates); filled the rest by relevance")
            chosen += [int(i) for i in rest[: min(k, n) - len(chosen)]]
        note = note or _short_note(len(chosen), k, n)
        return Selection(tuple(int(view.rows[i]) for i in chosen), note)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "n": self.pool}


def dpp_kernel(relevance: np.ndarray, similarity: np.ndarray, scale: float) -> np.ndarray:
    """The conditional DPP kernel L = diag(r)·S·diag(r), r = exp((s - max s) / (2·scale)).

    ``relevance`` s: the candidates' retriever scores (cosines for a dense retriever);
    ``similarity`` S: their pairwise cosines. Subtracting max s scales every
    subset's det by the same factor (no change to which set wins) and keeps r <= 1.
    ``training.losses.CEILLoss`` trains an encoder for exactly this kernel.
    """
    quality = np.exp((relevance - relevance.max()) / (2.0 * scale))
    return quality[:, None] * similarity * quality[None, :]


def select_dpp_greedy(kernel: np.ndarray, k: int, eps: float = 1e-10) -> list[int]:
    """Fast greedy MAP for a DPP (Chen, Zhang & Zhou, NeurIPS 2018, Algorithm 1).

    Incremental Cholesky: each step is O(n·j), vectorised over the n candidates.
    Stops early when no remaining item adds volume (gain below ``eps``).
    """
    n = kernel.shape[0]
    cis = np.zeros((k, n))
    gains = np.copy(np.diag(kernel)).astype(np.float64)
    pick = int(np.argmax(gains))
    if gains[pick] < eps:
        return [pick]
    chosen = [pick]
    for j in range(k - 1):
        eis = (kernel[pick] - cis[:j, pick] @ cis[:j]) / np.sqrt(gains[pick])
        cis[j] = eis
        gains -= eis ** 2
        gains[chosen] = -np.inf
        pick = int(np.argmax(gains))
        if gains[pick] < eps:
            break
        chosen.append(pick)
    return chosen


class CoverageSelector(SelectorBase):
    """Greedy set selection that covers the query (Gupta et al., 2023, set-BSR).

    With a dense retriever: BERTScore-recall of the query's contextual token vectors
    against the union of the selected demos' token vectors (the embedder's own
    tokens), greedily maximised. With BM25: the same greedy cover over the query's
    terms, each weighted by its IDF. Once the query is covered, the remaining picks
    go by retriever score.
    """

    name = "coverage"

    def __init__(self, n: int = 30, cache_mb: float = 256):
        self.pool = int(n)
        self.cache_mb = cache_mb
        self._token_cache = _TokenCache(int(cache_mb * 2**20))

    def prepare(self, retriever: Any) -> None:
        self._token_cache = _TokenCache(int(self.cache_mb * 2**20))

    def select(self, view: CandidateView, k: int) -> Selection:
        return self.select_many([view], k)[0]

    def select_many(self, views: Sequence[CandidateView], k: int) -> list[Selection]:
        if not views:
            return []
        retriever = views[0].retriever
        if hasattr(retriever, "token_embeddings"):
            gains = self._token_recall(views, retriever)
        else:
            _need(retriever, "term_weights", self.name, "token embeddings or term weights")
            gains = [_term_cover(view, retriever) for view in views]
        out = []
        for view, matrix in zip(views, gains):
            n = len(view.rows)
            chosen = greedy_cover(matrix, _relevance(view), min(k, n)) if n else []
            out.append(Selection(tuple(int(view.rows[i]) for i in chosen),
                                 _short_note(len(chosen), k, n)))
        return out

    def _token_recall(self, views: Sequence[CandidateView], retriever: Any) -> list[np.ndarray]:
        tokens = self._token_cache.take({int(r) for view in views for r in view.rows})
        missing = sorted(r for r, vectors in tokens.items() if vectors is None)
        if missing:
            corpus = retriever.corpus
            vectors = retriever.token_embeddings([corpus[r].text for r in missing])
            tokens.update(zip(missing, vectors))
            self._token_cache.put(zip(missing, vectors))
        queries = retriever.token_embeddings([view.query for view in views])
        matrices = []
        for view, query_tokens in zip(views, queries):
            # match[c, t]: how well candidate c covers query token t (best cosine)
            match = np.stack([(query_tokens @ tokens[int(r)].T).max(axis=1)
                              for r in view.rows]) if len(view.rows) else np.zeros((0, 0))
            matrices.append(np.clip(match, 0.0, None))
        return matrices

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.pool}


class _TokenCache:
    """Token vectors of corpus rows, the least recently used dropped past ``max_bytes``:
    a long-running builder would otherwise keep the vectors of every row it ever saw."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # one builder may serve many threads

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, rows: set[int]) -> dict[int, np.ndarray | None]:
        """The cached vectors of ``rows`` (None where not cached), marked as just used."""
        found: dict[int, np.ndarray | None] = {}
        with self._lock:
            for row in rows:
                found[row] = self._rows.get(row)
                if found[row] is not None:
                    self._rows.move_to_end(row)
        return found

    def put(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        with self._lock:
            for row, vectors in items:
                old = self._rows.pop(row, None)
                self.nbytes += vectors.nbytes - (old.nbytes if old is not None else 0)
                self._rows[row] = vectors
            while self.nbytes > self.max_bytes and self._rows:
                _, dropped = self._rows.popitem(last=False)
                self.nbytes -= dropped.nbytes


def _term_cover(view: CandidateView, retriever: Any) -> np.ndarray:
    weights = retriever.term_weights(view.query)
    terms = list(weights)
    if not terms:
        return np.zeros((len(view.rows), 0))
    w = np.array([weights[t] for t in terms])
    has = np.array([[t in retriever.row_terms(r) for t in terms] for r in view.rows], dtype=float)
    return has * w[None, :]


def greedy_cover(match: np.ndarray, relevance: np.ndarray, k: int) -> list[int]:
    """Greedily pick rows of ``match`` (candidates × query units) maximising the summed
    per-unit maximum; ties and zero-gain steps fall back to relevance."""
    n = match.shape[0]
    covered = np.zeros(match.shape[1])
    taken = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    tiebreak = 1e-9 * (relevance - relevance.min())
    for _ in range(k):
        gain = np.maximum(match, covered[None, :]).sum(axis=1) - covered.sum() + tiebreak
        gain[taken] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        taken[pick] = True
        covered = np.maximum(covered, match[pick])
    return chosen


class VoteKSelector(SelectorBase):
    """Vote-k (Su et al., 2022): diverse, representative demonstrations, the same for
    every query.

    A kNN graph links each example to its ``neighbors`` most similar ones; each greedy
    step picks the example with the most votes from examples not yet covered, where a
    vote from v is discounted by ρ^(−number of picked examples among v's neighbours).
    This is the graph stage of vote-k; the paper's second, LM-confidence stage is not
    run. Corpora above ``max_pool`` are subsampled (seeded) before building the graph.
    """

    name = "votek"

    def __init__(self, neighbors: int = 15, rho: float = 10.0, max_pool: int = 10_000,
                 seed: int = 0):
        if neighbors <= 0 or rho <= 1.0:
            raise ConfigError("Vote-k needs neighbors > 0 and rho > 1.")
        self.neighbors, self.rho, self.max_pool, self.seed = neighbors, rho, max_pool, seed
        self._order: list[int] = []
        self._graph: sp.csr_matrix | None = None
        self._pool_rows: np.ndarray | None = None
        self._retriever = None

    def n_candidates(self, k: int) -> int:
        return 0

    def prepare(self, retriever: Any) -> None:
        self._retriever = retriever
        self._order, self._graph = [], None

    def _build_graph(self) -> None:
        size = len(self._retriever.corpus)
        rows = np.arange(size)
        if size > self.max_pool:
            rows = np.sort(np.random.default_rng(self.seed).choice(size, self.max_pool,
                                                                   replace=False))
        self._pool_rows = rows
        _need(self._retriever, "features", self.name, "corpus feature vectors")
        self._graph = knn_graph(self._retriever.features(rows), self.neighbors)

    def _extend(self, budget: int) -> None:
        if self._graph is None:
            self._build_graph()
        self._order = votek_order(self._graph, budget, self.rho)

    def select(self, view: CandidateView, k: int) -> Selection:
        if self._retriever is not view.retriever:
            self.prepare(view.retriever)
        want = k + len(view.excluded)
        if len(self._order) < min(want, len(self._retriever.corpus)):
            self._extend(min(want, self._graph_size()))
        rows = [int(self._pool_rows[i]) for i in self._order if
                int(self._pool_rows[i]) not in view.excluded][:k]
        return Selection(tuple(rows), _short_note(len(rows), k, len(self._order)))

    def _graph_size(self) -> int:
        if self._graph is None:
            self._build_graph()
        return self._graph.shape[0]

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "neighbors": self.neighbors, "rho": self.rho,
                "max_pool": self.max_pool, "seed": self.seed}


def knn_graph(features: Any, neighbors: int, chunk: int = 1024) -> sp.csr_matrix:
    """Directed kNN graph by cosine: A[v, u] = 1 when u is among v's nearest neighbours."""
    n = features.shape[0]
    m = min(neighbors, n - 1)
    if m <= 0:
        return sp.csr_matrix((n, n))
    cols = np.empty((n, m), dtype=np.int64)
    for start in range(0, n, chunk):
        block = features[start:start + chunk] @ features.T
        block = np.asarray(block.todense() if sp.issparse(block) else block, dtype=np.float32)
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        cols[start:start + len(block)] = np.argpartition(-block, m - 1, axis=1)[:, :m]
    data = np.ones(n * m, dtype=np.float64)
    return sp.csr_matrix((data, (np.repeat(np.arange(n), m), cols.ravel())), shape=(n, n))


def votek_order(graph: sp.csr_matrix, budget: int, rho: float) -> list[int]:
    n = graph.shape[0]
    graph_t = graph.T.tocsr()
    picked_near = np.zeros(n)  # per v: how many picked examples are among v's neighbours
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(min(budget, n)):
        weight = rho ** (-picked_near)
        weight[taken] = 0.0
        votes = graph_t @ weight
        votes[taken] = -np.inf
        pick = int(np.argmax(votes))
        order.append(pick)
        taken[pick] = True
        picked_near += graph_t[pick].toarray().ravel()
    return order


SELECTORS = {
    "similarity": SimilaritySelector,
    "mmr": MMRSelector,
    "dpp": DPPSelector,
    "coverage": CoverageSelector,
    "votek": VoteKSelector,
    "random": RandomSelector,
}
SELECTOR_NAMES = tuple(SELECTORS)
# Batch-aware selectors are passed as objects (build_many differs from build with them),
# but a builder saved with one loads with it again.
BATCH_AWARE = {"sharing": SharingSelector, "cluster": ClusterSelector}


def make_selector(spec: Any, *, shared_seed: int | None = None, **options: Any) -> Selector:
    """A selector by name (with ``options``) or a user's Selector object, as is.

    ``shared_seed`` (the builder's ``seed``) seeds a named selector that draws at random
    (random, votek); a different ``options["seed"]`` is a conflict, not silently
    overridden. A Selector object keeps its own seed.
    """
    seed = shared_seed
    if isinstance(spec, str):
        if spec not in SELECTORS:
            raise ConfigError(f"selector={spec!r} is unknown; choose one of {sorted(SELECTORS)} "
                              "or pass a Selector object.")
        cls = SELECTORS[spec]
        if seed is not None and "seed" in inspect.signature(cls).parameters:
            if options.get("seed", seed) != seed:
                raise ConfigError(f"seed={seed} and selector_options seed={options['seed']} "
                                  "disagree; give the seed once, as PromptBuilder(seed=...).")
            options["seed"] = seed
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(f"selector {spec!r} does not take these options: {exc}.") from None
    if hasattr(spec, "select") and hasattr(spec, "n_candidates"):
        if options:
            raise ConfigError(f"selector_options {sorted(options)} apply to selector names only; "
                              "configure your Selector object directly.")
        return spec
    raise ConfigError(f"selector={spec!r} is neither a selector name ({sorted(SELECTORS)}) "
                      "nor an object with select() and n_candidates().")
