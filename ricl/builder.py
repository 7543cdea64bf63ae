"""PromptBuilder: the facade that wires corpus, retriever, selector, placement and template."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError, TemplateError
from ricl.io import atomic_dir, check_dir_target, recover_dir
from ricl.placement import check_order, fit_budget, order_demos
from ricl.prompt import Demo, Dropped, Prompt
from ricl.registry import resolve
from ricl.retrieval import SelfExclusion
from ricl.selectors import CandidateView, Selection, make_selector
from ricl.template import Template, as_template
from ricl.text import check_text

log = logging.getLogger(__name__)

Query = str | Mapping[str, str]
_CHUNK = 256
BUILDER_KIND = "prompt-builder"  # the kind in a saved builder's ricl.io marker


class PromptBuilder:
    """Builds few-shot prompts for queries from a corpus of demonstrations.

    >>> builder = PromptBuilder(corpus, retriever="dense", selector="dpp", k=8,
    ...                         template="Review: {input}\\nSentiment: {output}",
    ...                         max_tokens=1024)
    >>> prompt = builder.build("a gripping, beautifully shot film")

    Construction is cheap; the corpus is indexed on the first ``build`` (or by an
    explicit ``index()``). ``retriever``: "bm25", "dense", "dense:chroma", a path to a
    sentence-transformers model directory, or a Retriever. ``selector``: "similarity",
    "mmr", "dpp", "coverage", "votek", "random", or a Selector. ``max_tokens`` counts
    tokens with the target LM's tokenizer (``tokenizer``: None = the default LM,
    SmolLM2-135M; a local model dir; or a Hugging Face tokenizer object).
    """

    def __init__(self, corpus: Corpus, retriever: Any = "dense", selector: Any = "similarity",
                 k: int = 8, template: str | Template | None = None,
                 max_tokens: int | None = None, order: str = "similar-last",
                 tokenizer: Any = None, instructions: str = "", seed: int = 0,
                 exclude_self: bool = True, selector_options: Mapping[str, Any] | None = None,
                 retriever_options: Mapping[str, Any] | None = None):
        if not isinstance(corpus, Corpus):
            raise ConfigError(f"PromptBuilder needs a ricl.Corpus, not {type(corpus).__name__}; "
                              "build one with ricl.Corpus.from_records(records, input=..., output=...).")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ConfigError(f"k={k!r}: the number of demonstrations must be an integer >= 0.")
        if max_tokens is not None and (isinstance(max_tokens, bool) or
                                       not isinstance(max_tokens, (int, np.integer)) or max_tokens <= 0):
            raise ConfigError(f"max_tokens={max_tokens!r}: must be a positive integer or None.")
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
        self.retriever = resolve("make_retriever")(retriever, **dict(retriever_options or {}))
        self.selector = make_selector(selector, **dict(selector_options or {}))
        self._tokenizer_spec = tokenizer
        self._tokenizer = None
        self._chunker = None
        self._demo_tokens: dict[int, int] = {}
        self._lock = threading.RLock()
        self._indexed = getattr(self.retriever, "corpus", None) is corpus
        if self._indexed and hasattr(self.selector, "prepare"):
            self.selector.prepare(self.retriever)

    # -- set-up ------------------------------------------------------------------------------
    def _field_names(self) -> set[str]:
        return set(self.corpus.input_names) | {"input", "output", self.corpus.output_name}

    def index(self) -> PromptBuilder:
        """Index the corpus now (otherwise it happens on the first build)."""
        with self._lock:
            if not self._indexed:
                self.retriever.index(self.corpus)
                if hasattr(self.selector, "prepare"):
                    self.selector.prepare(self.retriever)
                self._indexed = True
        return self

    @property
    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                spec = self._tokenizer_spec
                if spec is None or isinstance(spec, (str, Path)):
                    from ricl.models import load_tokenizer

                    self._tokenizer = load_tokenizer(spec)
                else:
                    self._tokenizer = spec
            return self._tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        tokenizer = self.tokenizer
        with self._lock:  # Rust tokenizers raise "Already borrowed" if settings change mid-call
            encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

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
                   progress: bool = False) -> list[Prompt]:
        """Prompts for many queries: one encoder call and one search per chunk.

        Gives exactly the prompts that ``build`` gives one by one. ``documents``, when
        given, holds one list of documents per query.
        """
        if isinstance(queries, (str, Mapping)):
            raise ConfigError("build_many() takes a list of queries; use build() for one.")
        if documents is not None and len(documents) != len(queries):
            raise ConfigError(f"documents has {len(documents)} lists for {len(queries)} queries; "
                              "pass one list of documents per query.")
        fields = [self._query_fields(q, i) for i, q in enumerate(queries)]
        self.index()
        prompts: list[Prompt] = []
        chunks = range(0, len(fields), _CHUNK)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="prompts", unit="chunk")
        for start in chunks:
            docs = None if documents is None else documents[start:start + _CHUNK]
            prompts.extend(self._build_chunk(fields[start:start + _CHUNK], docs))
        return prompts

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

    def _build_chunk(self, fields: list[dict[str, str]], documents=None) -> list[Prompt]:
        texts = [f["input"] for f in fields]
        views = self._views(texts)
        selections = self.selector.select_many(views, self.k) if self.k else \
            [Selection(()) for _ in views]
        scores = self._scores(views, selections)
        query_texts = [self.template.render_query(f) for f in fields]
        query_tokens = self.count_tokens(query_texts)
        self._count_demo_tokens({row for s in selections for row in s.rows})
        docs = (self._score_documents(texts, documents) if documents is not None
                else [[] for _ in fields])
        return [self._assemble(f, qt, qn, sel, sc, d) for f, qt, qn, sel, sc, d
                in zip(fields, query_texts, query_tokens, selections, scores, docs)]

    @property
    def chunker(self):
        with self._lock:
            if self._chunker is None:
                from ricl.chunker import LongContextChunker

                self._chunker = LongContextChunker(tokenizer=self.tokenizer)
            return self._chunker

    def _score_documents(self, queries: list[str], documents) -> list[list[tuple[str, str, float]]]:
        """(doc id, text, score) per item. Strings are chunked and scored by the dense
        encoder's cosine with the query when there is one, else by their given order."""
        from ricl.chunker import Chunk

        scored = []
        for qi, (query, items) in enumerate(zip(queries, documents)):
            if isinstance(items, (str, bytes)):
                raise ConfigError(f"documents for query {qi} must be a list, not one string.")
            pieces, given = [], []
            for di, item in enumerate(items):
                if isinstance(item, tuple) and len(item) == 2:
                    text, score = item
                    text = text.text if isinstance(text, Chunk) else text
                    given.append((f"{di}", _as_text(text, qi, di), float(score)))
                elif isinstance(item, Chunk):
                    pieces.append((f"{item.doc_id}#{item.index}", item.text))
                else:
                    for chunk in self.chunker.split(_as_text(item, qi, di), doc_id=str(di)):
                        pieces.append((f"{chunk.doc_id}#{chunk.index}", chunk.text))
            if pieces and hasattr(self.retriever, "encode"):
                vectors = self.retriever.encode([query] + [text for _, text in pieces])
                sims = vectors[1:] @ vectors[0]
                given += [(pid, text, float(s)) for (pid, text), s in zip(pieces, sims)]
            else:
                given += [(pid, text, -float(i)) for i, (pid, text) in enumerate(pieces)]
            scored.append(given)
        return scored

    def _views(self, texts: list[str]) -> list[CandidateView]:
        n = self.selector.n_candidates(self.k) if self.k else 0
        if n > 0:
            found = self.retriever.search(texts, n, exclude_self=self.exclude_self)
            return [CandidateView(q, r, s, self.retriever, e)
                    for q, r, s, e in zip(texts, found.rows, found.scores, found.excluded)]
        with self._lock:
            if not hasattr(self, "_self_rows"):
                self._self_rows = SelfExclusion(self.corpus)
        excluded = (self._self_rows.rows_of(texts) if self.exclude_self
                    else [frozenset()] * len(texts))
        empty = np.zeros(0, dtype=np.int64)
        return [CandidateView(q, empty, np.zeros(0), self.retriever, e)
                for q, e in zip(texts, excluded)]

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
        if missing:
            looked_up = self.retriever.score_rows([views[i].query for i in missing],
                                                  [np.array(selections[i].rows) for i in missing])
            for i, values in zip(missing, looked_up):
                result[i] = [float(v) for v in values]
        return result

    def _count_demo_tokens(self, rows: set[int]) -> None:
        todo = sorted(rows - set(self._demo_tokens))
        counts = self.count_tokens([self._render_demo(row) for row in todo])
        self._demo_tokens.update(zip(todo, counts))

    def _fixed_tokens(self) -> tuple[int, int]:
        """Token counts of the separator and the instructions (computed once)."""
        if not hasattr(self, "_fixed"):
            separator, instructions = self.count_tokens([self.template.separator,
                                                         self.template.instructions or " "])
            self._fixed = (separator, instructions if self.template.instructions else 0)
        return self._fixed

    def _render_demo(self, row: int) -> str:
        example = self.corpus[row]
        return self.template.render_demo(example.fields(self.corpus.output_name))

    def _assemble(self, fields: dict[str, str], query_text: str, query_tokens: int,
                  selection: Selection, scores: list[float | None],
                  documents: list[tuple[str, str, float]] = ()) -> Prompt:
        rows = list(selection.rows)
        demo_tokens = [self._demo_tokens[row] for row in rows]
        relevance = [(-1e9 - rank) if s is None else s for rank, s in enumerate(scores)]
        separator, instructions = self._fixed_tokens()
        fixed = query_tokens + (instructions + separator if self.template.instructions else 0)
        kept, dropped = fit_budget(demo_tokens, relevance, fixed, separator, self.max_tokens)
        notes = [selection.note] if selection.note else []
        while True:
            positions = order_demos([scores[i] for i in kept], self.order, fields["input"], self.seed)
            placed = [kept[p] for p in positions]
            text = self.template.join([self._render_demo(rows[i]) for i in placed], query_text)
            total = self.count_tokens([text])[0]
            if self.max_tokens is None or total <= self.max_tokens or not kept:
                break
            # token merges across separators can exceed the per-part estimate: drop one more
            worst = min(kept, key=lambda i: (relevance[i], -i))
            kept.remove(worst)
            dropped.append(worst)
        placed_docs, dropped_docs = [], []
        if documents:
            placed_docs, dropped_docs, text, total = self._place_documents(
                documents, [self._render_demo(rows[i]) for i in placed], query_text, total)
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
        query = {name: fields[name] for name in self.corpus.input_names}
        return Prompt(text=text, query=query, demos=demos, token_count=total,
                      max_tokens=self.max_tokens, dropped=drops, notes=tuple(notes),
                      documents=tuple(placed_docs),
                      selector=self.selector.name, retriever=self.retriever.kind,
                      answer_prefix=self.template.answer_prefix or " ")

    def _place_documents(self, documents, demo_texts: list[str], query_text: str, total: int):
        """Fill what the budget leaves after query and demos with the best documents."""
        from ricl.prompt import PlacedDocument

        items = list(documents)
        separator, _ = self._fixed_tokens()
        budget = (self.max_tokens - total - separator) if self.max_tokens is not None else 10**12
        while True:
            placement = self.chunker.place([text for _, text, _ in items],
                                           [score for _, _, score in items], max(budget, 0))
            chosen = [items[i] for i in placement.order]
            section = self.chunker.separator.join(text for _, text, _ in chosen)
            text = self.template.join(demo_texts, query_text, documents=section)
            count = self.count_tokens([text])[0]
            if self.max_tokens is None or count <= self.max_tokens or not chosen:
                break
            budget -= count - self.max_tokens  # merges across joins: tighten and retry
        placed = [PlacedDocument(id=doc_id, text=doc_text, score=score, position=pos)
                  for pos, (doc_id, doc_text, score) in enumerate(chosen)]
        dropped = [items[i] for i in placement.dropped]
        return placed, dropped, text, count

    # -- persistence -------------------------------------------------------------------------
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
        check_dir_target(path, BUILDER_KIND, overwrite=overwrite)
        self.index()
        config = {
            "format": 1, "k": self.k, "max_tokens": self.max_tokens, "order": self.order,
            "seed": self.seed, "exclude_self": self.exclude_self,
            "template": {"text": self.template.text, "output_slot": self.template.output_slot,
                         "separator": self.template.separator,
                         "instructions": self.template.instructions},
            "selector": self.selector.config() if hasattr(self.selector, "config")
            else {"name": getattr(self.selector, "name", "custom"), "custom": True},
            "tokenizer": _tokenizer_card(self._tokenizer_spec),
        }
        with atomic_dir(path, BUILDER_KIND, overwrite=overwrite) as tmp:
            self.retriever.save(tmp / "retriever")
            (tmp / "builder.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, *, selector: Any = None, tokenizer: Any = None) -> PromptBuilder:
        """Load a builder saved with :meth:`save`; pass ``selector``/``tokenizer`` to
        override (required when the saved ones were custom objects)."""
        path = Path(path)
        recover_dir(path)
        if path.exists() and not path.is_dir():
            raise IndexLoadError(f"{path} is a file, not a saved PromptBuilder. Point to the "
                                 "directory that builder.save() wrote.")
        try:
            config = json.loads((path / "builder.json").read_text())
        except FileNotFoundError:
            raise IndexLoadError(f"{path} is not a saved PromptBuilder (no builder.json). "
                                 "Point to the directory that builder.save() wrote.") from None
        except OSError as exc:
            raise IndexLoadError(f"{path}/builder.json cannot be read ({exc}).") from None
        except ValueError as exc:
            raise IndexLoadError(f"{path}/builder.json is corrupted ({exc}). Save again.") from None
        retriever = resolve("load_retriever")(path / "retriever")
        if selector is None:
            options = dict(config["selector"])
            if options.pop("custom", False):
                raise ConfigError(f"{path} was saved with a custom selector; pass selector=... to load().")
            selector = make_selector(options.pop("name"), **options)
        if tokenizer is None:
            card = config["tokenizer"]
            if card == "custom":
                raise ConfigError(f"{path} was saved with a custom tokenizer object; "
                                  "pass tokenizer=... to load().")
            tokenizer = card
        t = config["template"]
        template = Template(t["text"], t["output_slot"], t["separator"], t["instructions"])
        return cls(retriever.corpus, retriever=retriever, selector=selector, k=config["k"],
                   template=template, max_tokens=config["max_tokens"], order=config["order"],
                   tokenizer=tokenizer, seed=config["seed"], exclude_self=config["exclude_self"])

    def __repr__(self) -> str:
        return (f"PromptBuilder({len(self.corpus)} demos, retriever={self.retriever.kind}, "
                f"selector={self.selector.name}, k={self.k}, order={self.order!r}, "
                f"max_tokens={self.max_tokens})")


def _tokenizer_card(spec: Any) -> str | None:
    """None for the default LM's tokenizer, a directory path, or "custom"."""
    if spec is None:
        return None
    if not isinstance(spec, (str, Path)):
        spec = getattr(spec, "name_or_path", None)
        if not spec or not Path(spec).is_dir():
            return "custom"
    from ricl.models import DEFAULT_LM_NAME, ricl_home

    path = Path(spec).resolve()
    if path == (ricl_home() / "models" / DEFAULT_LM_NAME).resolve():
        return None  # portable: the default is found again on whatever machine loads it
    return str(path)


def _as_text(item: Any, query: int, doc: int) -> str:
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"document {doc} of query {query} must be a non-empty string "
                          "(or a (text, score) pair).")
    return check_text(item, f"document {doc} of query {query}", ConfigError)


__all__ = ["PromptBuilder", "TemplateError"]
