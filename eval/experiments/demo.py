"""`ricl demo`: the main job. Index a packaged suite's pool into embedded Chroma,
build 8-shot prompts for held-out queries with every selector, score the label
words with the default LM and print accuracy per selector, with timings."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.metrics import knn_vote
from eval.suites import load_suite
from ricl.builder import PromptBuilder
from ricl.errors import IndexLoadError
from ricl.io import write_json
from ricl.models import ricl_home
from ricl.selectors import SELECTOR_NAMES

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Row:
    method: str
    accuracy: float
    n: int
    seconds: float
    tokens_per_prompt: float
    uses_lm: bool = True

    @property
    def stderr(self) -> float:
        return float(np.sqrt(self.accuracy * (1 - self.accuracy) / max(self.n, 1)))


def run_demo(suite: str = "trec", k: int = 8, n_test: int = 200, pool_size: int = 5000,
             split_seed: int = 0, selectors: Sequence[str] = SELECTOR_NAMES,
             backend: str = "chroma", workdir: Path | None = None, seed: int = 0) -> list[Row]:
    """``split_seed`` draws the test/pool split; ``seed`` is the prompt builders' seed
    (random selection)."""
    from retrievers import BM25Retriever, DenseRetriever, load_retriever
    from ricl.lm import TransformersLM

    data = load_suite(suite, n_test=n_test, pool_size=pool_size, seed=split_seed)
    corpus = data.corpus()
    workdir = Path(workdir or ricl_home() / "demo" / f"{suite}-pool{len(corpus)}-seed{split_seed}")
    log.info("%s: %d demonstrations, %d test queries; index at %s", suite, len(corpus),
             len(data.test), workdir)

    dense_dir = workdir / f"dense-{backend}"
    started = time.perf_counter()
    dense = None
    if (dense_dir / "retriever.json").is_file():
        try:
            dense = load_retriever(dense_dir)
        except IndexLoadError as exc:
            log.warning("rebuilding the dense index: %s", exc)
        if dense is not None and dense.corpus.fingerprint() != corpus.fingerprint():
            log.warning("the saved dense index is for another corpus: rebuilding it")
            dense = None
    if dense is None:
        dense = DenseRetriever(backend=backend, show_progress=True).index(corpus)
        dense.save(dense_dir)
        print(f"indexed {len(corpus)} demonstrations into {backend} at {dense_dir} "
              f"in {time.perf_counter() - started:.1f}s")
    else:
        print(f"reusing the {backend} index at {dense_dir} ({time.perf_counter() - started:.1f}s)")
    corpus = dense.corpus
    bm25 = BM25Retriever().index(corpus)

    lm = TransformersLM()
    choices = [" " + label for label in data.labels]
    queries = [record["text"] for record in data.test]
    gold = np.array([data.labels.index(record["label"]) for record in data.test])

    def evaluate(method: str, builder: PromptBuilder) -> tuple[Row, list]:
        start = time.perf_counter()
        prompts = builder.build_many(queries)
        scores = lm.score_choices([p.text for p in prompts], choices)
        seconds = time.perf_counter() - start
        accuracy = float((scores.argmax(axis=1) == gold).mean())
        tokens = float(np.mean([p.token_count for p in prompts]))
        row = Row(method, accuracy, len(queries), seconds, tokens)
        print(f"  {method:<32} acc {accuracy:.3f}  ({seconds:.0f}s)", flush=True)
        return row, prompts

    def builder(retriever, selector: str, k_shots: int = k, order: str = "similar-last"):
        return PromptBuilder(corpus, retriever=retriever, selector=selector, k=k_shots,
                             template=data.template, order=order, seed=seed)

    rows: list[Row] = []
    print(f"{suite}: scoring {len(queries)} queries with the default LM")
    rows.append(evaluate("zero-shot", builder(dense, "similarity", 0))[0])
    rows.append(evaluate("bm25 + similarity", builder(bm25, "similarity"))[0])
    knn_prompts = None
    for name in selectors:
        row, prompts = evaluate(f"dense + {name}", builder(dense, name))
        rows.append(row)
        if name == "similarity":
            knn_prompts = prompts
    if knn_prompts is not None:
        rows.append(_knn_vote(knn_prompts, data.labels, gold, k))

    write_json(workdir / "results.json", [row.__dict__ for row in rows])
    print()
    print(format_table(rows, suite, k))
    return rows


def _knn_vote(prompts, labels: Sequence[str], gold: np.ndarray, k: int) -> Row:
    """Majority label of the retrieved demos, no LM: how much of the gain is label copying."""
    votes = [knn_vote(prompt.demos) for prompt in prompts]
    predictions = np.array([labels.index(vote) if vote is not None else 0 for vote in votes])
    accuracy = float((predictions == gold).mean())
    return Row(f"kNN label vote (dense top-{k}, no LM)", accuracy, len(prompts), 0.0, 0.0, False)


def format_table(rows: Sequence[Row], suite: str, k: int) -> str:
    lines = [f"| {suite}, k={k} | accuracy | ± s.e. | n | seconds | prompt tokens |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.method} | {row.accuracy:.3f} | {row.stderr:.3f} | {row.n} | "
                     f"{row.seconds:.0f} | {row.tokens_per_prompt:.0f} |")
    return "\n".join(lines)
