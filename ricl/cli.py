"""The `ricl` command. The core offers `index`, `prompt`, and `add`, `update`, `remove` (change
a saved index in place); `eval`, `report`, `suites`,
`demo` (from ``eval``) and `score`, `train` (from ``training``) are plug-ins found
through ``ricl.registry``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ricl.errors import RiclError
from ricl.placement import ORDERS
from ricl.registry import command_plugins
from ricl.selectors import SELECTOR_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ricl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="index a JSONL/CSV corpus and save a prompt builder")
    index.add_argument("data", help="a .jsonl or .csv file of labelled examples")
    index.add_argument("--out", required=True,
                       help="directory to save the index into: new, empty, or an index saved "
                            "before (replaced)")
    index.add_argument("--overwrite", action="store_true",
                       help="let --out replace another kind of ricl output (never a user's "
                            "own files or directory)")
    index.add_argument("--input", nargs="+", default=["input"], help="input field name(s)")
    index.add_argument("--output", default="output", help="answer field name")
    index.add_argument("--id", default="id", help="id field name (derived from content if absent)")
    index.add_argument("--labels", nargs="+", help="label words for integer labels, in order")
    index.add_argument("--retriever", default="dense",
                       help="bm25 | dense | dense:chroma | path to a sentence-transformers model dir")
    index.add_argument("--selector", default="similarity", choices=SELECTOR_NAMES)
    index.add_argument("-k", type=int, default=8)
    index.add_argument("--template", help="e.g. 'Review: {input}\\nSentiment: {output}'")
    index.add_argument("--max-tokens", type=int)
    index.add_argument("--order", default="similar-last", choices=ORDERS)
    index.set_defaults(handler=_index)

    prompt = commands.add_parser("prompt", help="build prompts from a saved index")
    prompt.add_argument("index_dir")
    prompt.add_argument("queries", nargs="*", help="query texts (or use --queries-file)")
    prompt.add_argument("--queries-file", help="one query per line")
    prompt.add_argument("--json", action="store_true", help="print prompts with their demos as JSONL")
    prompt.add_argument("--explain", action="store_true", help="show demo ids, scores and drops")
    prompt.set_defaults(handler=_prompt)

    for verb, what in (("add", "add examples from a JSONL/CSV file to a saved index (new ids)"),
                       ("update", "upsert examples from a JSONL/CSV file by id (fix labels)")):
        change = commands.add_parser(verb, help=what)
        change.add_argument("index_dir", help="a directory `ricl index` or builder.save() wrote")
        change.add_argument("data", help="a .jsonl or .csv file with the index's field names")
        change.add_argument("--id", default="id", help="id field name (derived from content "
                                                       "if absent)")
        change.set_defaults(handler=_change)
    remove = commands.add_parser("remove", help="remove examples from a saved index by id")
    remove.add_argument("index_dir")
    remove.add_argument("--ids", nargs="+", required=True, help="ids of the examples to remove")
    remove.set_defaults(handler=_change)

    for register in command_plugins():
        register(commands)
    return parser


def _index(args) -> int:
    from ricl.builder import PromptBuilder
    from ricl.data import Corpus

    inputs = args.input[0] if len(args.input) == 1 else args.input
    corpus = Corpus.from_file(args.data, input=inputs, output=args.output, id=args.id, labels=args.labels)
    builder = PromptBuilder(corpus, retriever=args.retriever, selector=args.selector, k=args.k,
                            template=args.template, max_tokens=args.max_tokens, order=args.order)
    builder.save(args.out, overwrite=args.overwrite)
    print(f"indexed {len(corpus)} examples with {builder.retriever.kind} into {args.out}")
    return 0


def _change(args) -> int:
    """Load the saved builder, change it in place (no rebuild), save it back atomically."""
    from ricl.builder import PromptBuilder
    from ricl.data import Corpus

    builder = PromptBuilder.load(args.index_dir)
    if args.command == "remove":
        change = builder.remove(args.ids)
    else:
        corpus = builder.corpus
        inputs = list(corpus.input_names)
        records = Corpus.from_file(args.data, input=inputs[0] if len(inputs) == 1 else inputs,
                                   output=corpus.output_name, id=args.id, labels=corpus.labels)
        change = getattr(builder, args.command)(list(records))
    builder.save(args.index_dir)
    print(f"{args.index_dir}: added {len(change.added_ids)}, updated {len(change.updated_ids)}, "
          f"removed {len(change.removed_ids)}; {len(builder.corpus)} examples now")
    return 0


def _prompt(args) -> int:
    from ricl.builder import PromptBuilder

    queries = list(args.queries)
    if args.queries_file:
        text = Path(args.queries_file).read_text(encoding="utf-8")
        queries += [line for line in text.splitlines() if line.strip()]
    if not queries:
        raise RiclError("give at least one query, as an argument or with --queries-file")
    builder = PromptBuilder.load(args.index_dir)
    for prompt in builder.build_many(queries):
        if args.json:
            print(json.dumps(prompt.to_dict(), ensure_ascii=False))
        else:
            if args.explain:
                print(prompt.explain(), file=sys.stderr)
            print(prompt.text)
            print("=" * 40)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except RiclError as exc:
        print(f"ricl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
