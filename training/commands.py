"""The `ricl score`, `ricl train` and `ricl train-multitask` commands: a plug-in of the
``ricl`` command (entry-point group ``ricl.commands``, see ``ricl.registry``).

    ricl score --suite trec --n-queries 2000 -L 20 --out runs/trec/feedback.jsonl
    ricl train runs/trec/feedback.jsonl --suite trec --loss distill --out runs/trec/retriever
    ricl index pool.jsonl --retriever runs/trec/retriever --out runs/trec/index

    # CEIL: sets of k candidates of the EPR retriever, scored; the DPP's encoder trained
    ricl score --sets --suite trec --retriever runs/trec/epr -L 10 -k 4 --subsets 8 --out sets.jsonl
    ricl train sets.jsonl --suite trec --loss ceil --base-model runs/trec/epr --out runs/trec/ceil

    # UDR: one retriever for several suites, two rounds of mining
    ricl train-multitask --suite trec sst2 agnews --n-queries 1000 --work runs/udr --out runs/udr/model

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

from ricl.selectors import DPP_SCALE


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
    score.add_argument("-L", "--candidates", type=int,
                       help="candidates per query (default 20; with --sets, 10)")
    score.add_argument("--sets", action="store_true",
                       help="set-level feedback (CEIL): score sampled subsets of k candidates")
    score.add_argument("-k", type=int, default=4, help="demos per subset (--sets)")
    score.add_argument("--subsets", type=int, default=8, help="subsets per query (--sets)")
    score.add_argument("--seed", type=int, default=0, help="seed of the subset draw (--sets)")
    score.add_argument("--batch-size", type=int, default=16, help="LM rows per forward pass")
    score.add_argument("--lm", metavar="NAME_OR_DIR",
                       help="the scoring LM: a packaged model (smollm2-135m, the default; "
                            "gemma3-270m) or a transformers model directory")
    score.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                       help="LM weights: float32 (exact) or bfloat16 (about 3x faster on CPUs "
                            "with AMX/AVX-512 BF16)")
    score.add_argument("--chunk-size", type=int,
                       help="queries per durable chunk (caches are shared within one; "
                            "default 512, with --sets 128)")
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
    train.add_argument("--loss", default="contrastive", choices=("contrastive", "distill", "both", "ceil"),
                       help="ceil: a set-feedback file (`ricl score --sets`) trains the DPP "
                            "selector's encoder; start it from the EPR model (--base-model)")
    train.add_argument("--temperature", type=float, default=1.0, help="of the LM-score softmax (distill)")
    train.add_argument("--retriever-temperature", type=float, default=0.05)
    train.add_argument("--top-p", type=int, default=1, help="positives per query (contrastive)")
    train.add_argument("--hard-negatives", type=int, default=1, help="worst candidates used as negatives")
    train.add_argument("--scale", type=float, default=DPP_SCALE,
                       help="the DPP's relevance scale (ceil): use the same at inference")
    train.add_argument("--margin", type=float, default=0.02, help="ranking margin per place (ceil)")
    _training_arguments(train)
    train.set_defaults(handler=_train)

    multitask = subparsers.add_parser(
        "train-multitask", help="one retriever for several suites, queries behind task "
                                "instructions, with rounds of re-mining (UDR)",
        description="Per suite, LM feedback on BM25 candidates; one model trained on all of it "
                    "(each query behind its suite's instruction); then each further round "
                    "re-mines candidates with the model so far, re-scores and trains on. Every "
                    "step resumes: rerun the same command to continue.")
    multitask.add_argument("--suite", nargs="+", required=True, help="packaged suites to train on")
    multitask.add_argument("--pool-size", type=int, default=5000, help="suite pool size")
    multitask.add_argument("--split-seed", type=int, default=0, help="seed of the suites' test/pool split")
    multitask.add_argument("--n-queries", type=int, default=1000, help="training queries per suite")
    multitask.add_argument("-L", "--candidates", type=int, default=20, help="candidates per query")
    multitask.add_argument("--rounds", type=int, default=2, help="rounds of mining and training")
    multitask.add_argument("--instruction", action="append", default=[], metavar="SUITE=TEXT",
                           help="a suite's task instruction (default: ricl's, see "
                                "training.multitask.SUITE_INSTRUCTIONS)")
    multitask.add_argument("--lm", metavar="NAME_OR_DIR", help="the scoring LM (default smollm2-135m)")
    multitask.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    multitask.add_argument("--lm-batch-size", type=int, default=16, help="LM rows per forward pass")
    multitask.add_argument("--work", required=True, help="feedback files and earlier rounds' models")
    multitask.add_argument("--out", required=True, help="directory of the final model")
    multitask.add_argument("--base-model", help="sentence-transformers model dir (default: MiniLM-L6)")
    multitask.add_argument("--loss", default="distill", choices=("distill", "both", "contrastive"))
    multitask.add_argument("--temperature", type=float, default=1.0, help="of the LM-score softmax")
    multitask.add_argument("--retriever-temperature", type=float, default=0.05)
    _training_arguments(multitask)
    multitask.set_defaults(handler=_train_multitask)


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--overwrite", action="store_true",
                        help="let OUT replace another kind of ricl output (never a user's "
                             "own files or directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
    common = dict(retriever=args.retriever, lm=args.lm, dtype=args.dtype, batch_size=args.batch_size,
                  resume=not args.no_resume, progress=not args.quiet)
    if args.sets:
        from training.set_feedback import score_sets

        n = args.candidates or 10
        path = score_sets(corpus, examples, template, args.out, n_candidates=n, k=args.k,
                          n_subsets=args.subsets, seed=args.seed, chunk_size=args.chunk_size or 128,
                          **common)
        print(f"set feedback for {len(examples)} queries x {args.subsets} subsets of {args.k} "
              f"(from their top {n} candidates) in {path}")
        return 0
    n = args.candidates or 20
    path = score_candidates(corpus, examples, template, args.out, n_candidates=n,
                            chunk_size=args.chunk_size or 512, **common)
    print(f"feedback for {len(examples)} queries x {n} candidates in {path}")
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
                          overwrite=args.overwrite, scale=args.scale, margin=args.margin)
    card = read_card(out)
    print(f"trained retriever in {out}: {card['loss']} loss {card['initial_loss']:.4f} -> "
          f"{card['final_loss']:.4f} over {card['steps']} steps")
    if card["loss"] == "ceil":
        print(f"trained for the DPP selector at scale {card['dpp_scale']}: {card['use']}")
    print(f"use it with: ricl index DATA --retriever {out} --out INDEX_DIR")
    return 0


def _train_multitask(args: argparse.Namespace) -> int:
    from ricl.errors import ConfigError
    from training.multitask import suite_tasks, train_udr
    from training.train import read_card

    instructions = {}
    for given in args.instruction:
        name, sep, text = given.partition("=")
        if not sep or not text.strip():
            raise ConfigError(f"--instruction {given!r}: write SUITE=TEXT, e.g. "
                              "trec='Classify the question by the type of its answer: '.")
        instructions[name] = text
    unknown = sorted(set(instructions) - set(args.suite))
    if unknown:
        raise ConfigError(f"--instruction names {unknown}, which are not among --suite {args.suite}.")
    tasks = suite_tasks(args.suite, args.n_queries, pool_size=args.pool_size, seed=args.split_seed,
                        instructions=instructions)
    out = train_udr(tasks, args.work, args.out, rounds=args.rounds, n_candidates=args.candidates,
                    loss=args.loss, base_model=args.base_model, lm=args.lm, dtype=args.dtype,
                    lm_batch_size=args.lm_batch_size, progress=not args.quiet,
                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    temperature=args.temperature, retriever_temperature=args.retriever_temperature,
                    seed=args.seed, checkpoint_every=args.checkpoint_every,
                    resume=not args.no_resume, max_steps=args.max_steps, overwrite=args.overwrite)
    card = read_card(out)
    print(f"multi-task retriever in {out} ({len(tasks)} suites, {args.rounds} rounds): "
          f"{card['loss']} loss {card['initial_loss']:.4f} -> {card['final_loss']:.4f} over "
          f"{card['steps']} steps")
    name = args.suite[0]
    print(f"use it with a suite's instruction: PromptBuilder(corpus, retriever={str(out)!r}, "
          f"retriever_options={{'query_prompt_name': {name!r}}}), or "
          "{'query_prompt': 'an instruction for a new task: '}")
    return 0
