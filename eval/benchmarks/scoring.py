"""Feedback scoring speed: shared-prefix KV caches against plain batched scoring, same pairs.

    python -m eval.benchmarks.scoring [--queries 200] [--candidates 20] [--pool 1000]

Builds the (candidate demo, query, answer) pairs that ``score_candidates``
scores (TREC, BM25 candidates, the queries drawn from the pool, never their own
candidate) and scores them twice in one process, from text both times:

- naive: the hand-written loop (OpenICL's perplexity inferencer does this): every
  one-demo prompt whole, batches in input order, right-padded, logits and a
  log-softmax at every position, the answer tokens gathered from them;
- plain: every one-demo prompt whole through ``TransformersLM.score``
  (length-sorted batches, logits only at the answer positions);
- shared prefix: ``training.prefix_cache.score_shared_prefixes``, each distinct
  candidate's KV cache computed once and reused by every query that retrieved it.

The default workload mirrors the experiments' sharing (``eval.experiments.trained``:
1,000 queries over a 5,000-demo pool, 4.6 queries per distinct candidate on TREC):
200 queries over a 1,000-demo pool.

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
    from eval.suites import load_suite
    from retrievers import make_retriever
    from ricl.template import as_template
    from training.feedback import _retrieve, split_prompts

    data = load_suite(suite, pool_size=pool_size, seed=0)
    corpus = data.corpus()
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


def naive_score(lm, prompt_ids: list[list[int]], cont_ids: list[list[int]],
                batch_size: int) -> np.ndarray:
    """log p(continuation | prompt) the way a hand-written loop computes it: batches in
    input order, right padding, full logits and log-softmax, answer tokens gathered."""
    import torch

    scores = np.zeros(len(prompt_ids))
    with torch.inference_mode():
        for start in range(0, len(prompt_ids), batch_size):
            rows = range(start, min(start + batch_size, len(prompt_ids)))
            sequences = [prompt_ids[i] + cont_ids[i] for i in rows]
            width = max(len(s) for s in sequences)
            ids = torch.full((len(sequences), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(sequences), width), dtype=torch.long)
            for r, sequence in enumerate(sequences):
                ids[r, :len(sequence)] = torch.tensor(sequence)
                mask[r, :len(sequence)] = 1
            log_probs = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for r, i in enumerate(rows):
                first, n = len(prompt_ids[i]) - 1, len(cont_ids[i])
                targets = torch.tensor(cont_ids[i])[:, None]
                scores[i] = float(log_probs[r, first:first + n].gather(-1, targets).sum())
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="trec")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--retriever", default="bm25")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed rounds; odd rounds run the methods in reverse order, so "
                             "drifting machine load hits them alike")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    import torch

    from ricl.lm import TransformersLM
    from training.prefix_cache import score_shared_prefixes

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = TransformersLM(batch_size=args.batch_size)
    pairs = build_pairs(args.suite, args.queries, args.candidates, args.pool, args.retriever, lm)
    prefixes, pair_prefix = pairs["prefixes"], pairs["pair_prefix"]
    suffixes, continuations = pairs["suffixes"], pairs["continuations"]
    prompts = [prefixes[p] + s for p, s in zip(pair_prefix, suffixes)]
    n_pairs = len(prompts)
    prefix_ids, suffix_ids = lm.encode_prompts(prefixes), lm.encode_continuations(suffixes)
    cont_ids, joined_ids = lm.encode_continuations(continuations), lm.encode_prompts(prompts)
    same_ids = sum(j == prefix_ids[p] + s for j, p, s in zip(joined_ids, pair_prefix, suffix_ids))
    tokens_plain = sum(len(j) + len(c) for j, c in zip(joined_ids, cont_ids))
    tokens_shared = sum(len(prefix_ids[p]) for p in set(pair_prefix)) + sum(
        len(s) + len(c) - 1 for s, c in zip(suffix_ids, cont_ids))

    lm.score(prompts[:4], continuations[:4])  # warm-up: first-call allocations
    methods = ("naive", "plain", "shared prefix")
    timings: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, np.ndarray] = {}
    runs = {
        "naive": lambda: naive_score(lm, joined_ids, cont_ids, args.batch_size),
        "plain": lambda: lm.score(prompts, continuations),
        "shared prefix": lambda: score_shared_prefixes(lm, prefixes, suffixes, continuations, pair_prefix),
    }
    for round_ in range(args.repeats):
        for name in (methods if round_ % 2 == 0 else methods[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = runs[name]()
            timings[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"  {name}: {timings[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} s CPU", flush=True)

    wall = {name: float(np.median(timings[name])) for name in methods}
    cpu_s = {name: float(np.median(cpu[name])) for name in methods}
    labels = {"naive": "naive loop (input-order batches, right padding, full logits)",
              "plain": "plain `score` (length-sorted batches, answer-only logits)",
              "shared prefix": "shared prefix `score_shared_prefixes`"}
    fed = {"naive": tokens_plain, "plain": tokens_plain, "shared prefix": tokens_shared}
    lines = [
        f"Feedback scoring, {args.suite}: {pairs['n_queries']} queries x {args.candidates} "
        f"{args.retriever} candidates from a {pairs['pool']}-demo pool = {n_pairs} pairs, "
        f"{len(prefix_ids)} distinct candidates ({n_pairs / len(prefix_ids):.2f} queries per candidate). "
        f"SmolLM2-135M fp32, batch {args.batch_size}, {torch.get_num_threads()} torch thread(s), "
        f"{platform.processor() or platform.machine()}, median of {args.repeats} round(s).",
        "",
        "| method | LM tokens fed | wall s | CPU s | pairs/s | shared prefix is faster by (wall) "
        "| (CPU) | max abs diff to shared prefix |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        diff = float(np.max(np.abs(results[name] - results["shared prefix"])))
        lines.append(f"| {labels[name]} | {fed[name]} | {wall[name]:.1f} | {cpu_s[name]:.1f} | "
                     f"{n_pairs / wall[name]:.2f} | {wall[name] / wall['shared prefix']:.2f}x | "
                     f"{cpu_s[name] / cpu_s['shared prefix']:.2f}x | "
                     f"{'' if name == 'shared prefix' else f'{diff:.2e}'} |")
    lines += [
        "",
        f"Token bound on the speed-up over plain `score`: {tokens_plain / tokens_shared:.2f}x. Prefix and query "
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
