"""Feedback scoring speed: shared-prefix KV caches against plain batched scoring, same pairs.

    python -m training.bench_scoring [--queries 100] [--candidates 20] [--pool 2000]

Builds the (candidate demo, query, answer) pairs that ``score_candidates``
scores (TREC, BM25 candidates, the queries drawn from the pool, never their own
candidate) and scores them twice in one process, from text both times:

- plain: every one-demo prompt whole through ``TransformersLM.score``
  (length-sorted batches, logits only at the answer positions);
- shared prefix: ``TransformersLM.score_shared_prefixes``, each distinct
  candidate's KV cache computed once and reused by every query that retrieved it.

It prints a Markdown table (pairs/s, ratio, max |difference|), checks that the
prefix and suffix tokenized apart give the joined prompt's ids, and prints the
token counts that bound the ratio: the shared-prefix path still runs every
query's tokens once per candidate, so it cannot beat
``tokens(plain) / tokens(shared)``, a bound that grows with how many queries
share each candidate. Wall time is what a user waits; CPU time of the process
is steadier when other jobs share the cores (use ``--threads 1`` there: two
threads spin-waiting on a busy machine waste most of their time).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def build_pairs(suite: str, n_queries: int, n_candidates: int, pool_size: int, retriever: str,
                lm) -> dict:
    import ricl
    from eval.suites import load_suite
    from retrievers import make_retriever
    from ricl.template import as_template
    from training.feedback import _retrieve, split_prompts

    data = load_suite(suite, pool_size=pool_size, seed=0)
    corpus = ricl.Corpus.from_records(data.pool, input=list(data.input_fields)[0]
                                      if len(data.input_fields) == 1 else list(data.input_fields),
                                      output="label", labels=data.labels)
    template = as_template(data.template, corpus.output_name)
    queries = list(corpus)[:n_queries]
    index = make_retriever(retriever).index(corpus)
    rows_of, _ = _retrieve(queries, corpus, index, n_candidates)
    used = sorted({row for rows in rows_of for row in rows})
    slot = {row: k for k, row in enumerate(used)}
    prefixes, query_texts = split_prompts(template, [corpus[row] for row in used], queries,
                                          corpus.output_name)
    answers = [(template.answer_prefix or " ") + q.output for q in queries]
    pair_query = [i for i, rows in enumerate(rows_of) for _ in rows]
    return {"prefixes": prefixes, "pair_prefix": [slot[row] for rows in rows_of for row in rows],
            "suffixes": [query_texts[i] for i in pair_query],
            "continuations": [answers[i] for i in pair_query],
            "n_queries": len(queries), "pool": len(corpus)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="trec")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--retriever", default="bm25")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed rounds; round r runs plain then shared, or shared then plain "
                             "when r is odd, so drifting machine load hits both alike")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    import torch

    from ricl.lm import TransformersLM

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = TransformersLM(batch_size=args.batch_size)
    pairs = build_pairs(args.suite, args.queries, args.candidates, args.pool, args.retriever, lm)
    prefixes, pair_prefix = pairs["prefixes"], pairs["pair_prefix"]
    suffixes, continuations = pairs["suffixes"], pairs["continuations"]
    prompts = [prefixes[p] + s for p, s in zip(pair_prefix, suffixes)]
    n_pairs = len(prompts)
    prefix_ids, suffix_ids = lm._encode_prompts(prefixes), lm._encode(suffixes)
    cont_ids, joined_ids = lm._encode(continuations), lm._encode_prompts(prompts)
    same_ids = sum(j == prefix_ids[p] + s for j, p, s in zip(joined_ids, pair_prefix, suffix_ids))
    tokens_plain = sum(len(j) + len(c) for j, c in zip(joined_ids, cont_ids))
    tokens_shared = sum(len(prefix_ids[p]) for p in set(pair_prefix)) + sum(
        len(s) + len(c) - 1 for s, c in zip(suffix_ids, cont_ids))

    lm.score(prompts[:4], continuations[:4])  # warm-up: first-call allocations
    timings: dict[str, list[float]] = {"plain": [], "shared prefix": []}
    cpu: dict[str, list[float]] = {"plain": [], "shared prefix": []}
    results: dict[str, np.ndarray] = {}
    runs = {
        "plain": lambda: lm.score(prompts, continuations),
        "shared prefix": lambda: lm.score_shared_prefixes(prefixes, suffixes, continuations, pair_prefix),
    }
    for round_ in range(args.repeats):
        for name in (["plain", "shared prefix"] if round_ % 2 == 0 else ["shared prefix", "plain"]):
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = runs[name]()
            timings[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"  {name}: {timings[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} s CPU", flush=True)

    plain_s = float(np.median(timings["plain"]))
    shared_s = float(np.median(timings["shared prefix"]))
    plain_cpu, shared_cpu = float(np.median(cpu["plain"])), float(np.median(cpu["shared prefix"]))
    diff = float(np.max(np.abs(results["plain"] - results["shared prefix"])))
    lines = [
        f"Feedback scoring, {args.suite}: {pairs['n_queries']} queries x {args.candidates} "
        f"{args.retriever} candidates from a {pairs['pool']}-demo pool = {n_pairs} pairs, "
        f"{len(prefix_ids)} distinct candidates ({n_pairs / len(prefix_ids):.2f} queries per candidate). "
        f"SmolLM2-135M fp32, batch {args.batch_size}, {torch.get_num_threads()} torch thread(s), "
        f"{platform.processor() or platform.machine()}, median of {args.repeats} round(s).",
        "",
        "| method | LM tokens fed | wall s | CPU s | pairs/s | speed-up (wall) | speed-up (CPU) "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|",
        f"| plain `score` (batched, answer-only logits) | {tokens_plain} | {plain_s:.1f} | "
        f"{plain_cpu:.1f} | {n_pairs / plain_s:.2f} | 1.00x | 1.00x | |",
        f"| shared prefix `score_shared_prefixes` | {tokens_shared} | {shared_s:.1f} | "
        f"{shared_cpu:.1f} | {n_pairs / shared_s:.2f} | {plain_s / shared_s:.2f}x | "
        f"{plain_cpu / shared_cpu:.2f}x | {diff:.2e} |",
        "",
        f"Token bound on the speed-up: {tokens_plain / tokens_shared:.2f}x. Prefix and query "
        f"tokenized apart equal the joined prompt's ids for {same_ids} of {n_pairs} pairs.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        from ricl.io import atomic_write_text

        atomic_write_text(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
