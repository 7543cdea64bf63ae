"""`ricl demo`, the main job: a plug-in of the ``ricl`` command (entry-point group
``ricl.commands``, see ``ricl.registry``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ricl.selectors import SELECTOR_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``ricl`` parser."""
    demo = subparsers.add_parser("demo", help="the main job: compare selectors on a packaged suite")
    demo.add_argument("--suite", default="trec")
    demo.add_argument("-k", type=int, default=8)
    demo.add_argument("--n-test", type=int, default=200)
    demo.add_argument("--pool-size", type=int, default=5000)
    demo.add_argument("--split-seed", type=int, default=0, help="seed of the test/pool split")
    demo.add_argument("--selectors", nargs="+", default=list(SELECTOR_NAMES), choices=SELECTOR_NAMES)
    demo.add_argument("--backend", default="chroma", choices=("chroma", "exact"))
    demo.add_argument("--workdir", help="where the index and results go (default: $RICL_HOME/demo)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from eval.experiments.demo import run_demo

    run_demo(suite=args.suite, k=args.k, n_test=args.n_test, pool_size=args.pool_size,
             split_seed=args.split_seed, selectors=args.selectors, backend=args.backend,
             workdir=Path(args.workdir) if args.workdir else None)
    return 0
