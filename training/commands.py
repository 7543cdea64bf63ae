"""The `ricl score` and `ricl train` commands: a plug-in of the ``ricl`` command
(entry-point group ``ricl.commands``, see ``ricl.registry``).

    ricl score --suite trec --n-queries 2000 -L 20 --out runs/trec/feedback.jsonl
    ricl train runs/trec/feedback.jsonl --suite trec --loss distill --out runs/trec/retriever
    ricl index pool.jsonl --retriever runs/trec/retriever --out runs/trec/index

A corpus comes from a packaged suite's pool (``--suite``, read by the suite source
that ``ricl.registry`` names) or a JSONL/CSV file
(``--corpus`` with ``--input``/``--output``/``--id``/``--labels``, as for
``ricl index``); `ricl train` must be given the corpus that `ricl score` used.
Training queries default to the corpus itself (each query's candidates are the
other examples), the first ``--n-queries`` of them.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the ``ricl`` parser."""
    score = subparsers.add_parser(
        "score", help="score retrieved candidates with the LM: a resumable feedback file",
        description="For each training query, retrieve L candidate demos and record "
                    "log p(answer | demo, query) under the LM (EPR). Rerunning the same "
                    "command resumes: finished queries are skipped.")
    _corpus_arguments(score)
    score.add_argument("--queries", help="JSONL/CSV of training queries with answers "
                                         "(default: the corpus itself)")
    score.add_argument("--n-queries", type=int, help="use only the first N training queries")
    score.add_argument("--template", help="e.g. 'Question: {input}\\nAnswer type: {output}' "
                                          "(default: the suite's)")
    score.add_argument("--retriever", default="bm25",
                       help="bm25 | dense | a sentence-transformers model dir")
    score.add_argument("-L", "--candidates", type=int, default=20, help="candidates per query")
    score.add_argument("--batch-size", type=int, default=16, help="LM rows per forward pass")
    score.add_argument("--lm", metavar="NAME_OR_DIR",
                       help="the scoring LM: a packaged model (smollm2-135m, the default; "
                            "gemma3-270m) or a transformers model directory")
    score.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                       help="LM weights: float32 (exact) or bfloat16 (about 3x faster on CPUs "
                            "with AMX/AVX-512 BF16)")
    score.add_argument("--chunk-size", type=int, default=512,
                       help="queries per durable chunk (candidate caches are shared within one)")
    score.add_argument("--out", required=True, help="the feedback JSONL file")
    score.add_argument("--no-resume", action="store_true", help="start the file over")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(handler=_score)

    train = subparsers.add_parser(
        "train", help="fine-tune a bi-encoder retriever from a feedback file",
        description="Checkpoints go beside OUT (OUT.checkpoints/); rerunning the same command "
                    "resumes from the last one.")
    train.add_argument("feedback", help="a feedback file written by `ricl score`")
    _corpus_arguments(train)
    train.add_argument("--out", required=True, help="directory of the trained model")
    train.add_argument("--base-model", help="sentence-transformers model dir (default: MiniLM-L6)")
    train.add_argument("--loss", default="contrastive", choices=("contrastive", "distill", "both"))
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=2e-5)
    train.add_argument("--temperature", type=float, default=1.0, help="of the LM-score softmax (distill)")
    train.add_argument("--retriever-temperature", type=float, default=0.05)
    train.add_argument("--top-p", type=int, default=1, help="positives per query (contrastive)")
    train.add_argument("--hard-negatives", type=int, default=1, help="worst candidates used as negatives")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=500, help="steps")
    train.add_argument("--max-steps", type=int)
    train.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    train.add_argument("--overwrite", action="store_true",
                       help="let OUT replace another kind of ricl output (never a user's "
                            "own files or directory)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)


def _corpus_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--suite", help="a packaged suite; its pool is the corpus")
    source.add_argument("--corpus", help="a JSONL/CSV file of labelled examples")
    parser.add_argument("--pool-size", type=int, default=5000, help="suite pool size")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the suite's test/pool split")
    parser.add_argument("--input", nargs="+", default=["input"], help="input field name(s) (--corpus)")
    parser.add_argument("--output", default="output", help="answer field name (--corpus)")
    parser.add_argument("--id", default="id", help="id field name (--corpus)")
    parser.add_argument("--labels", nargs="+", help="label words for integer labels (--corpus)")


def _load_corpus(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The corpus and, for a suite, its template."""
    from ricl.data import Corpus
    from ricl.registry import resolve

    if args.suite:
        return resolve("suite_corpus")(args.suite, pool_size=args.pool_size, seed=args.split_seed)
    inputs = args.input[0] if len(args.input) == 1 else args.input
    return Corpus.from_file(args.corpus, input=inputs, output=args.output, id=args.id,
                            labels=args.labels), None


def _score(args: argparse.Namespace) -> int:
    from ricl.data import Corpus
    from ricl.errors import ConfigError
    from training.feedback import score_candidates

    corpus, suite_template = _load_corpus(args)
    template = args.template or suite_template
    if template is None:
        raise ConfigError("--template is needed with --corpus, e.g. 'Q: {input}\\nA: {output}'.")
    if args.queries:
        names = list(corpus.input_names)
        queries = Corpus.from_file(args.queries, input=names[0] if len(names) == 1 else names,
                         output=corpus.output_name, id=args.id, labels=corpus.labels)
    else:
        queries = corpus
    examples = list(queries)
    if args.n_queries is not None:
        if args.n_queries < 1:
            raise ConfigError(f"--n-queries {args.n_queries}: must be a positive integer.")
        examples = examples[:args.n_queries]
    path = score_candidates(corpus, examples, template, args.out, retriever=args.retriever,
                            n_candidates=args.candidates, lm=args.lm, dtype=args.dtype,
                            batch_size=args.batch_size,
                            chunk_size=args.chunk_size, resume=not args.no_resume,
                            progress=not args.quiet)
    print(f"feedback for {len(examples)} queries x {args.candidates} candidates in {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.train import read_card, train_retriever

    corpus, _ = _load_corpus(args)
    out = train_retriever(args.feedback, corpus, args.out, base_model=args.base_model, loss=args.loss,
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          temperature=args.temperature,
                          retriever_temperature=args.retriever_temperature, top_p=args.top_p,
                          n_hard_negatives=args.hard_negatives, seed=args.seed,
                          checkpoint_every=args.checkpoint_every, resume=not args.no_resume,
                          max_steps=args.max_steps, progress=not args.quiet,
                          overwrite=args.overwrite)
    card = read_card(out)
    print(f"trained retriever in {out}: {card['loss']} loss {card['initial_loss']:.4f} -> "
          f"{card['final_loss']:.4f} over {card['steps']} steps")
    print(f"use it with: ricl index DATA --retriever {out} --out INDEX_DIR")
    return 0
