r"""LLM feedback on candidate demonstrations: which demos help the LM answer a training query.

For each training query ``x`` with answer ``y``, a retriever proposes ``L``
candidates ``d`` (never ``x`` itself) and the LM scores each one by
``log p(y | d, x)``, the EPR signal (Rubin et al. 2022, "Learning To Retrieve
Prompts for In-Context Learning"). The zero-shot ``log p(y | x)`` is kept
beside it, so a reader can tell which demos help and which hurt.

The feedback file is JSONL: a header line ``{"__feedback__": {...settings}}``,
then one line per query::

    {"query_id": "...", "query": "<input text>", "answer": "...",
     "candidates": ["id", ...], "retriever_scores": [...], "lm_scores": [...],
     "zero_shot": -3.2}

Candidates keep retrieval order, and ``lm_scores[j]`` belongs to
``candidates[j]``. Lines are written a chunk of queries at a time, each chunk
flushed and fsynced, so a killed run loses at most the chunk in flight; a rerun
with the same settings drops a half-written last line, skips finished queries
and writes no line twice.

Speed: a candidate is a prefix shared by every query that retrieved it. With an
in-process ``ricl.lm.TransformersLM`` the pairs of a chunk are grouped by candidate
and each candidate's KV cache is computed once (``training.prefix_cache``); any
other ``ricl.LM`` (a server) gets the same pairs as whole prompts through
``score``.

Where the prompt is cut: the shared prefix is the demo, the template's separator
and the template's literal text before the query's first field, without its
trailing spaces (``"...Answer type: location\n\nQuestion:"``); the suffix is
the rest of the query (``" How far is the moon ?\nAnswer type:"``). Prefix and
suffix are tokenized apart, and a byte-level BPE tokenizer starts a new token at
a space before a word, so the ids are those of the joined prompt: on TREC, SST-2
and AG News with SmolLM2's tokenizer, 150 of 150 pairs tokenize identically
either way. Cutting right after the blank line instead gives identical ids for
0 of 150 (joined, ``"\n\nQuestion"`` is ``"\n" "\n" "Question"``; apart, the
prefix ends in one ``"\n\n"`` token) and moves scores by up to a nat.
"""

from __future__ import annotations

import json
import logging
import string
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ricl.data import Corpus, Example
from ricl.errors import ConfigError, CorpusError, DataError, OverwriteError, RiclError
from ricl.jsonl_store import JsonlStore
from ricl.lm import TransformersLM
from ricl.template import Template, as_template
from training.prefix_cache import score_shared_prefixes

log = logging.getLogger(__name__)

FEEDBACK_VERSION = 1
HEADER_KEY = "__feedback__"
# Every kind of feedback file ricl writes, by the key of its header line, and what
# wrote it: a file of one kind is never resumed, read or overwritten as another.
FILE_KINDS = {
    HEADER_KEY: "per-demo feedback written by training.score_candidates (`ricl score`)",
    "__set_feedback__": "set feedback written by training.score_sets (`ricl score --sets`)",
}


class FeedbackError(RiclError, ValueError):
    """A feedback file is unusable: empty, corrupted, or inconsistent with the corpus."""


@dataclass(frozen=True)
class FeedbackRecord:
    """The LM's verdict on one training query's candidates, in retrieval order."""

    query_id: str
    query: str
    answer: str
    candidates: tuple[str, ...]
    retriever_scores: tuple[float, ...]
    lm_scores: tuple[float, ...]
    zero_shot: float

    def to_dict(self) -> dict[str, Any]:
        return {**query_fields(self), "lm_scores": [round(float(s), 6) for s in self.lm_scores],
                "zero_shot": round(float(self.zero_shot), 6)}

    @classmethod
    def from_dict(cls, line: Mapping[str, Any], where: str) -> FeedbackRecord:
        record = parse_line(lambda: cls(
            query_id=str(line["query_id"]), query=str(line["query"]), answer=line["answer"],
            candidates=tuple(str(c) for c in line["candidates"]),
            retriever_scores=tuple(float(s) for s in line["retriever_scores"]),
            lm_scores=tuple(float(s) for s in line["lm_scores"]),
            zero_shot=float(line["zero_shot"]),
        ), where, "training.score_candidates")
        if not record.candidates:
            raise FeedbackError(f"{where}: query {record.query_id!r} has no candidates.")
        if not len(record.candidates) == len(record.lm_scores) == len(record.retriever_scores):
            raise FeedbackError(f"{where}: query {record.query_id!r} has {len(record.candidates)} "
                                f"candidates but {len(record.lm_scores)} LM scores and "
                                f"{len(record.retriever_scores)} retriever scores.")
        if not all(np.isfinite(record.lm_scores)):
            raise FeedbackError(f"{where}: query {record.query_id!r} has a non-finite LM score.")
        return record


def query_fields(record: Any) -> dict[str, Any]:
    """The fields every kind of feedback line starts with: the query and its candidates."""
    return {"query_id": record.query_id, "query": record.query, "answer": record.answer,
            "candidates": list(record.candidates),
            "retriever_scores": [round(float(s), 6) for s in record.retriever_scores]}


def parse_line(build: Callable[[], Any], where: str, writer: str) -> Any:
    """The record ``build()`` makes of a file's line, with the checks every kind shares:
    a missing field or a value of the wrong type, and an answer to score."""
    try:
        record = build()
    except KeyError as exc:
        raise FeedbackError(f"{where} lacks the field {exc.args[0]!r}. Rewrite the file with "
                            f"{writer}.") from None
    except (TypeError, ValueError) as exc:
        raise FeedbackError(f"{where} holds a value of the wrong type ({exc}).") from None
    if not isinstance(record.answer, str) or not record.answer.strip():
        raise FeedbackError(f"{where}: query {record.query_id!r} has no answer; feedback needs "
                            "the answer the LM was scored on.")
    return record


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class FeedbackKind:
    """One kind of feedback file: its header key (a key of ``FILE_KINDS``), the record
    class of its lines (``from_dict``/``to_dict``/``query_id``), and its writer."""

    header_key: str
    record: type
    writer: str  # what the messages tell a user to run


PER_DEMO = FeedbackKind(HEADER_KEY, FeedbackRecord, "training.score_candidates")


def read_feedback(path: str | Path) -> tuple[dict[str, Any], list[FeedbackRecord]]:
    """The header and the records of a feedback file; a half-written last line is ignored."""
    return read_feedback_file(path, PER_DEMO)


def read_feedback_file(path: str | Path, kind: FeedbackKind) -> tuple[dict[str, Any], list[Any]]:
    """The header and records of a ``kind`` feedback file (see ``read_feedback``)."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(f"No feedback file at {path}. Write one with {kind.writer}.")
    header, records = _parse(_open(path).rows, path, kind)
    if header is None:
        raise FeedbackError(f"{path} is empty: it holds no feedback header. Rerun {kind.writer}.")
    if not records:
        raise FeedbackError(f"{path} holds no scored queries yet. Run (or resume) {kind.writer}.")
    return header, records


def _open(path: Path) -> JsonlStore:
    """The file as a store keyed by query id; damage before its last line is an error."""
    try:
        return JsonlStore(path, key=lambda line: line.get("query_id"))
    except DataError as exc:
        raise FeedbackError(str(exc)) from None


def _parse(lines: Sequence[dict[str, Any]], path: Path, kind: FeedbackKind
           ) -> tuple[dict[str, Any] | None, list[Any]]:
    """Header and records of the file's whole lines (a line cut by a kill is not among them)."""
    if not lines:
        return None, []
    _check_kind(lines[0], path, kind)
    return lines[0][kind.header_key], [kind.record.from_dict(line, f"{path}:{number}")
                                       for number, line in enumerate(lines[1:], start=2)]


def _check_kind(first: Mapping[str, Any], path: Path, kind: FeedbackKind) -> None:
    if kind.header_key in first:
        return
    other = next((key for key in FILE_KINDS if key in first), None)
    if other is None:
        raise FeedbackError(f"{path} does not start with a feedback header: it was not "
                            f"written by {kind.writer}.")
    raise FeedbackError(f"{path} holds {FILE_KINDS[other]}, not {FILE_KINDS[kind.header_key]}. "
                        "Pass the file of the right kind (set feedback trains loss='ceil'; "
                        "per-demo feedback trains the other losses), or another out_path.")


class FeedbackFile:
    """Appends chunks of records to a feedback file, each durable before the next starts."""

    def __init__(self, path: str | Path, settings: dict[str, Any], resume: bool = True,
                 kind: FeedbackKind = PER_DEMO):
        self.path = Path(path)
        _check_feedback_target(self.path, kind)
        if not resume:
            self.path.unlink(missing_ok=True)
        self._store = _open(self.path)
        header, records = _parse(self._store.rows, self.path, kind)
        if header is not None and header != settings:
            changed = sorted(k for k in set(header) | set(settings) if header.get(k) != settings.get(k))
            raise ConfigError(
                f"{self.path} holds feedback scored with other settings ({', '.join(changed)} differ). "
                "Pass another out_path, or resume=False to start it over.")
        if header is None:
            self._store.append([{kind.header_key: settings}])
        elif records:
            log.info("Resuming %s: %d queries already scored.", self.path, len(records))

    @property
    def done(self):
        """The ids of the queries already scored."""
        return self._store.keys()

    def append(self, records: Sequence[Any]) -> None:
        self._store.append(record.to_dict() for record in records)


def _check_feedback_target(path: Path, kind: FeedbackKind = PER_DEMO) -> None:
    """Starting a feedback file over (``resume=False``) truncates it: refuse unless what
    is there is a feedback file of this kind (or nothing). A file of another kind is
    refused either way: hours of scoring are not resumed, or wiped, as something else."""
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise OverwriteError(f"{path} is a directory, not a feedback file. Pass a file path "
                             "such as runs/feedback.jsonl.")
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as handle:
        first = handle.readline(1 << 20)
    try:
        line = json.loads(first.decode("utf-8"))
        own = isinstance(line, dict) and any(key in line for key in FILE_KINDS)
    except (UnicodeDecodeError, ValueError, TypeError):
        own = False
    if not own:
        raise OverwriteError(f"{path} exists and is not a feedback file written by "
                             f"{kind.writer}; ricl will not write over it. Pick another "
                             "out_path.")
    if kind.header_key not in line:
        other = next(key for key in FILE_KINDS if key in line)
        raise ConfigError(f"{path} holds {FILE_KINDS[other]}, not {FILE_KINDS[kind.header_key]}: "
                          "ricl will neither resume nor overwrite it as that. Pass another out_path.")


# --------------------------------------------------------------------------- scoring


def score_candidates(
    corpus: Corpus,
    queries: Corpus | Iterable[Mapping[str, Any]],
    template: str | Template,
    out_path: str | Path,
    retriever: Any = "bm25",
    n_candidates: int = 20,
    lm: Any = None,
    batch_size: int = 16,
    chunk_size: int = 512,
    resume: bool = True,
    progress: bool = True,
    dtype: str = "float32",
) -> Path:
    """Score every query's retrieved candidates with the LM and write the feedback file.

    Args:
        corpus: the demonstration pool candidates come from.
        queries: training queries with their answers: a Corpus, or records with
            the corpus's input and output fields (and an ``id``, else one is
            derived from content), or a list of ``ricl.Example``. They may be the corpus itself: a query is
            never its own candidate.
        template: how a demo and the query are rendered (``ricl.Template`` or
            a format string such as ``"Question: {input}\\nAnswer type: {output}"``).
        out_path: the feedback JSONL file.
        retriever: "bm25", "dense", a model directory, or a Retriever (indexed
            on ``corpus`` here unless it already is).
        n_candidates: L, candidates per query.
        lm: any ``ricl.LM``, or what ``TransformersLM`` loads in ``dtype``
            (``"float32"`` or ``"bfloat16"``, about 3x faster on CPUs with AMX): None
            for the default SmolLM2-135M, a packaged model's name ("gemma3-270m"),
            or a model directory. A name is loaded only when there is work to do.
        batch_size: rows per forward pass of an LM loaded here.
        chunk_size: queries per durable chunk. Candidate KV caches are shared
            within a chunk only, so queries are ordered to keep those that share
            candidates together (``order_by_shared_candidates``): the file lists
            queries in that order, not the input order.
        resume: continue a file written with the same settings (else start over).
        progress: a tqdm bar in pairs/s.

    Returns the path of the feedback file.
    """
    template, queries, retriever, described = prepare_scoring(
        corpus, queries, template, retriever, n_candidates, dtype,
        {"n_candidates": n_candidates, "chunk_size": chunk_size, "batch_size": batch_size})
    settings = {
        "version": FEEDBACK_VERSION,
        **scoring_settings(corpus, template, described, n_candidates, lm, dtype),
        "signal": "log p(answer | demo + separator + query)",
        "shared_prefix_ends_with": query_head(template),
    }
    out = FeedbackFile(out_path, settings, resume=resume)
    if all(query.id in out.done for query in queries):
        return out.path  # finished before: nothing to index, retrieve or load
    rows_of, scores_of = _retrieve(queries, corpus, retriever, n_candidates)

    def score(chunk, rows, scores, lm, advance):
        return _score_chunk(chunk, rows, scores, corpus, template, lm, advance)

    score_in_chunks(out, queries, rows_of, scores_of, score, [len(rows) + 1 for rows in rows_of],
                    chunk_size, lm, batch_size, dtype, progress, "LM feedback")
    return out.path


def prepare_scoring(corpus: Corpus, queries: Any, template: str | Template, retriever: Any,
                    n_candidates: int, dtype: str, counts: Mapping[str, Any]
                    ) -> tuple[Template, list[Example], Any, str]:
    """The checks and set-up every feedback writer shares: positive ``counts``, a known
    dtype, a template that fits the corpus, the queries as Examples, the retriever
    (indexed by ``_retrieve`` when there is work), and how the file's header names it."""
    from retrievers import make_retriever
    from ricl.models import check_dtype

    if not isinstance(corpus, Corpus):
        raise ConfigError(f"corpus must be a ricl.Corpus, not {type(corpus).__name__}.")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r}: must be a positive integer.")
    check_dtype(dtype)
    if n_candidates > len(corpus):
        raise ConfigError(f"n_candidates={n_candidates} is larger than the corpus ({len(corpus)} "
                          "examples). Ask for fewer candidates.")
    template = as_template(template, corpus.output_name)
    template.check_fields(set(corpus.input_names) | {"input", "output", corpus.output_name})
    queries = list(_as_queries(queries, corpus))
    spec, retriever = retriever, make_retriever(retriever)
    return template, queries, retriever, _describe_retriever(spec, retriever)


def scoring_settings(corpus: Corpus, template: Template, retriever: str, n_candidates: int,
                     lm: Any, dtype: str) -> dict[str, Any]:
    """The header fields every feedback file holds: what its numbers depend on."""
    return {
        "corpus_fingerprint": corpus.fingerprint(),
        "retriever": retriever,
        "n_candidates": int(n_candidates),
        "template": template.text,
        "separator": template.separator,
        "instructions": template.instructions,
        "lm": _describe_lm(lm, dtype),
    }


def score_in_chunks(out: FeedbackFile, queries: list[Example], rows_of: list[list[int]],
                    scores_of: list[list[float]], score: Callable[..., list[Any]],
                    prompts_per_query: Sequence[int], chunk_size: int, lm: Any, batch_size: int,
                    dtype: str, progress: bool, desc: str) -> None:
    """Score the queries ``out`` lacks, a durable chunk at a time, in shared-candidate order.

    ``score(queries, rows_of, scores_of, lm, advance)`` returns one record per query
    of the chunk and calls ``advance(n)`` as it scores n prompts. A partly written
    chunk is scored whole again, so that its numbers come from the same batches as
    in an uninterrupted run; only its missing lines are written. The LM is loaded
    (when it is a name) only if there is work to do.
    """
    order = order_by_shared_candidates(rows_of)
    chunks = [order[start:start + chunk_size] for start in range(0, len(order), chunk_size)]
    todo = [chunk for chunk in chunks if any(queries[i].id not in out.done for i in chunk)]
    n_prompts = sum(prompts_per_query[i] for chunk in todo for i in chunk)
    if (lm is None or isinstance(lm, (str, Path))) and todo:
        lm = TransformersLM(lm, batch_size=batch_size, dtype=dtype)
    bar = tqdm(total=n_prompts, unit="prompt", desc=desc, disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for chunk in todo:
            records = score([queries[i] for i in chunk], [rows_of[i] for i in chunk],
                            [scores_of[i] for i in chunk], lm, bar.update)
            out.append([r for r in records if r.query_id not in out.done])
    finally:
        bar.close()


def _retrieve(queries: list[Example], corpus: Corpus, retriever: Any,
              n_candidates: int) -> tuple[list[list[int]], list[list[float]]]:
    """Corpus rows and retriever scores of every query's candidates, best first, never the
    query; the retriever is indexed on ``corpus`` first unless it already is."""
    if getattr(retriever, "corpus", None) is not corpus:
        retriever.index(corpus)
    found = retriever.search([q.text for q in queries], n_candidates + 1, exclude_self=True)
    rows_of, scores_of = [], []
    for query, rows, scores in zip(queries, found.rows, found.scores):
        # exclude_self drops the query's text; a corpus row with the query's id goes too.
        keep = [j for j, row in enumerate(rows) if corpus[int(row)].id != query.id][:n_candidates]
        rows_of.append([int(rows[j]) for j in keep])
        scores_of.append([float(scores[j]) for j in keep])
    short = sum(len(rows) < n_candidates for rows in rows_of)
    if short:
        log.warning("%d queries got fewer than %d candidates (the corpus has too few other "
                    "examples).", short, n_candidates)
    return rows_of, scores_of


def order_by_shared_candidates(rows_of: Sequence[Sequence[int]]) -> list[int]:
    """Query indices in breadth-first order over "shares a candidate", best candidates first.

    Candidates are reused only within a chunk, so queries that retrieved the
    same demos should sit in the same chunk. On TREC (2,000 queries x 20 BM25
    candidates, 5.9k demos) this raises the queries sharing each computed prefix
    in chunks of 512 from 2.5 (input order) to 3.0. Deterministic.
    """
    queries_of: dict[int, list[int]] = {}
    for i, rows in enumerate(rows_of):
        for row in rows:
            queries_of.setdefault(row, []).append(i)
    seen = [False] * len(rows_of)
    order: list[int] = []
    for start in range(len(rows_of)):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        while queue:
            i = queue.popleft()
            order.append(i)
            for row in rows_of[i]:
                for other in queries_of[row]:
                    if not seen[other]:
                        seen[other] = True
                        queue.append(other)
    return order


def _score_chunk(chunk: list[Example], rows_of: list[list[int]], scores_of: list[list[float]],
                 corpus: Corpus, template: Template, lm: Any,
                 advance: Callable[[int], None]) -> list[FeedbackRecord]:
    used = sorted({row for rows in rows_of for row in rows})
    slot = {row: k for k, row in enumerate(used)}
    prefixes, query_suffixes = split_prompts(template, [corpus[row] for row in used], chunk,
                                             corpus.output_name)
    query_texts = [template.render_query(q.fields(corpus.output_name)) for q in chunk]
    answers = [(template.answer_prefix or " ") + q.output for q in chunk]
    pair_query = [i for i, rows in enumerate(rows_of) for _ in rows]
    pair_prefix = [slot[row] for rows in rows_of for row in rows]
    suffixes = [query_suffixes[i] for i in pair_query]
    continuations = [answers[i] for i in pair_query]

    if isinstance(lm, TransformersLM):
        pair_scores = score_shared_prefixes(lm, prefixes, suffixes, continuations, pair_prefix,
                                            on_scored=advance)
    else:
        pair_scores = _score_plainly(lm, [prefixes[p] + s for p, s in zip(pair_prefix, suffixes)],
                                     continuations, advance)
    zero_shot = np.asarray(lm.score([template.join([], text) for text in query_texts], answers))
    advance(len(chunk))

    records, start = [], 0
    for query, rows, scores, zs in zip(chunk, rows_of, scores_of, zero_shot):
        lm_scores = pair_scores[start:start + len(rows)]
        start += len(rows)
        records.append(FeedbackRecord(
            query_id=query.id, query=query.text, answer=query.output,
            candidates=tuple(corpus[row].id for row in rows), retriever_scores=tuple(scores),
            lm_scores=tuple(float(s) for s in lm_scores), zero_shot=float(zs)))
    return records


def split_prompts(template: Template, demos: Sequence[Example], queries: Sequence[Example],
                  output_name: str) -> tuple[list[str], list[str]]:
    """Shared prefixes (one per demo) and query suffixes: ``prefix + suffix`` is the one-demo prompt.

    The cut sits after the template's literal text before the query's first
    field (see the module docstring for why there).
    """
    head = query_head(template)
    query_texts = [template.render_query(q.fields(output_name)) for q in queries]
    if not all(text.startswith(head) for text in query_texts):
        head = ""
    prefixes = [template.join([template.render_demo(d.fields(output_name))], "") + head for d in demos]
    return prefixes, [text[len(head):] for text in query_texts]


def query_head(template: Template) -> str:
    """The template's literal text before its first field, trailing spaces left to the suffix."""
    literal, field, _, _ = next(iter(string.Formatter().parse(template.text)), ("", None, "", None))
    return literal.rstrip(" ") if field is not None else ""


def _score_plainly(lm: Any, prompts: list[str], continuations: list[str],
                   advance: Callable[[int], None], step: int = 256) -> np.ndarray:
    """Any ``ricl.LM``: whole prompts through ``score``, a slice at a time for the progress bar."""
    scores = []
    for start in range(0, len(prompts), step):
        scores.append(np.asarray(lm.score(prompts[start:start + step],
                                          continuations[start:start + step]), dtype=float))
        advance(len(scores[-1]))
    return np.concatenate(scores) if scores else np.zeros(0)


def _as_queries(queries: Any, corpus: Corpus) -> Corpus:
    if isinstance(queries, Corpus):
        missing = set(corpus.input_names) - set(queries.input_names)
        if missing:
            raise ConfigError(f"The queries lack the corpus's input field(s) {sorted(missing)}.")
        return queries
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Iterable):
        raise ConfigError("queries must be a ricl.Corpus or a list of records (dicts with the "
                          "corpus's input fields and its answer field).")
    records = list(queries)
    if not records:
        raise CorpusError("No training queries: pass at least one record with its answer.")
    if all(isinstance(record, Example) for record in records):
        return Corpus(records, input_names=corpus.input_names, output_name=corpus.output_name,
                      labels=corpus.labels)
    names = list(corpus.input_names)
    return Corpus.from_records(records, input=names[0] if len(names) == 1 else names,
                               output=corpus.output_name, labels=corpus.labels, source="query")


def _describe_retriever(spec: Any, retriever: Any) -> str:
    if isinstance(spec, (str, Path)):
        return str(spec)
    model = getattr(retriever, "model_spec", None)
    name = f"{retriever.kind}:{model}" if isinstance(model, (str, Path)) else str(retriever.kind)
    # A multi-task retriever finds other candidates under each task's instruction.
    instruction = retriever.query_instruction() if hasattr(retriever, "query_instruction") else None
    return f"{name} (query prompt {instruction!r})" if instruction else name


def _describe_lm(lm: Any, dtype: str = "float32") -> str:
    if lm is None or isinstance(lm, (str, Path)):
        from ricl.models import DEFAULT_LM_NAME, PACKAGED_LMS

        # The name an LM loaded from this spec will report, so that the file a name
        # started is resumed by the loaded model's own description and vice versa.
        spec = PACKAGED_LMS.get(lm) if isinstance(lm, str) else None
        name = (DEFAULT_LM_NAME if lm is None else spec.folder if spec
                else Path(lm).expanduser().resolve().name)
        return name if dtype == "float32" else f"{name} ({dtype})"
    model = getattr(lm, "model", None)
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name:
        return type(lm).__name__
    name = Path(str(name)).name or str(name)
    from ricl.models import weights_dtype

    dtype = weights_dtype(model) or "float32"
    # A bfloat16 model gives other numbers: its feedback must not resume a float32 file.
    return name if dtype == "float32" else f"{name} ({dtype})"
