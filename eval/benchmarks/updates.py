"""`python -m eval.benchmarks.updates`: changing an index in place against rebuilding it.

    python -m eval.benchmarks.updates [--n 100000] [--batch 100] [--repeats 3] \
        [--retrievers bm25 dense-exact dense-chroma dense-server] [--out FILE.md]

The corpus is the first ``--n`` distinct real texts of the scale benchmark's fixed order
(``eval.benchmarks.scale.assemble``: suite records, then sentences of real passages);
the records that are added are the texts that follow them in that order, so they are
new to the index and of the same kind.

Per retriever (BM25; dense exact numpy; dense on embedded Chroma; dense on a Chroma
server started on loopback), all in one run, one process:

- **rebuild**: index the ``--n`` texts from scratch, then answer one query (the time
  until the index serves again). For BM25 that is ``BM25Retriever().index(corpus)``.
  For the dense backends a fair rebuild embeds every text again: the embedding is
  measured once in this run, with the same call ``index()`` makes
  (``DenseRetriever.encode``: MiniLM-L6, float32, batch 64, on all ``--n`` texts), and
  added to each backend's own build from those vectors (``index(corpus,
  embeddings=...)``, the backend's share: a numpy array, an HNSW graph, a server
  collection). The three backends embed identically, so embedding three times would
  only triple the wait.
- **add**: ``add()`` ``--batch`` new records (their embedding included), then answer
  one query.
- **remove**: ``remove()`` ``--batch`` ids spread evenly over the corpus, then answer
  one query.

Add and remove are timed ``--repeats`` times on the same growing index (fresh records,
other ids each time); the table shows medians. After the last repeat, the changed index
is checked against one built from scratch on the same final corpus (the dense ones from
the same vectors): identical top-10 rows for held-out queries. Other jobs may share the
CPU: the header records the load, and ratios matter more than absolute numbers. The pool
vectors are kept beside the cached texts; ``--reuse-embeddings`` reads them instead of
embedding all texts again, and times the embedding in the run on an evenly spread sample
(``--embed-sample``), scaled to the whole; the report says which was done.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.benchmarks.retrieval import package_version, timed

log = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense-exact", "dense-chroma", "dense-server")
NAMES = {"bm25": "BM25", "dense-exact": "dense, exact (numpy)",
         "dense-chroma": "dense, Chroma embedded (HNSW)",
         "dense-server": "dense, Chroma server (loopback)"}
CHECK_QUERIES = 50


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def records_of(assembly, start: int, stop: int) -> list[dict[str, str]]:
    return [{"id": rid, "text": text, "label": label}
            for rid, text, label, _ in assembly.records[start:stop]]


def spread_ids(corpus, count: int, offset: int) -> list[str]:
    """``count`` ids evenly spread over the corpus, shifted by ``offset`` rows."""
    step = max(len(corpus) // count, 1)
    return [corpus[(offset + i * step) % len(corpus)].id for i in range(count)]


def new_retriever(name: str, server_url: str | None, collection: str = "bench-updates"):
    from retrievers import BM25Retriever, DenseRetriever

    if name == "bm25":
        return BM25Retriever()
    if name == "dense-server":
        return DenseRetriever(backend="chroma-server", server=f"{server_url}/{collection}")
    return DenseRetriever(backend=name.removeprefix("dense-"))


def measure(name: str, corpus, vectors: np.ndarray | None, embed_seconds: float,
            assembly, n: int, batch: int, repeats: int, query: str,
            server_url: str | None) -> dict[str, Any]:
    """Rebuild, then ``repeats`` adds and removes on that index, each followed by a query."""
    retriever = new_retriever(name, server_url)
    build = (lambda: retriever.index(corpus)) if vectors is None else \
        (lambda: retriever.index(corpus, embeddings=vectors))
    _, build_s = timed(build)
    _, query_s = timed(lambda: retriever.search([query], n=8))
    rebuild_s = build_s + query_s + (embed_seconds if vectors is not None else 0.0)
    adds, removes = [], []
    for repeat in range(repeats):
        new = records_of(assembly, n + repeat * batch, n + (repeat + 1) * batch)
        _, add_s = timed(lambda: (retriever.add(new), retriever.search([query], n=8)))
        gone = spread_ids(retriever.corpus, batch, offset=repeat)
        _, remove_s = timed(lambda: (retriever.remove(gone), retriever.search([query], n=8)))
        adds.append(add_s)
        removes.append(remove_s)
        log.info("%s: rebuild %.1f s, add %.3f s, remove %.3f s", name, rebuild_s, add_s, remove_s)
    return {"retriever": name, "rebuild_s": rebuild_s, "build_s": build_s,
            "embed_s": embed_seconds if vectors is not None else 0.0,
            "add_s": statistics.median(adds), "remove_s": statistics.median(removes),
            "adds": adds, "removes": removes, "size": len(retriever.corpus),
            "_retriever": retriever}


def agreement(name: str, changed, vectors_of: Callable[[list[str]], np.ndarray],
              queries: Sequence[str], server_url: str | None) -> tuple[int, int]:
    """Queries whose top-10 rows the changed index shares with one built from scratch on
    its final corpus (dense: from the same vectors, so only the index is compared)."""
    fresh = new_retriever(name, server_url, collection="bench-check")
    if name == "bm25":
        fresh.index(changed.corpus)
    else:
        fresh.index(changed.corpus, embeddings=vectors_of([e.id for e in changed.corpus]))
    a, b = changed.search(list(queries), n=10), fresh.search(list(queries), n=10)
    same = sum(x.tolist() == y.tolist() for x, y in zip(a.rows, b.rows))
    return same, len(queries)


def run(n: int = 100_000, batch: int = 100, repeats: int = 3,
        retrievers: Sequence[str] = RETRIEVERS, cache_dir: Path | None = None,
        reuse_embeddings: bool = False, embed_sample: int = 5000) -> str:
    """Measure every retriever; return the Markdown report."""
    from eval.benchmarks.scale import assemble
    from ricl.models import ricl_home

    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = os.getloadavg()
    cache_dir = Path(cache_dir) if cache_dir is not None else ricl_home() / "bench_scale"
    assembly = assemble(None, None, 0, cache_dir)
    extra = batch * repeats
    if n + extra > len(assembly.records):
        raise SystemExit(f"--n {n}: only {len(assembly.records) - extra} texts leave room for "
                         f"{extra} additions.")
    corpus = assembly.corpus(n)
    query = assembly.queries[0]
    rows = []
    dense = [r for r in retrievers if r.startswith("dense")]
    vectors = embed_s = None
    embedded_how = ""
    if dense:
        texts = [text for _, text, _, _ in assembly.records[:n + extra]]
        vectors, embed_s, embedded_how = embed(texts, n, cache_dir, reuse_embeddings,
                                               embed_sample)
    ids = [rid for rid, _, _, _ in assembly.records[:n + extra]]
    position = {rid: i for i, rid in enumerate(ids)}

    def vectors_of(wanted: list[str]) -> np.ndarray:
        return vectors[[position[i] for i in wanted]]

    server = None
    checks = {}
    with tempfile.TemporaryDirectory(prefix="bench-updates-") as workdir:
        try:
            for name in retrievers:
                url = None
                if name == "dense-server":
                    from retrievers.chroma_store import LocalChromaServer

                    try:
                        server = LocalChromaServer(Path(workdir) / "chroma").start()
                    except (FileNotFoundError, RuntimeError) as exc:
                        log.warning("no Chroma server (%s); skipping dense-server", exc)
                        continue
                    url = server.url
                log.info("measuring %s", name)
                row = measure(name, corpus, vectors[:n] if name.startswith("dense") else None,
                              embed_s or 0.0, assembly, n, batch, repeats, query, url)
                changed = row.pop("_retriever")
                checks[name] = agreement(name, changed, vectors_of,
                                         assembly.queries[1:1 + CHECK_QUERIES], url)
                rows.append(row)
                del changed
        finally:
            if server is not None:
                server.stop()
    return report(rows, checks, n, batch, repeats, embed_s, started, load, embedded_how)


def embed(texts: list[str], n: int, cache_dir: Path, reuse: bool,
          sample: int) -> tuple[np.ndarray, float, str]:
    """Unit vectors of ``texts`` and the seconds embedding the first ``n`` takes, with a
    note on how that was measured.

    Without ``reuse`` every text is embedded here and timed. With ``reuse`` the vectors
    kept by an earlier run are read, and the time is measured in this run on ``sample``
    texts spread evenly over the ``n`` (so their lengths are those of the whole), scaled
    by ``n / sample``: the rebuild and the changes are then timed under the same load.
    """
    import hashlib
    import json

    from retrievers import DenseRetriever
    from ricl.io import atomic_file, write_json

    digest = hashlib.sha1("\0".join(texts).encode("utf-8")).hexdigest()[:12]
    path = cache_dir / f"updates-embeddings-{n}-{digest}.npy"
    record = path.with_suffix(".json")
    encoder = DenseRetriever()
    encoder.encode(texts[:64])  # load the model before the clock starts
    if reuse and path.is_file() and record.is_file():
        earlier = json.loads(record.read_text())
        picked = [texts[i] for i in np.linspace(0, n - 1, min(sample, n)).astype(int)]
        _, seconds = timed(lambda: encoder.encode(picked))
        how = (f"measured in this run on {len(picked):,} texts spread evenly over them, "
               f"scaled by {n / len(picked):g}; embedding all of them on "
               f"{earlier['date']} took {earlier['seconds']:.0f} s under that day's load")
        return np.load(path), seconds * n / len(picked), how
    log.info("embedding %d texts (the dense rebuilds' shared part)", n)
    pool, seconds = timed(lambda: encoder.encode(texts[:n], progress=True))
    vectors = np.concatenate([pool, encoder.encode(texts[n:])])
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)
    write_json(record, {"seconds": seconds, "date": time.strftime("%Y-%m-%d %H:%M %Z")})
    return vectors, seconds, "measured in this run"


def report(rows: list[dict[str, Any]], checks: dict[str, tuple[int, int]], n: int, batch: int,
           repeats: int, embed_s: float | None, started: str, load: tuple[float, ...],
           embedded_how: str) -> str:
    import torch

    lines = [f"# Changing an index in place vs rebuilding it ({n:,} demonstrations)", "",
             f"- machine: {cpu_model()}, {os.cpu_count()} cores, torch threads "
             f"{torch.get_num_threads()}, load average at start "
             f"{'/'.join(f'{x:.2f}' for x in load)} (other jobs shared the CPU); "
             f"{platform.machine()}, Python {platform.python_version()}",
             f"- versions: chromadb {package_version('chromadb')}, sentence-transformers "
             f"{package_version('sentence-transformers')}, torch {package_version('torch')}, "
             f"scipy {package_version('scipy')}, numpy {package_version('numpy')}",
             f"- date: {started}; corpus: the first {n:,} texts of the scale benchmark's "
             f"order; add: the next {batch} texts; remove: {batch} ids spread over the corpus; "
             f"median of {repeats} (each followed by one query)"]
    if embed_s is not None:
        lines.append(f"- dense rebuilds include embedding all {n:,} texts: {embed_s:.1f} s "
                     f"({n / embed_s:.0f} texts/s, MiniLM-L6 float32, batch 64; "
                     f"{embedded_how}), plus the backend's own build from those vectors")
    lines += ["", f"| retriever | rebuild (s) | add {batch} (s) | rebuild / add | "
                  f"remove {batch} (s) | rebuild / remove | top-10 = rebuild |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        same, total = checks.get(row["retriever"], (0, 0))
        build = (f"{row['rebuild_s']:.1f} ({row['embed_s']:.0f} embed + "
                 f"{row['build_s']:.1f} build)" if row["embed_s"] else f"{row['rebuild_s']:.2f}")
        lines.append(f"| {NAMES[row['retriever']]} | {build} | {row['add_s']:.3f} | "
                     f"{row['rebuild_s'] / row['add_s']:,.0f}× | {row['remove_s']:.3f} | "
                     f"{row['rebuild_s'] / row['remove_s']:,.0f}× | {same}/{total} queries |")
    lines += ["", "Rebuild: index from scratch plus one query. Add/remove: the call plus one "
              "query (BM25 derives its corpus-wide statistics on that first query after a "
              "change; Chroma embedded copies nothing here, the index being the one just "
              "built). Last column: after all changes, the top-10 rows of held-out queries "
              "against an index built from scratch on the same final corpus. Reproduce: "
              "`python -m eval.benchmarks.updates`."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.benchmarks.updates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="demonstrations (default: 100000)")
    parser.add_argument("--batch", type=int, default=100, help="records per add/remove (100)")
    parser.add_argument("--repeats", type=int, default=3, help="adds and removes timed (3)")
    parser.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS), choices=RETRIEVERS)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the scale benchmark caches its assembled texts "
                             "(default: RICL_HOME/bench_scale)")
    parser.add_argument("--reuse-embeddings", action="store_true",
                        help="read the vectors an earlier run kept, and time the embedding "
                             "on a sample in this run (the report says so)")
    parser.add_argument("--embed-sample", type=int, default=5000,
                        help="texts timed with --reuse-embeddings (default: 5000)")
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args(argv)
    if (args.n < 1 or args.batch < 1 or args.repeats < 1 or args.embed_sample < 1
            or args.batch * 2 > args.n):
        parser.error("--n, --batch, --repeats and --embed-sample must be positive, and --batch "
                     "at most --n/2.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    text = run(args.n, args.batch, args.repeats, args.retrievers, args.cache_dir,
               args.reuse_embeddings, args.embed_sample)
    if args.out is not None:
        from ricl.io import atomic_write_text

        atomic_write_text(args.out, text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
