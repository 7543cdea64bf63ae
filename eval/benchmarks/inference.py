"""Label-scoring throughput against a plain forward pass, and what bfloat16 changes.

    python -m eval.benchmarks.inference [--suite trec] [--prompts 64] [-k 8] [--threads 1] [--reps 3]

The prompts are ricl's own k-shot prompts (dense similarity) for the suite's first
test items; the continuations are the suite's label words. On the same token ids,
in one process, interleaved ``--reps`` times (the fastest repetition counts, which is
robust to other jobs on the machine):

- plain: ``model(input_ids)`` with full logits over length-sorted, left-padded
  batches of the prompts, as a hand-written loop does; float32;
- ricl float32: ``TransformersLM.score_choices`` (prompt once, every label from
  its KV cache, logits only where they are needed);
- ricl bfloat16: the same with ``dtype="bfloat16"``.

Throughput is prompt tokens per second; the target for ricl float32 is at least
80% of plain. For bfloat16 it reports the largest log-probability difference from
float32, how often the two pick the same label, and the accuracy of each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

def build_prompts(suite_name: str, n_prompts: int, k: int, tokenizer) -> tuple[list[str], list[str], list[str]]:
    import ricl
    from eval.suites import load_suite

    suite = load_suite(suite_name, n_test=n_prompts, pool_size=2000, seed=0)
    corpus = suite.corpus()
    builder = ricl.PromptBuilder(corpus, retriever="dense", k=k, template=suite.template,
                                 tokenizer=tokenizer)
    queries = [{name: r[name] for name in suite.input_fields} for r in suite.test]
    prompts = [p.text for p in builder.build_many(queries)]
    return prompts, [" " + label for label in suite.labels], [r["label"] for r in suite.test]


def plain_forward(lm, prompts: list[str], batch_size: int = 16) -> None:
    """What a hand-written loop does: full logits for every prompt token."""
    import torch

    ids = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = lm.tokenizer.pad_token_id or 0
    with torch.inference_mode(), torch.device(lm.device):
        for start in range(0, len(order), batch_size):
            batch = [ids[i] for i in order[start:start + batch_size]]
            width = max(len(s) for s in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):
                input_ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
            lm.model(input_ids=input_ids, attention_mask=mask).logits.float().log_softmax(-1)


def _timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def run(suite: str = "trec", n_prompts: int = 64, k: int = 8, threads: int = 1,
        reps: int = 3, out: Path | None = None, device: str = "cpu") -> str:
    import torch

    from ricl.devices import describe_hardware
    from ricl.lm import TransformersLM

    torch.set_num_threads(threads)
    fp32 = TransformersLM(device=device)
    bf16 = TransformersLM(dtype="bfloat16", device=device)
    prompts, labels, gold = build_prompts(suite, n_prompts, k, fp32.tokenizer)
    tokens = sum(fp32.count_tokens(prompts))
    methods = {
        "plain forward, float32 (full logits)": lambda: plain_forward(fp32, prompts),
        "ricl score_choices, float32": lambda: fp32.score_choices(prompts, labels),
        "ricl score_choices, bfloat16": lambda: bf16.score_choices(prompts, labels),
    }
    best: dict[str, tuple[float, float]] = {}
    scores: dict[str, np.ndarray] = {}
    for _ in range(reps):
        for name, fn in methods.items():
            wall, cpu, value = _timed(fn)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
            if value is not None:
                scores[name] = np.asarray(value)
    plain_wall, plain_cpu = best["plain forward, float32 (full logits)"]
    lines = [f"# Label scoring throughput ({suite}, {n_prompts} prompts, k={k}, "
             f"{tokens} prompt tokens, {threads} thread(s), best of {reps})", "",
             f"Machine: {describe_hardware()}; LM on {fp32.device}. Reproduce: "
             f"`python -m eval.benchmarks.inference --threads {threads} --device {device}`.", "",
             "| method | wall s | tokens/s | × plain (wall) | CPU s | × plain (CPU) |",
             "|---|---|---|---|---|---|"]
    for name, (wall, cpu) in best.items():
        lines.append(f"| {name} | {wall:.2f} | {tokens / wall:.0f} | {plain_wall / wall:.2f} | "
                     f"{cpu:.2f} | {plain_cpu / cpu:.2f} |")
    f32, b16 = scores["ricl score_choices, float32"], scores["ricl score_choices, bfloat16"]
    words = [label.strip() for label in labels]
    accuracy = {name: float(np.mean([words[i] == g for i, g in zip(s.argmax(1), gold)]))
                for name, s in (("float32", f32), ("bfloat16", b16))}
    lines += ["", "bfloat16 against float32 on the same prompts:", "",
              f"- largest |log-prob difference|: {np.abs(f32 - b16).max():.3f} nats "
              f"(median {np.median(np.abs(f32 - b16)):.3f})",
              f"- same label chosen: {np.mean(f32.argmax(1) == b16.argmax(1)):.1%}",
              f"- accuracy: float32 {accuracy['float32']:.3f}, bfloat16 {accuracy['bfloat16']:.3f}"]
    report = "\n".join(lines) + "\n"
    if out is not None:
        from ricl.io import atomic_write_text

        atomic_write_text(out, report)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="trec")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        help="also write the table here (published: eval/results/bench_inference.md)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    args = parser.parse_args(argv)
    print(run(args.suite, args.prompts, args.k, args.threads, args.reps, args.out, args.device))


if __name__ == "__main__":
    main()
