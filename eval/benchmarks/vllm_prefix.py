"""Label scoring through vLLM with its automatic prefix caching on and off, beside in-process ricl.

    python -m eval.benchmarks.vllm_prefix [--prompts 200] [--limit N] [--echo-limit N] [-k 8]
        [--out table.md]

The prompts are ricl's own k-shot TREC prompts (dense similarity, ``load_suite("trec",
n_test=N, seed=0)``); the continuations are the six label words. In one run:

- ricl in-process: ``TransformersLM.score_choices`` (float32; the prompt once, every
  label from its KV cache);
- vLLM (CPU build, float32, started from ``.venv-vllm`` or ``$RICL_VLLM_PYTHON``),
  once with ``--enable-prefix-caching`` and once with ``--no-enable-prefix-caching``,
  each scored through ``OpenAICompletionsLM`` with ``scoring="echo"`` (one request per
  prompt and label, 4 in flight) and ``scoring="first-token"`` (one request per prompt,
  the labels read from the first answer token's top 20 log-probs).

Each server is warmed up first (its first request compiles, 25-45 s); the warm-up is
reported apart. vLLM 0.32 does not read its prefix cache for a request that asks for
prompt log-probs (``SamplingParams.skip_reading_prefix_cache``: cached blocks would
return no logits), so echo scoring cannot gain from it; the table measures that.
``--echo-limit`` scores only the first N prompts with echo (about 1.3 s a prompt on two
busy cores, six requests each); rates are per prompt, so the ratios stay comparable.

``--orders`` (issue 19) measures instead what batch-aware demo order buys a server's
prefix cache: one vLLM server, prefix caching on (``--block-size 32``: the CPU default
of 128 tokens caches nothing short of a 128-token common prefix), first-token scoring.
The prompts are ``eval.benchmarks.prefix_sharing``'s LM prompts (TREC, pool 5,000, k=8;
``--prompts`` queries, a contiguous run of the 869-query batch's trie order), once in
today's order (similar-last), once from ``build_many(share_prefixes=True)`` and once
with the ``ClusterSelector(head=6)`` as well (a run of its own batch's trie order); the
client sends each batch in prefix order. Before each, the server's prefix cache is
emptied (``/reset_prefix_cache``, a development endpoint: ``VLLM_SERVER_DEV_MODE=1``);
the cached-token fraction is read from its ``/metrics`` counters
(``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``) before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

CHOICE_MODES = ("echo", "first-token")


def build_prompts(n_prompts: int, k: int) -> tuple[list[str], list[str]]:
    import ricl
    from eval.suites import load_suite

    suite = load_suite("trec", n_test=n_prompts, seed=0)
    builder = ricl.PromptBuilder(suite.corpus(), retriever="dense", k=k, template=suite.template)
    queries = [{name: r[name] for name in suite.input_fields} for r in suite.test]
    return [p.text for p in builder.build_many(queries)], [" " + label for label in suite.labels]


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def cache_counters(base_url: str) -> tuple[float, float]:
    """(prefix-cache hits, queries) in tokens, summed over engines, from vLLM's /metrics."""
    import httpx

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    totals = {"hits": 0.0, "queries": 0.0}
    for line in text.splitlines():
        for name in totals:
            if line.startswith(f"vllm:prefix_cache_{name}_total"):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["hits"], totals["queries"]


def reset_prefix_cache(base_url: str) -> None:
    import httpx

    reply = httpx.post(base_url.removesuffix("/v1") + "/reset_prefix_cache", timeout=60)
    reply.raise_for_status()
    if reply.headers.get("content-type", "").startswith("application/json") \
            and not reply.json().get("success", True):
        raise RuntimeError("vLLM did not reset its prefix cache (requests still running?)")


def orders(args) -> str:
    import ricl
    from eval.benchmarks.prefix_sharing import LM_CLUSTER, load_batch, trie_run
    from eval.benchmarks.updates import cpu_model
    from ricl.models import load_tokenizer
    from ricl.prefix_sharing import prefix_sharing
    from ricl.server_lm.vllm import VLLMServer

    batch = load_batch("trec", 5000, None)
    today, shared = trie_run(batch, args.prompts)
    clustered = trie_run(batch, args.prompts, LM_CLUSTER)[1]
    choices = [" " + label for label in batch.labels]
    tokenizer = load_tokenizer()
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # for /reset_prefix_cache; loopback only
    rows = []
    with VLLMServer(python=args.python, args=["--enable-prefix-caching", "--block-size", "32"]) \
            as server:
        lm = ricl.OpenAICompletionsLM(server.base_url, scoring="first-token",
                                      max_concurrency=args.concurrency)
        lm.score_choices(batch.queries[:1], choices)  # the first request compiles
        for label, prompts in (("similar-last (today)", today), ("share_prefixes=True", shared),
                               (f"share_prefixes + ClusterSelector(head={LM_CLUSTER[-1]})", clustered)):
            reset_prefix_cache(server.base_url)
            hits0, queries0 = cache_counters(server.base_url)
            scores, seconds = timed(lambda: lm.score_choices(prompts, choices))
            hits, queried = (a - b for a, b in zip(cache_counters(server.base_url), (hits0, queries0)))
            ideal = prefix_sharing(tokenizer(prompts, add_special_tokens=True)["input_ids"])
            rows.append((label, len(prompts), seconds, hits / queried if queried else float("nan"),
                         ideal.shared_tokens / ideal.total_tokens, np.isfinite(scores).all(1).mean()))
        lm.close()
    lines = [f"{args.prompts} TREC {K_SHOT}-shot prompts (pool 5,000; a contiguous run of the "
             f"869-query batch's trie order) x {len(choices)} labels, vLLM CPU, float32, "
             f"prefix caching on, block 32 tokens, first-token scoring, {args.concurrency} in "
             f"flight; {cpu_model()}, {os.cpu_count()} cores, load average at the end "
             f"{os.getloadavg()[0]:.1f}.", "",
             "| prompts from | prompts | wall s | prompts/s | vs today | cached tokens (server) "
             "| shared tokens (ricl's count, any length) | all labels in top 20 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows[0][1] / rows[0][2]
    for label, n, seconds, cached, ideal, complete in rows:
        lines.append(f"| {label} | {n} | {seconds:.1f} | {n / seconds:.2f} | "
                     f"{n / seconds / base:.2f}x | {cached:.1%} | {ideal:.1%} | {complete:.0%} |")
    lines += ["", "The server caches whole 32-token blocks, so it finds less than ricl's count of "
              "shared tokens (any length); requests in flight together cannot reuse each "
              "other's blocks."]
    return "\n".join(lines)


K_SHOT = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--limit", type=int, help="score only the first N prompts (echo scoring sends "
                        "one request per prompt and label: about 1.3 s a prompt on 2 busy cores)")
    parser.add_argument("--echo-limit", type=int,
                        help="score only the first N prompts with echo (the slow mode)")
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--python", help="the vLLM interpreter (default: .venv-vllm/bin/python)")
    parser.add_argument("--orders", action="store_true",
                        help="issue 19: today's demo order against share_prefixes=True, caching on")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.orders:
        table = orders(args)
        print(table)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(table + "\n")
        return 0

    import ricl
    from eval.benchmarks.updates import cpu_model
    from ricl.server_lm.vllm import VLLMServer

    prompts, choices = build_prompts(args.prompts, args.k)
    prompts = prompts[:args.limit] if args.limit else prompts
    local = ricl.TransformersLM()
    local.score_choices(prompts[:2], choices)  # load and warm up
    reference, seconds = timed(lambda: local.score_choices(prompts, choices))
    rows = [("ricl in-process (TransformersLM)", "-", "-", seconds, None, len(prompts))]
    warmups = []
    for caching in ("on", "off"):
        flag = "--enable-prefix-caching" if caching == "on" else "--no-enable-prefix-caching"
        with VLLMServer(python=args.python, args=[flag]) as server:
            for scoring in CHOICE_MODES:
                lm = ricl.OpenAICompletionsLM(server.base_url, scoring=scoring,
                                              max_concurrency=args.concurrency)
                _, warm = timed(lambda: lm.score_choices(prompts[:1], choices))
                warmups.append(f"{caching}/{scoring}: start {server.start_seconds:.0f} s, "
                               f"first request {warm:.1f} s")
                n = min(args.echo_limit or len(prompts), len(prompts)) \
                    if scoring == "echo" else len(prompts)
                scores, seconds = timed(lambda: lm.score_choices(prompts[:n], choices))
                ref = reference[:n]
                finite = np.isfinite(scores)
                gap = float(np.max(np.abs(scores - ref)[finite])) if finite.any() else float("nan")
                same = float(np.mean(scores.argmax(1) == ref.argmax(1)))
                rows.append((f"vLLM {scoring}", caching, f"{gap:.1e}", seconds, same, n))
                lm.close()

    base = rows[0][5] / rows[0][3]
    echo_off = next(n / seconds for name, caching, _, seconds, _, n in rows
                    if name == "vLLM echo" and caching == "off")
    lines = [f"{len(prompts)} of {args.prompts} TREC {args.k}-shot prompts x {len(choices)} labels; "
             f"{cpu_model()}, {os.cpu_count()} cores, load average at the end "
             f"{os.getloadavg()[0]:.1f}; float32; ratios are of prompts/s.", "",
             "| scorer | prefix caching | prompts | wall s | prompts/s | vs in-process "
             "| vs echo, caching off | max abs diff | same argmax |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, caching, gap, seconds, same, n in rows:
        lines.append(f"| {name} | {caching} | {n} | {seconds:.1f} | {n / seconds:.2f} | "
                     f"{n / seconds / base:.2f}x | {n / seconds / echo_off:.2f}x | {gap} | "
                     f"{'-' if same is None else f'{same:.0%}'} |")
    lines += ["", "Warm-up (not in the table): " + "; ".join(warmups) + ".",
              "first-token scores a label by its first token among the top 20 (-inf when absent), "
              "so its max abs diff covers the finite scores only."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
