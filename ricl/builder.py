"""PromptBuilder: the facade that wires corpus, retriever, selector, placement and template."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ricl.changes import CorpusChange
from ricl.data import Corpus, Example
from ricl.errors import ConfigError, TemplateError
from ricl.formats import ChatFormat, TextFormat, check_format
from ricl.documents import score_documents
from ricl.locks import ReadWriteLock
from ricl.persistence import builder_arguments, save_builder
from ricl.placement import check_order, fit_budget, order_demos
from ricl.prefix_sharing import (SIMILAR_LAST, PrefixSharing, check_similar_last, prefix_sharing,
                                 shared_first_positions, shared_heads)
from ricl.prompt import Demo, Dropped, Prompt
from ricl.registry import resolve
from ricl.retrieval import SelfExclusion, trim
from ricl.selectors import CandidateView, Selection, make_selector, select_many, selector_name
from ricl.template import Template, as_template
from ricl.text import check_text
from ricl.tokens import TokenCounter

log = logging.getLogger(__name__)

Query = str | Mapping[str, str]
_CHUNK = 256


class PromptBuilder:
    """Builds few-shot prompts for queries from a corpus of demonstrations.

    >>> builder = PromptBuilder(corpus, retriever="dense", selector="dpp", k=8,
    ...                         template="Review: {input}\\nSentiment: {output}",
    ...                         max_tokens=1024)
    >>> prompt = builder.build("a gripping, beautifully shot film")

    Construction is cheap; the corpus is indexed on the first ``build`` (or by an
    explicit ``index()``). ``retriever``: "bm25", "dense", "dense:chroma", a path to a
    sentence-transformers model directory, or any :class:`ricl.Retriever`. ``selector``:
    "similarity", "mmr", "dpp", "coverage", "votek", "random", or any
    :class:`ricl.Selector`. ``max_tokens`` counts tokens in the target LM's tokens
    (``tokenizer``: None = the default LM, SmolLM2-135M; a local model dir; a Hugging
    Face tokenizer; or the scoring LM itself, anything with ``count_tokens``);
    ``Prompt.tokenizer`` says which counted. ``seed`` seeds every random part: a named
    selector that draws at random (random, votek) and ``order="random"``; a Selector
    object keeps its own. ``format``: "text" (demos joined by the template's separator)
    or "chat" (``Prompt.messages``: instructions as the system turn, each demo a user
    and an assistant turn, the query the last user turn; ``Prompt.text`` is the
    tokenizer's chat template applied with the generation prompt, and the budget
    counts that text). ``device``: where a dense retriever's embedder runs ("auto":
    a GPU when torch sees one; "cpu", "cuda", "cuda:N").

    The corpus can change in place: :meth:`add`, :meth:`update` (upsert by id) and
    :meth:`remove` update the index without rebuilding it, and every prompt built after
    one returns sees the new corpus. A builder may serve many threads while it changes:
    each prompt is built from one version of the corpus, never a mix.
    """

    def __init__(self, corpus: Corpus, retriever: Any = "dense", selector: Any = "similarity",
                 k: int = 8, template: str | Template | None = None,
                 max_tokens: int | None = None, order: str = "similar-last",
                 tokenizer: Any = None, instructions: str = "", seed: int = 0,
                 exclude_self: bool = True, selector_options: Mapping[str, Any] | None = None,
                 retriever_options: Mapping[str, Any] | None = None, format: str = "text",
                 device: Any = None):
        if not isinstance(corpus, Corpus):
            raise ConfigError(f"PromptBuilder needs a ricl.Corpus, not {type(corpus).__name__}; "
                              "build one with ricl.Corpus.from_records(records, input=..., output=...).")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ConfigError(f"k={k!r}: the number of demonstrations must be an integer >= 0.")
        if max_tokens is not None and (isinstance(max_tokens, bool) or
                                       not isinstance(max_tokens, (int, np.integer)) or max_tokens <= 0):
            raise ConfigError(f"max_tokens={max_tokens!r}: must be a positive integer or None.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed={seed!r}: must be an integer (it seeds every random part).")
        self.corpus = corpus
        self.k = int(k)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.order = check_order(order)
        self.seed = int(seed)
        self.exclude_self = bool(exclude_self)
        self.template = as_template(template or "Input: {input}\nOutput: {output}", corpus.output_name)
        if instructions:
            self.template = Template(self.template.text, self.template.output_slot,
                                     self.template.separator, instructions)
        self.template.check_fields(self._field_names())
        self.retriever = resolve("make_retriever")(retriever, device=device,
                                                   **dict(retriever_options or {}))
        self.selector = make_selector(selector, shared_seed=self.seed, **dict(selector_options or {}))
        self.tokens = TokenCounter(tokenizer)
        self.format = check_format(format)
        self._layout = None
        self._chunker = None
        self._demo_tokens: dict[str, int] = {}  # by example id
        self._lock = threading.RLock()  # lazy set-up (layout, chunker, self-exclusion)
        self._rw = ReadWriteLock()  # builds share it; a change holds it alone, briefly
        self._writes = threading.RLock()  # one change (or indexing) at a time
        self._indexed = getattr(self.retriever, "corpus", None) is corpus
        if self._indexed and hasattr(self.selector, "prepare"):
            self.selector.prepare(self.retriever)

    # -- set-up ------------------------------------------------------------------------------
    def _field_names(self) -> set[str]:
        return set(self.corpus.input_names) | {"input", "output", self.corpus.output_name}

    def index(self) -> PromptBuilder:
        """Index the corpus now (otherwise it happens on the first build)."""
        if self._indexed:
            return self
        with self._writes, self._rw.write():
            if not self._indexed:
                self.retriever.index(self.corpus)
                if hasattr(self.selector, "prepare"):
                    self.selector.prepare(self.retriever)
                self._indexed = True
        return self

    # -- changing the corpus -----------------------------------------------------------------
    def add(self, records: Sequence[Any], *, id: str | None = "id") -> CorpusChange:
        """Add demonstrations: dicts with the corpus's fields (its input and output names;
        ``id`` names the id field, and a record without one gets an id from its content),
        or ``ricl.Example`` objects. They are validated as ``Corpus.from_records`` does;
        an id the corpus already holds is a ``ricl.errors.DuplicateIdError`` (use
        :meth:`update`). Returns the :class:`ricl.changes.CorpusChange` (its
        ``added_ids``...). The index is updated, not rebuilt: prompts equal those of a
        builder made on the new corpus."""
        return self._change(CorpusChange.add, records, id=id)

    def update(self, records: Sequence[Any], *, id: str | None = "id") -> CorpusChange:
        """Upsert by id: each record whose id is in the corpus replaces that example in
        place (say, a corrected label); a record with a new id is added."""
        return self._change(CorpusChange.update, records, id=id)

    def remove(self, ids: Sequence[str]) -> CorpusChange:
        """Remove the examples with these ids; an id the corpus does not hold is a
        ``ricl.errors.UnknownIdError`` and nothing is removed."""
        return self._change(CorpusChange.remove, ids)

    def _change(self, make, *args: Any, **kwargs: Any) -> CorpusChange:
        """Validate, do the slow work (embedding the fresh examples) while prompts are still
        being built, then swap the corpus, the index and what depends on them in one
        exclusive step."""
        with self._writes:
            change = make(self.corpus, *args, **kwargs)
            if change.is_empty:
                return change
            apply = getattr(self.retriever, "apply", None) if self._indexed else None
            stage = getattr(self.retriever, "stage", None) if apply is not None else None
            staged = stage(change) if stage is not None else None
            with self._rw.write():
                if stage is not None:
                    apply(change, staged)
                elif apply is not None:
                    apply(change)
                elif self._indexed:  # a retriever of the user's that cannot change: rebuild
                    self.retriever.index(change.new)
                self.corpus = change.new
                for example in change.gone:
                    self._demo_tokens.pop(example.id, None)
                if hasattr(self, "_self_rows"):
                    self._self_rows.apply(change)
                if self._indexed and hasattr(self.selector, "prepare"):
                    self.selector.prepare(self.retriever)  # vote-k chooses again, caches reset
        return change

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer the budget is counted with (None for an LM that
        counts on a server)."""
        return self.tokens.tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.tokens.count(texts)

    @property
    def layout(self) -> TextFormat | ChatFormat:
        """How prompts are laid out (``format``): plain text or chat messages."""
        with self._lock:
            if self._layout is None:
                self._layout = (ChatFormat(self.template, self.tokens.tokenizer)
                                if self.format == "chat" else TextFormat(self.template))
            return self._layout

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.corpus.labels

    # -- building ----------------------------------------------------------------------------
    def build(self, query: Query, documents: Sequence[Any] | None = None) -> Prompt:
        """The prompt for one query (a string, or a dict of input fields).

        ``documents``: supporting material placed before the demonstrations (a prompt is
        instructions, documents, demos, query). Items are strings (split into chunks by
        the builder's ``LongContextChunker`` and scored against the query), or
        ``(text, score)`` pairs. They fill the budget left after the query and demos,
        highest-scored first, and are ordered by the chunker's strategy (default
        ``edges``: the best at the two ends of the documents, the weakest in the middle).
        """
        return self.build_many([query], None if documents is None else [documents])[0]

    def build_many(self, queries: Sequence[Query], documents: Sequence[Sequence[Any]] | None = None,
                   progress: bool = False, *, share_prefixes: bool = False,
                   similar_last: int = SIMILAR_LAST) -> list[Prompt]:
        """Prompts for many queries, in the order given: one encoder call and one search per chunk.

        Gives exactly the prompts that ``build`` gives one by one. ``documents``, when
        given, holds one list of documents per query. Each chunk of 256 queries is built
        from one version of the corpus; a change made meanwhile from another thread takes
        effect between chunks.

        ``share_prefixes=True`` orders each prompt's demos so that prompts of this batch
        share token prefixes, which an LM with a prefix cache computes once (see
        ``ricl.prefix_sharing``): demos that other queries of the batch also use come
        first, in one canonical order, and the prompt's own demos follow; the last
        ``similar_last`` demos keep the builder's ``order`` (by default the most similar
        right before the query). The prompts hold the same demos, budget and scores as
        without it; only positions change (``Demo.position`` says where each sits, and a
        note says why). The whole batch is selected before any prompt is assembled, from
        one version of the corpus, and a selector with ``select_many`` sees all of it at
        once. Run the prompts in :meth:`prefix_schedule` order to reuse the shared prefixes.
        """
        if isinstance(queries, (str, Mapping)):
            raise ConfigError("build_many() takes a list of queries; use build() for one.")
        if documents is not None and len(documents) != len(queries):
            raise ConfigError(f"documents has {len(documents)} lists for {len(queries)} queries; "
                              "pass one list of documents per query.")
        similar_last = check_similar_last(similar_last)
        fields = [self._query_fields(q, i) for i, q in enumerate(queries)]
        self.index()
        chunks = range(0, len(fields), _CHUNK)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="prompts", unit="chunk")
        prompts: list[Prompt] = []
        if share_prefixes:
            # the whole batch from one corpus version: every prompt's order depends on all of it
            with self._rw.read():
                chosen = self._choose([f["input"] for f in fields])
                heads = self._shared_heads(fields, *chosen, similar_last)
                for start in chunks:
                    end = start + _CHUNK
                    docs = None if documents is None else documents[start:end]
                    part = (chosen[0][start:end], chosen[1][start:end])
                    prompts.extend(self._build_chunk(fields[start:end], docs, part,
                                                     (heads[start:end], similar_last)))
            return prompts
        for start in chunks:
            docs = None if documents is None else documents[start:start + _CHUNK]
            with self._rw.read():  # one corpus version per chunk; changes wait in between
                prompts.extend(self._build_chunk(fields[start:start + _CHUNK], docs))
        return prompts

    def _shared_heads(self, fields: list[dict[str, str]], selections: list[Selection],
                      scores: list[list[float | None]], similar_last: int) -> list[list[int]]:
        """Each prompt's opening demos under ``share_prefixes`` (``prefix_sharing.shared_heads``),
        from the demos that do not keep the builder's order at the end."""
        self._count_demo_tokens({row for s in selections for row in s.rows})
        free = []
        for f, selection, row_scores in zip(fields, selections, scores):
            base = order_demos(row_scores, self.order, f["input"], self.seed)
            free.append([selection.rows[i] for i in base[:max(len(base) - similar_last, 0)]])
        return shared_heads(free, lambda row: self._demo_tokens[self.corpus[row].id])

    def prefix_schedule(self, prompts: Sequence[Prompt | str]) -> PrefixSharing:
        """The order to run ``prompts`` in so that each follows the one it shares the
        longest token prefix with (their trie order), and how many prompt tokens a prefix
        cache skips in that order, counted in this builder's tokenizer as the LM reads a
        prompt (its start token included). ``ricl.TransformersLM`` and the
        OpenAI-compatible clients already run a batch in this order; this says what it
        saves.
        """
        tokenizer = self.tokens.tokenizer
        if tokenizer is None:
            raise ConfigError("prefix_schedule() counts tokens with a local tokenizer; this "
                              "builder counts on a server. Pass the served model's tokenizer "
                              "as PromptBuilder(tokenizer=...).")
        texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
        if not texts:
            return prefix_sharing([])
        with self.tokens._lock:
            ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
        return prefix_sharing(ids)

    def _query_fields(self, query: Query, i: int) -> dict[str, str]:
        names = self.corpus.input_names
        if isinstance(query, str):
            if len(names) != 1:
                raise ConfigError(f"query {i} is a string but the corpus has inputs {list(names)}; "
                                  "pass a dict with those fields.")
            values = {names[0]: query}
        elif isinstance(query, Mapping):
            missing = [name for name in names if name not in query]
            if missing:
                raise ConfigError(f"query {i} lacks input field(s) {missing}; it has {sorted(query)}.")
            values = {name: query[name] for name in names}
        else:
            raise ConfigError(f"query {i} is {type(query).__name__}; pass a string or a dict "
                              "of input fields.")
        for name, value in values.items():
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"query {i}: field {name!r} must be a non-empty string "
                                  f"(got {value!r:.40}).")
            check_text(value, f"query {i}: field {name!r}", ConfigError)
        values = dict(values)
        values["input"] = "\n".join(values[name] for name in names)
        return values

    def _choose(self, texts: list[str]) -> tuple[list[Selection], list[list[float | None]]]:
        """Each query's selected demos and their retriever scores; searched in chunks."""
        views = [view for start in range(0, len(texts), _CHUNK)
                 for view in self._views(texts[start:start + _CHUNK])]
        selections = select_many(self.selector, views, self.k) if self.k else \
            [Selection(()) for _ in views]
        return selections, self._scores(views, selections)

    def _build_chunk(self, fields: list[dict[str, str]], documents=None, chosen=None,
                     sharing=None) -> list[Prompt]:
        texts = [f["input"] for f in fields]
        selections, scores = chosen if chosen is not None else self._choose(texts)
        self._count_demo_tokens({row for s in selections for row in s.rows})
        docs = (self._score_documents(texts, documents) if documents is not None
                else [[] for _ in fields])
        heads = [None] * len(fields) if sharing is None else sharing[0]
        return [self._assemble(f, sel, sc, d, None if head is None else (head, sharing[1]))
                for f, sel, sc, d, head in zip(fields, selections, scores, docs, heads)]

    @property
    def chunker(self):
        with self._lock:
            if self._chunker is None:
                from ricl.chunker import LongContextChunker

                self._chunker = LongContextChunker(tokenizer=self.tokens.encoder())
            return self._chunker

    def _score_documents(self, queries: list[str], documents) -> list[list[tuple[str, str, float]]]:
        encode = getattr(self.retriever, "encode", None)  # a dense retriever scores chunks
        return score_documents(queries, documents, self.chunker.split, encode)

    def _views(self, texts: list[str]) -> list[CandidateView]:
        n = self.selector.n_candidates(self.k) if self.k else 0
        if n > 0:
            found = self.retriever.search(texts, n, exclude_self=self.exclude_self)
            if len(found.rows) != len(texts) or len(found.scores) != len(texts):
                raise ConfigError(f"retriever {self.retriever_kind!r} returned candidates for "
                                  f"{len(found.rows)} of {len(texts)} queries; return one list "
                                  "per query.")
            rows, scores, excluded = list(found.rows), list(found.scores), found.excluded
            if len(excluded) != len(texts):  # a user's retriever: apply the rule here
                excluded = self._excluded(texts)
                hit = [i for i, e in enumerate(excluded) if e]
                if hit:  # ask again for as many more as will be dropped
                    extra = max(len(excluded[i]) for i in hit)
                    again = self.retriever.search([texts[i] for i in hit], n + extra,
                                                  exclude_self=self.exclude_self)
                    for i, r, s in zip(hit, again.rows, again.scores):
                        rows[i], scores[i] = r, s
                for i, e in enumerate(excluded):
                    rows[i], scores[i] = trim(np.asarray(rows[i], dtype=np.int64),
                                              np.asarray(scores[i], dtype=np.float64), e, n)
            # ricl's retrievers have already trimmed their lists (retrievers.base)
            return [CandidateView(q, np.asarray(r, dtype=np.int64), np.asarray(s, dtype=np.float64),
                                  self.retriever, e, self.corpus)
                    for q, r, s, e in zip(texts, rows, scores, excluded)]
        empty = np.zeros(0, dtype=np.int64)
        return [CandidateView(q, empty, np.zeros(0), self.retriever, e, self.corpus)
                for q, e in zip(texts, self._excluded(texts))]

    def _excluded(self, texts: list[str]) -> list[frozenset[int]]:
        """Per query, the corpus rows that are the query itself (never its own demo)."""
        if not self.exclude_self:
            return [frozenset()] * len(texts)
        with self._lock:
            if not hasattr(self, "_self_rows"):
                self._self_rows = SelfExclusion(self.corpus)
        return self._self_rows.rows_of(texts)

    @property
    def retriever_kind(self) -> str:
        return getattr(self.retriever, "kind", None) or type(self.retriever).__name__

    def _scores(self, views: list[CandidateView], selections: list[Selection]) -> list[list[float | None]]:
        """Retriever score of every selected demo; looked up when the selector went
        beyond the candidates (random, vote-k)."""
        result, missing = [], []
        for i, (view, selection) in enumerate(zip(views, selections)):
            known = dict(zip(view.rows.tolist(), view.scores.tolist()))
            row_scores = [known.get(row) for row in selection.rows]
            result.append(row_scores)
            if any(s is None for s in row_scores):
                missing.append(i)
        if missing and hasattr(self.retriever, "score_rows"):  # optional for a user's retriever
            looked_up = self.retriever.score_rows([views[i].query for i in missing],
                                                  [np.array(selections[i].rows) for i in missing])
            for i, values in zip(missing, looked_up):
                result[i] = [float(v) for v in values]
        return result

    def _count_demo_tokens(self, rows: set[int]) -> None:
        todo = sorted(row for row in rows if self.corpus[row].id not in self._demo_tokens)
        counts = self.count_tokens([self._render_demo(row) for row in todo])
        self._demo_tokens.update((self.corpus[row].id, n) for row, n in zip(todo, counts))

    def recompose(self, prompt: Prompt, query: Mapping[str, str]) -> str:
        """``prompt``'s text with another query (a value per input field, empty allowed:
        contextual calibration asks the LM about content-free inputs such as "N/A" or
        ""): the same demonstrations and documents in the same places, laid out as this
        builder lays them out."""
        names = self.corpus.input_names
        fields = {name: query[name] for name in names}
        fields["input"] = "\n".join(fields[name] for name in names)
        # from the prompt's own demos: the corpus may have changed since it was built
        demos = [Example(demo.id, demo.fields, demo.output).fields(self.corpus.output_name)
                 for demo in sorted(prompt.demos, key=lambda d: d.position)]
        section = ""
        if prompt.documents:
            section = self.chunker.separator.join(
                doc.text for doc in sorted(prompt.documents, key=lambda d: d.position))
        return self.layout.compose(demos, fields, documents=section)[0]

    def _demo_fields(self, row: int) -> dict[str, str]:
        return self.corpus[row].fields(self.corpus.output_name)

    def _render_demo(self, row: int) -> str:
        return self.layout.demo(self._demo_fields(row))

    def _assemble(self, fields: dict[str, str], selection: Selection, scores: list[float | None],
                  documents: list[tuple[str, str, float]] = (), sharing=None) -> Prompt:
        rows = list(selection.rows)
        demo_tokens = [self._demo_tokens[self.corpus[row].id] for row in rows]
        relevance = [(-1e9 - rank) if s is None else s for rank, s in enumerate(scores)]
        fixed, separator = self.layout.fixed(fields, self.count_tokens)
        kept, dropped = fit_budget(demo_tokens, relevance, fixed, separator, self.max_tokens)
        notes = [selection.note] if selection.note else []
        while True:
            positions = order_demos([scores[i] for i in kept], self.order, fields["input"], self.seed)
            if sharing is not None:  # (this prompt's opening demos, demos that keep the order at the end)
                base = positions
                positions = shared_first_positions([rows[i] for i in kept], base, *sharing)
            placed = [kept[p] for p in positions]
            text, messages = self.layout.compose([self._demo_fields(rows[i]) for i in placed],
                                                 fields)
            total = self.count_tokens([text])[0]
            if self.max_tokens is None or total <= self.max_tokens or not kept:
                break
            # token merges across separators can exceed the per-part estimate: drop one more
            worst = min(kept, key=lambda i: (relevance[i], -i))
            kept.remove(worst)
            dropped.append(worst)
        placed_docs, dropped_docs = [], []
        if documents:
            placed_docs, dropped_docs, text, messages, total = self._place_documents(
                documents, [self._demo_fields(rows[i]) for i in placed], fields, total, separator)
        demos = tuple(Demo(id=self.corpus[rows[i]].id, fields=dict(self.corpus[rows[i]].inputs),
                           output=self.corpus[rows[i]].output, score=scores[i], rank=i,
                           position=pos, tokens=demo_tokens[i])
                      for pos, i in enumerate(placed))
        drops = tuple(Dropped(id=self.corpus[rows[i]].id, score=scores[i],
                              reason=f"over max_tokens={self.max_tokens}: least relevant demo "
                                     f"({demo_tokens[i]} tokens) dropped")
                      for i in dropped)
        drops += tuple(Dropped(id=f"document:{doc_id}", score=score,
                               reason=f"over max_tokens={self.max_tokens}: lower-scored document "
                                      "chunk left out")
                       for doc_id, _, score in dropped_docs)
        if sharing is not None and positions != base:
            notes.append(f"order: demos other prompts of the batch also use first, the last "
                         f"{sharing[1]} in {self.order} order (share_prefixes)")
        query = {name: fields[name] for name in self.corpus.input_names}
        return Prompt(text=text, query=query, demos=demos, token_count=total,
                      max_tokens=self.max_tokens, dropped=drops, notes=tuple(notes),
                      documents=tuple(placed_docs),
                      selector=selector_name(self.selector), retriever=self.retriever_kind,
                      answer_prefix=self.layout.answer_prefix,
                      tokenizer=self.tokens.name, messages=messages)

    def _place_documents(self, documents, demos: list[dict[str, str]], query: dict[str, str],
                         total: int, separator: int):
        """Fill what the budget leaves after query and demos with the best documents."""
        from ricl.prompt import PlacedDocument

        items = list(documents)
        budget = (self.max_tokens - total - separator) if self.max_tokens is not None else 10**12
        while True:
            placement = self.chunker.place([text for _, text, _ in items],
                                           [score for _, _, score in items], max(budget, 0))
            chosen = [items[i] for i in placement.order]
            section = self.chunker.separator.join(text for _, text, _ in chosen)
            text, messages = self.layout.compose(demos, query, documents=section)
            count = self.count_tokens([text])[0]
            if self.max_tokens is None or count <= self.max_tokens or not chosen:
                break
            budget -= count - self.max_tokens  # merges across joins: tighten and retry
        placed = [PlacedDocument(id=doc_id, text=doc_text, score=score, position=pos)
                  for pos, (doc_id, doc_text, score) in enumerate(chosen)]
        dropped = [items[i] for i in placement.dropped]
        return placed, dropped, text, messages, count

    # -- persistence (ricl/persistence.py) ---------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the index, corpus and settings to ``path`` (atomically: a crash leaves
        the previous save intact).

        ``path`` may be new, an empty directory, or a builder saved before (it is
        replaced: re-saving to one path needs no flag). Anything else raises
        ``ricl.errors.OverwriteError`` before any work is done, and nothing is touched:
        a file, or a directory of the user's, is never replaced, with or without
        ``overwrite``; ``overwrite=True`` only lets a builder replace another kind of
        ricl output (a saved retriever, a trained model).
        """
        self.index()
        with self._rw.read():  # the corpus and index as they are now; changes wait
            save_builder(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, selector: Any = None, tokenizer: Any = None) -> PromptBuilder:
        """Load a builder saved with :meth:`save`; pass ``selector``/``tokenizer`` to
        override (required when the saved ones were custom objects)."""
        return cls(**builder_arguments(path, selector=selector, tokenizer=tokenizer))

    def __repr__(self) -> str:
        return (f"PromptBuilder({len(self.corpus)} demos, retriever={self.retriever_kind}, "
                f"selector={selector_name(self.selector)}, k={self.k}, order={self.order!r}, "
                f"max_tokens={self.max_tokens})")


__all__ = ["PromptBuilder", "TemplateError"]
