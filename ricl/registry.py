"""The one place where the core names code that lives above it.

Dependencies point one way (eval -> training -> retrievers -> ricl core), yet the
core must reach up in two places: ``PromptBuilder(retriever="bm25")`` resolves a
retriever by name, and the ``ricl`` command offers the subcommands that ``eval``
and ``training`` define. Both go through import strings resolved on first use,
as scikit-learn and sentence-transformers resolve their plug-ins, never through an
import statement; ``tests/test_layers.py`` holds every other module to that.

CLI subcommands are plug-ins: any installed distribution may add some through the
entry-point group ``ricl.commands`` (ricl's own ``eval`` and ``training`` do, in
pyproject.toml). Each entry point names a ``register(subparsers)`` function that
adds its parsers and sets ``handler`` on each, a function of the parsed arguments
returning the exit code.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from ricl.errors import ConfigError

COMMAND_GROUP = "ricl.commands"

# What the core and the packages below eval use from above them, by import string.
PLUGINS = {
    "make_retriever": "retrievers:make_retriever",
    "load_retriever": "retrievers:load_retriever",
    "BM25Retriever": "retrievers:BM25Retriever",
    "DenseRetriever": "retrievers:DenseRetriever",
    # (name, pool_size, seed) -> (Corpus, template): `ricl score/train --suite`
    "suite_corpus": "eval.suites:suite_corpus",
}


@cache
def resolve(name: str) -> Any:
    """The object registered under ``name``, imported on first use."""
    try:
        target = PLUGINS[name]
    except KeyError:
        raise ConfigError(f"nothing is registered as {name!r}; known: {sorted(PLUGINS)}.") from None
    return load(target)


def load(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def command_plugins() -> list[Any]:
    """The ``register(subparsers)`` functions of every installed command plug-in,
    in name order so ``ricl --help`` lists them the same way every time."""
    found = sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)
    return [ep.load() for ep in found]
