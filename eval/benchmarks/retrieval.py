"""`python -m eval.benchmarks.retrieval`: how fast ricl retrieves and builds prompts,
held against the per-query loops its peers run, in one process on one machine.

1. BM25 top-10: ricl's batched ``BM25Retriever.search`` (term-count postings, a sparse matrix)
   against OpenICL's loop (``rank_bm25.BM25Okapi.get_scores`` + argsort per query),
   both on ricl's tokenizer. Only querying is timed; index builds are reported apart.
2. k-shot prompts: ricl's ``PromptBuilder.build_many`` (query encoding included)
   against LangChain's ``SemanticSimilarityExampleSelector`` /
   ``MaxMarginalRelevanceExampleSelector`` inside a ``FewShotPromptTemplate`` over an
   ``InMemoryVectorStore``, with the same SentenceTransformer instance. The pool is
   embedded once, before any clock starts, and both sides reuse those vectors.

The peers are slow, so they run on the first ``--peer-queries`` queries and are
compared by queries per second. Ratios are what count: other jobs may share the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WARMUP_QUERIES = 8
AGREEMENT_QUERIES = 20


@dataclass(frozen=True)
class Timing:
    """One timed method: ``queries`` answered in ``seconds``."""

    task: str
    method: str
    queries: int
    seconds: float
    is_ricl: bool = False

    @property
    def per_second(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class Setup:
    """Untimed-for-throughput work, reported separately (index builds, pool embedding)."""

    what: str
    seconds: float
    note: str = ""


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


# --------------------------------------------------------------------------- pool vectors


def pool_embeddings(retriever, corpus, cache_dir: Path | None) -> tuple[np.ndarray, float, bool]:
    """Unit vectors of the pool, computed once and cached by corpus and model.

    Returns the vectors, the seconds spent (encoding or loading) and whether the
    cache answered.
    """
    from ricl.models import embedder_path

    model = str(retriever.model_spec or embedder_path())
    key = hashlib.sha1(f"{corpus.fingerprint()}|{Path(model).resolve()}".encode()).hexdigest()[:16]
    path = None if cache_dir is None else Path(cache_dir) / f"pool-{key}.npy"
    started = time.perf_counter()
    if path is not None and path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(corpus):
            return vectors, time.perf_counter() - started, True
        log.warning("Ignoring %s: %d vectors for %d texts.", path, vectors.shape[0], len(corpus))
    vectors = retriever.encode(corpus.texts(), progress=True)
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors, seconds, False


# --------------------------------------------------------------------------- 1. BM25


def bench_bm25(corpus, queries: list[str], peer_queries: int, n: int = 10):
    """ricl's batched BM25 search against OpenICL's rank_bm25 loop."""
    from rank_bm25 import BM25Okapi
    from tqdm.auto import tqdm

    from retrievers import BM25Retriever

    # "robertson" is the variant BM25Okapi computes; k1=1.5, b=0.75 on both sides.
    retriever = BM25Retriever(method="robertson")
    _, ricl_index = timed(lambda: retriever.index(corpus))

    def okapi_index():
        tokens = [retriever.tokenize(text) or [""] for text in corpus.texts()]
        return BM25Okapi(tokens)

    okapi, peer_index = timed(okapi_index)

    retriever.search(queries[:WARMUP_QUERIES], n=n)
    found, ricl_seconds = timed(lambda: retriever.search(queries, n=n))

    subset = queries[:peer_queries]
    peer_tops: list[np.ndarray] = []
    started = time.perf_counter()
    for query in tqdm(subset, desc="rank_bm25 loop", unit="query"):
        # OpenICL's BM25Retriever.retrieve, per query
        scores = okapi.get_scores(retriever.tokenize(query))
        peer_tops.append(np.argsort(scores)[::-1][:n])
    peer_seconds = time.perf_counter() - started

    overlap = np.mean([len(set(found.rows[i].tolist()) & set(top.tolist())) / n
                       for i, top in enumerate(peer_tops)])
    task = f"BM25 top-{n}"
    timings = [
        Timing(task, "ricl `BM25Retriever.search` (one sparse matrix product per 256 queries)", len(queries),
               ricl_seconds, is_ricl=True),
        Timing(task, "OpenICL-style loop: `rank_bm25.BM25Okapi.get_scores` + argsort per query"
               f" (first {len(subset)} queries)", len(subset), peer_seconds),
    ]
    setups = [
        Setup("ricl `BM25Retriever.index` (tokenize + term counts)", ricl_index),
        Setup("rank_bm25 `BM25Okapi(...)` (tokenize + index)", peer_index),
    ]
    why = "" if overlap == 1 else " (ties, and rank_bm25's epsilon floor for negative IDF)"
    notes = [f"BM25: ricl and rank_bm25 share {overlap:.1%} of their top-{n} rows over the "
             f"first {len(subset)} queries{why}."]
    return timings, setups, notes


# --------------------------------------------------------------------------- 2. prompts


def langchain_embeddings(model):
    """A LangChain ``Embeddings`` over an already loaded SentenceTransformer."""
    from langchain_core.embeddings import Embeddings

    class SentenceTransformerEmbeddings(Embeddings):
        def __init__(self, encoder, batch_size: int = 64):
            self.encoder, self.batch_size = encoder, batch_size

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.encoder.encode(list(texts), batch_size=self.batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.encoder.encode(text, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False).tolist()

    return SentenceTransformerEmbeddings(model)


def langchain_store(embeddings, pool: Sequence[dict], vectors: np.ndarray, as_lists: bool):
    """An ``InMemoryVectorStore`` holding precomputed pool vectors.

    ``add_documents`` always calls ``embed_documents``, so the store dict is filled
    directly with the entries it would write. ``as_lists``: store ``list[float]``, what
    ``embed_documents`` returns and so what ``from_examples`` users get; otherwise
    numpy rows, the fastest thing the store accepts.
    """
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(embeddings)
    rows = vectors.tolist() if as_lists else list(vectors)
    for record, vector in zip(pool, rows):
        store.store[record["id"]] = {
            "id": record["id"], "vector": vector, "text": record["text"],
            "metadata": {"id": record["id"], "text": record["text"], "label": record["label"]},
        }
    return store


def langchain_prompt(selector_name: str, store, k: int, fetch_k: int, template: str):
    """The few-shot prompt a LangChain user would write, with its example selector."""
    from langchain_core.example_selectors import (MaxMarginalRelevanceExampleSelector,
                                                  SemanticSimilarityExampleSelector)
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    from ricl.template import as_template

    if selector_name == "similarity":
        selector = SemanticSimilarityExampleSelector(vectorstore=store, k=k, input_keys=["text"])
    else:
        selector = MaxMarginalRelevanceExampleSelector(vectorstore=store, k=k, fetch_k=fetch_k,
                                                       input_keys=["text"])
    ricl_template = as_template(template, "label")
    to_langchain = {"{input}": "{text}", "{" + ricl_template.output_slot + "}": "{label}"}
    demo, query = ricl_template.text, ricl_template.query_prefix
    for ours, theirs in to_langchain.items():
        demo, query = demo.replace(ours, theirs), query.replace(ours, theirs)
    prompt = FewShotPromptTemplate(example_selector=selector,
                                   example_prompt=PromptTemplate.from_template(demo),
                                   suffix=query, input_variables=["text"],
                                   example_separator=ricl_template.separator)
    return prompt, selector


def bench_prompts(suite, corpus, queries: list[str], peer_queries: int, k: int,
                  cache_dir: Path | None):
    """ricl's batched prompt building against LangChain's per-query example selectors."""
    from tqdm.auto import tqdm

    from retrievers import DenseRetriever
    from ricl.builder import PromptBuilder

    dense = DenseRetriever()
    vectors, embed_seconds, cached = pool_embeddings(dense, corpus, cache_dir)
    _, ricl_index = timed(lambda: dense.index(corpus, embeddings=vectors))
    embeddings = langchain_embeddings(dense.encoder)
    stores, setups = {}, [
        Setup(f"pool embedding, MiniLM-L6 ({len(corpus)} texts), shared by both sides",
              embed_seconds, "loaded from cache" if cached else "encoded now"),
        Setup("ricl `DenseRetriever.index(corpus, embeddings=...)`", ricl_index),
    ]
    for kind, as_lists in (("list[float] vectors", True), ("numpy-row vectors", False)):
        stores[kind], seconds = timed(partial(langchain_store, embeddings, suite.pool, vectors,
                                              as_lists))
        setups.append(Setup(f"LangChain `InMemoryVectorStore`, {kind}, filled from the "
                            "precomputed vectors", seconds))

    subset = queries[:peer_queries]
    timings, notes = [], [
        "LangChain stores: \"list[float] vectors\" is the store `from_examples` / "
        "`add_documents` fill (an `Embeddings` returns lists), turned back into a float64 "
        "array on every query; \"numpy-row vectors\" puts float32 rows in the store "
        "directly, the fastest it accepts. Both scan the whole pool per query.",
    ]
    for selector_name in ("similarity", "mmr"):
        builder = partial(PromptBuilder, corpus, retriever=dense, selector=selector_name, k=k,
                          template=suite.template)
        builder().build_many(queries[:WARMUP_QUERIES])  # loads the tokenizer, warms torch
        ricl_builder = builder()
        fetch_k = ricl_builder.selector.n_candidates(k)
        prompts, ricl_seconds = timed(partial(ricl_builder.build_many, queries, progress=True))
        task = f"{k}-shot prompts, {selector_name}"
        detail = "" if selector_name == "similarity" else f", MMR over top-{fetch_k}, λ=0.5"
        timings.append(Timing(task, f"ricl `PromptBuilder.build_many` (batched{detail})",
                              len(queries), ricl_seconds, is_ricl=True))
        class_name = ("SemanticSimilarityExampleSelector" if selector_name == "similarity"
                      else "MaxMarginalRelevanceExampleSelector")
        for kind, store in stores.items():
            prompt, selector = langchain_prompt(selector_name, store, k, fetch_k, suite.template)
            prompt.format(text=queries[0])
            progress = tqdm(subset, desc=f"LangChain {selector_name}, {kind}", unit="query")
            started = time.perf_counter()
            for query in progress:
                prompt.format(text=query)  # select_examples (embeds the query) + render
            seconds = time.perf_counter() - started
            timings.append(Timing(task, f"LangChain `{class_name}` + `FewShotPromptTemplate`, "
                                  f"{kind}{detail} (first {len(subset)} queries)",
                                  len(subset), seconds))
        # Untimed: do both sides choose the same demos? (the selector of the last store)
        checked = subset[:AGREEMENT_QUERIES]
        same = [len({e["id"] for e in selector.select_examples({"text": q})} &
                    set(prompts[i].demo_ids)) / k for i, q in enumerate(checked)]
        notes.append(f"{selector_name}: ricl and LangChain pick {np.mean(same):.1%} of the same "
                     f"demos over the first {len(checked)} queries.")
    notes += selector_latency(dense, queries, k)
    return timings, setups, notes


def selector_latency(dense, queries: list[str], k: int, n: int = 100) -> list[str]:
    """Per-query cost of the diversity selectors alone, over top-``n`` candidates."""
    from ricl.selectors import CandidateView, DPPSelector, MMRSelector

    found = dense.search(queries, n)
    views = [CandidateView(q, r, sc, dense, e)
             for q, r, sc, e in zip(queries, found.rows, found.scores, found.excluded)]
    lines = []
    for selector in (DPPSelector(n=n), MMRSelector(n=n)):
        selector.select(views[0], k)
        started = time.perf_counter()
        for view in views:
            selector.select(view, k)
        per_query = (time.perf_counter() - started) / len(views) * 1e3
        lines.append(f"selection alone, {selector.name} over {n} candidates, k={k}: "
                     f"{per_query:.2f} ms per query (kernel included; {len(views)} queries).")
    return lines


# --------------------------------------------------------------------------- report


def machine_header(suite_name: str, pool: int, queries: int, bm25_peer: int,
                   prompt_peer: int) -> list[str]:
    import torch

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = ", ".join(f"{name} {package_version(name)}" for name in
                         ("bm25s", "rank-bm25", "langchain-core", "sentence-transformers",
                          "torch", "numpy"))
    return [
        "# ricl retrieval and prompt-building throughput",
        "",
        f"- data: `{suite_name}`, pool = {pool} texts, {queries} queries "
        f"(the test split); peers timed on the first {bm25_peer} (BM25) and "
        f"{prompt_peer} (prompts)",
        f"- machine: {cores} CPU cores ({usable} usable), torch threads "
        f"{torch.get_num_threads()}, load average at start {load}; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        f"- versions: {versions}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
    ]


def package_version(name: str) -> str:
    """The installed version of a distribution, or "absent"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def format_report(header: list[str], timings: list[Timing], setups: list[Setup],
                  notes: list[str], wall: float) -> str:
    lines = header + ["| task | method | queries | seconds | queries/s | ratio vs peer |",
                      "|---|---|---|---|---|---|"]
    ricl_speed = {t.task: t.per_second for t in timings if t.is_ricl}
    for task in dict.fromkeys(t.task for t in timings):
        rows = [t for t in timings if t.task == task]
        peers = [t for t in rows if not t.is_ricl]
        fastest_peer = max((t.per_second for t in peers), default=None)
        for t in rows:
            if t.is_ricl:
                ratio = ("—" if fastest_peer is None else
                         f"**{t.per_second / fastest_peer:,.1f}×** (vs fastest peer)")
            else:
                ratio = f"ricl {ricl_speed[task] / t.per_second:,.1f}× faster"
            lines.append(f"| {task} | {t.method} | {t.queries} | {t.seconds:.2f} | "
                         f"{t.per_second:,.1f} | {ratio} |")
    lines += ["", "Set-up, not counted above:", "", "| step | seconds | note |", "|---|---|---|"]
    lines += [f"| {s.what} | {s.seconds:.2f} | {s.note} |" for s in setups]
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes] + [
        "- ricl's prompts also count tokens with the SmolLM2 tokenizer (`Prompt.token_count`); "
        "LangChain's do not.",
        f"- Wall time of the whole run: {wall:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def run(suite_name: str = "sst2", n_queries: int = 1000, peer_queries: int | None = None,
        k: int = 8, cache_dir: Path | None = None) -> str:
    from eval.suites import load_suite
    from ricl.data import Corpus

    started = time.perf_counter()
    suite = load_suite(suite_name, n_test=n_queries, pool_size=None, seed=0, max_words=None)
    corpus = Corpus.from_records(suite.pool, input="text", output="label", labels=suite.labels)
    queries = [record["text"] for record in suite.test]
    bm25_peer = min(peer_queries or 50, len(queries))
    prompt_peer = min(peer_queries or 100, len(queries))
    header = machine_header(suite_name, len(corpus), len(queries), bm25_peer, prompt_peer)
    log.info("%s: %d pool texts, %d queries", suite_name, len(corpus), len(queries))

    timings, setups, notes = bench_bm25(corpus, queries, bm25_peer)
    more = bench_prompts(suite, corpus, queries, prompt_peer, k, cache_dir)
    timings, setups, notes = timings + more[0], setups + more[1], notes + more[2]
    return format_report(header, timings, setups, notes, time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    from ricl.models import ricl_home

    parser = argparse.ArgumentParser(prog="python -m eval.benchmarks.retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="sst2", help="packaged suite (default: sst2)")
    parser.add_argument("--queries", type=int, default=1000,
                        help="queries for ricl: the suite's first N test items (default: 1000)")
    parser.add_argument("--peer-queries", type=int, default=None,
                        help="queries for the slow peers (default: 50 for rank_bm25, "
                             "100 for LangChain)")
    parser.add_argument("--k", type=int, default=8, help="demonstrations per prompt (default: 8)")
    parser.add_argument("--cache-dir", type=Path, default=ricl_home() / "bench",
                        help="where pool embeddings are cached (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="embed the pool afresh")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.queries <= WARMUP_QUERIES or (args.peer_queries is not None and args.peer_queries < 1):
        parser.error(f"--queries must exceed {WARMUP_QUERIES} and --peer-queries be positive.")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args.suite, args.queries, args.peer_queries, args.k,
                 None if args.no_cache else args.cache_dir)
    sys.stdout.write("\n" + report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
