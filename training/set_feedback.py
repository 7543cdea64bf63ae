r"""Set-level LM feedback (CEIL): how much the LM likes whole sets of demonstrations.

For each training query ``x`` with answer ``y``, a retriever proposes its top ``n``
candidates (never ``x`` itself); ``n_subsets`` distinct subsets of ``k`` of them
are drawn at random, seeded per query, and the LM scores each by
``log p(y | subset, x)``: the signal CEIL trains its DPP on (Ye et al. 2023,
"Compositional Exemplars for In-context Learning", Sec. 3.3: subsets sampled from
the top candidates of a first-stage retriever, each scored by the LM).

Within a subset the demos are shown in ascending retriever score, the most relevant
last. That is the order ricl's default placement (``order="similar-last"``) gives a
selection at inference, so the LM judges each set as it will later be shown; and
since a DPP scores a set, not a sequence, one fixed order means that two subsets of
a query differ only in which demos they hold, not in how they are arranged.

The file is JSONL, its own kind (``training.feedback.FILE_KINDS``): a header line
``{"__set_feedback__": {...settings}}``, then one line per query::

    {"query_id": "...", "query": "<input text>", "answer": "...",
     "candidates": ["id", ...], "retriever_scores": [...],
     "subsets": [[3, 1, 0, ...], ...], "lm_scores": [-2.1, ...]}

``candidates`` keep retrieval order (best first); ``subsets[s]`` lists indices into
``candidates`` in the order the demos were shown, and ``lm_scores[s]`` is its score.
Writing, resuming and the refusals are those of ``training.feedback``: a killed run
loses at most the chunk in flight; resuming a file of the other kind, or one scored
with other settings, is a typed error.

Speed: subsets of one query share the query, not a prefix; what they can share is
their leading demos. Each prompt is cut after the longest run of leading demos it
shares with another prompt of the chunk (at least its first demo), there, as in
``training.feedback``, after the next demo's literal head (``"...\n\nQuestion:"``),
so that the token ids equal those of the whole prompt, and each distinct prefix's KV
cache is computed once (``training.prefix_cache``). With the least relevant demo
first, a query's subsets often open with the same few low-ranked candidates.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ricl.data import Corpus, Example
from ricl.errors import ConfigError
from ricl.lm import TransformersLM
from ricl.template import Template
from training.feedback import (FeedbackError, FeedbackFile, FeedbackKind, _retrieve, _score_plainly,
                               parse_line, prepare_scoring, query_fields, query_head,
                               read_feedback_file, score_in_chunks, scoring_settings)
from training.prefix_cache import score_shared_prefixes

log = logging.getLogger(__name__)

SET_FEEDBACK_VERSION = 1
ORDER = "ascending retriever score (most relevant last)"


@dataclass(frozen=True)
class SetFeedbackRecord:
    """The LM's verdict on sampled subsets of one query's candidates."""

    query_id: str
    query: str
    answer: str
    candidates: tuple[str, ...]
    retriever_scores: tuple[float, ...]
    subsets: tuple[tuple[int, ...], ...]
    lm_scores: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**query_fields(self), "subsets": [list(subset) for subset in self.subsets],
                "lm_scores": [round(float(s), 6) for s in self.lm_scores]}

    @classmethod
    def from_dict(cls, line: Mapping[str, Any], where: str) -> SetFeedbackRecord:
        record = parse_line(lambda: cls(
            query_id=str(line["query_id"]), query=str(line["query"]), answer=line["answer"],
            candidates=tuple(str(c) for c in line["candidates"]),
            retriever_scores=tuple(float(s) for s in line["retriever_scores"]),
            subsets=tuple(tuple(int(i) for i in subset) for subset in line["subsets"]),
            lm_scores=tuple(float(s) for s in line["lm_scores"]),
        ), where, "training.score_sets")
        problem = record._problem()
        if problem:
            raise FeedbackError(f"{where}: query {record.query_id!r} {problem}.")
        return record

    def _problem(self) -> str:
        if len(self.candidates) != len(self.retriever_scores):
            return (f"has {len(self.candidates)} candidates but {len(self.retriever_scores)} "
                    "retriever scores")
        if not self.subsets or len(self.subsets) != len(self.lm_scores):
            return f"has {len(self.subsets)} subsets and {len(self.lm_scores)} LM scores"
        if len({len(subset) for subset in self.subsets}) != 1:
            return "has subsets of different sizes"
        for subset in self.subsets:
            if len(set(subset)) != len(subset) or not all(0 <= i < len(self.candidates) for i in subset):
                return f"has the subset {list(subset)}, not distinct indices into its candidates"
        if not all(np.isfinite(self.lm_scores)):
            return "has a non-finite LM score"
        return ""


SETS = FeedbackKind("__set_feedback__", SetFeedbackRecord, "training.score_sets")


def read_set_feedback(path: str | Path) -> tuple[dict[str, Any], list[SetFeedbackRecord]]:
    """The header and the records of a set-feedback file; a half-written last line is ignored."""
    return read_feedback_file(path, SETS)


def score_sets(
    corpus: Corpus,
    queries: Corpus | Iterable[Mapping[str, Any]],
    template: str | Template,
    out_path: str | Path,
    retriever: Any = "bm25",
    n_candidates: int = 10,
    k: int = 4,
    n_subsets: int = 8,
    seed: int = 0,
    lm: Any = None,
    batch_size: int = 16,
    chunk_size: int = 128,
    resume: bool = True,
    progress: bool = True,
    dtype: str = "float32",
) -> Path:
    """Score sampled subsets of every query's candidates with the LM; write the set-feedback file.

    Args:
        corpus, queries, template, retriever, lm, batch_size, resume, dtype: as for
            ``training.score_candidates``. CEIL draws its candidates with the EPR
            retriever: pass that model's directory.
        out_path: the set-feedback JSONL file.
        n_candidates: n, the top candidates subsets are drawn from.
        k: demos per subset (per prompt). CEIL trains on one size and may select
            another at inference; a subset's kernel is k x k.
        n_subsets: m, distinct subsets per query; C(n, k) must be at least m.
        seed: with the query's id, seeds its draw: the same subsets however the run
            is chunked, interrupted or resumed.
        chunk_size: queries per durable chunk (m prompts each).
        progress: a tqdm bar in prompts/s.

    Returns the path of the set-feedback file.
    """
    counts = {"n_candidates": n_candidates, "k": k, "n_subsets": n_subsets,
              "chunk_size": chunk_size, "batch_size": batch_size}
    template, queries, retriever, described = prepare_scoring(corpus, queries, template, retriever,
                                                              n_candidates, dtype, counts)
    if k > n_candidates:
        raise ConfigError(f"k={k} demos per subset cannot be drawn from n_candidates={n_candidates}.")
    if math.comb(n_candidates, k) < n_subsets:
        raise ConfigError(f"n_subsets={n_subsets} distinct subsets of k={k} do not exist among "
                          f"n_candidates={n_candidates} (only {math.comb(n_candidates, k)}). Ask "
                          "for fewer subsets or more candidates.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed={seed!r}: must be an integer.")
    settings = {
        "version": SET_FEEDBACK_VERSION,
        **scoring_settings(corpus, template, described, n_candidates, lm, dtype),
        "k": int(k), "n_subsets": int(n_subsets), "seed": int(seed), "order": ORDER,
        "signal": "log p(answer | k demos + separator + query)",
        "shared_prefix_ends_with": query_head(template),
    }
    out = FeedbackFile(out_path, settings, resume=resume, kind=SETS)
    if all(query.id in out.done for query in queries):
        return out.path  # finished before: nothing to index, retrieve or load
    rows_of, scores_of = _retrieve(queries, corpus, retriever, n_candidates)
    short = [q.id for q, rows in zip(queries, rows_of) if len(rows) < n_candidates]
    if short:
        raise ConfigError(f"{len(short)} queries (the first: {short[0]!r}) have fewer than "
                          f"n_candidates={n_candidates} candidates: the corpus has too few other "
                          "examples. Ask for fewer candidates.")

    def score(chunk, rows, scores, lm, advance):
        subsets = [sample_subsets(n_candidates, k, n_subsets, seed, q.id) for q in chunk]
        return _score_set_chunk(chunk, rows, scores, subsets, corpus, template, lm, advance)

    score_in_chunks(out, queries, rows_of, scores_of, score, [n_subsets] * len(queries),
                    chunk_size, lm, batch_size, dtype, progress, "LM set feedback")
    return out.path


def sample_subsets(n: int, k: int, m: int, seed: int, query_id: str) -> list[tuple[int, ...]]:
    """``m`` distinct k-subsets of ``range(n)``, each in the order it is shown: candidate
    indices descending, i.e. ascending retriever score, the most relevant last.

    Seeded by ``seed`` and the query's id alone. Draws are uniform over subsets:
    rejection sampling, or a draw from the full list when few subsets exist.
    """
    digest = int(hashlib.sha1(str(query_id).encode("utf-8")).hexdigest()[:15], 16)
    rng = np.random.default_rng([int(seed), digest])
    total = math.comb(n, k)
    if total <= 4 * m:
        every = list(itertools.combinations(range(n), k))
        picked = [every[i] for i in rng.choice(total, size=m, replace=False)]
    else:
        seen: set[tuple[int, ...]] = set()
        picked = []
        while len(picked) < m:
            subset = tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False)))
            if subset not in seen:
                seen.add(subset)
                picked.append(subset)
    return [tuple(sorted(subset, reverse=True)) for subset in picked]


def _score_set_chunk(chunk: list[Example], rows_of: list[list[int]], scores_of: list[list[float]],
                     subsets_of: list[list[tuple[int, ...]]], corpus: Corpus, template: Template,
                     lm: Any, advance: Callable[[int], None]) -> list[SetFeedbackRecord]:
    output = corpus.output_name
    rendered = {row: template.render_demo(corpus[row].fields(output))
                for rows in rows_of for row in rows}
    sequences, owner = [], []
    for i, (rows, subsets) in enumerate(zip(rows_of, subsets_of)):
        for subset in subsets:
            sequences.append(tuple(rows[j] for j in subset))
            owner.append(i)
    query_texts = [template.render_query(q.fields(output)) for q in chunk]
    prompts = [template.join([rendered[row] for row in sequence], query_texts[i])
               for sequence, i in zip(sequences, owner)]
    answers = [(template.answer_prefix or " ") + q.output for q in chunk]
    continuations = [answers[i] for i in owner]
    if isinstance(lm, TransformersLM):
        prefixes, prefix_of, suffixes = split_at_shared_demos(template, sequences, rendered, prompts)
        scores = score_shared_prefixes(lm, prefixes, suffixes, continuations, prefix_of,
                                       on_scored=advance)
    else:
        scores = _score_plainly(lm, prompts, continuations, advance)

    records, start = [], 0
    for query, rows, retrieved, subsets in zip(chunk, rows_of, scores_of, subsets_of):
        records.append(SetFeedbackRecord(
            query_id=query.id, query=query.text, answer=query.output,
            candidates=tuple(corpus[row].id for row in rows), retriever_scores=tuple(retrieved),
            subsets=tuple(subsets), lm_scores=tuple(float(s) for s in scores[start:start + len(subsets)])))
        start += len(subsets)
    return records


def split_at_shared_demos(template: Template, sequences: Sequence[tuple[int, ...]],
                          rendered: Mapping[int, str], prompts: Sequence[str]
                          ) -> tuple[list[str], list[int], list[str]]:
    """Distinct prefixes, each prompt's prefix index, and its suffix: ``prefix + suffix``
    is the prompt.

    A prompt's prefix is its longest run of leading demos that another prompt also
    opens with (at least its first demo), then the separator and the template's
    literal head (see ``training.feedback.split_prompts`` for why the cut goes there).
    """
    head = query_head(template)
    opens_with = Counter(sequence[:j] for sequence in sequences for j in range(1, len(sequence) + 1))
    prefixes: list[str] = []
    slot: dict[str, int] = {}
    prefix_of, suffixes = [], []
    for sequence, prompt in zip(sequences, prompts):
        shared = max((j for j in range(1, len(sequence) + 1) if opens_with[sequence[:j]] > 1), default=1)
        demos = template.join([rendered[row] for row in sequence[:shared]], "")
        prefix = demos + head if prompt.startswith(demos + head) else demos
        if prefix not in slot:
            slot[prefix] = len(prefixes)
            prefixes.append(prefix)
        prefix_of.append(slot[prefix])
        suffixes.append(prompt[len(prefix):])
    return prefixes, prefix_of, suffixes
