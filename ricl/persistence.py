"""A prompt builder on disk: ``builder.json`` (settings) beside the saved retriever
(index and corpus), in one directory marked as ricl's own and swapped in atomically.

Custom objects are not persisted: a builder with a user's selector or tokenizer
object saves, and ``load`` asks for the object again; a retriever without
``save`` cannot be saved at all, and ``save`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ricl.errors import ConfigError, IndexLoadError, RiclError
from ricl.io import atomic_dir, check_dir_target, recover_dir
from ricl.registry import resolve
from ricl.selectors import BATCH_AWARE, make_selector
from ricl.template import Template

BUILDER_KIND = "prompt-builder"  # the kind in a saved builder's ricl.io marker
FORMAT = 1  # of builder.json


def save_builder(builder: Any, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``builder``'s index, corpus and settings to ``path`` (see ``PromptBuilder.save``)."""
    if not hasattr(builder.retriever, "save"):
        raise ConfigError(f"this builder's retriever ({builder.retriever_kind}) is your own "
                          "object without save(); custom retrievers are not persisted. Save your "
                          "corpus and rebuild the builder, or give the retriever a save().")
    check_dir_target(path, BUILDER_KIND, overwrite=overwrite)
    builder.index()
    template, selector = builder.template, builder.selector
    config = {
        "format": FORMAT, "k": builder.k, "max_tokens": builder.max_tokens,
        "order": builder.order, "seed": builder.seed, "exclude_self": builder.exclude_self,
        "prompt_format": builder.format,
        "template": {"text": template.text, "output_slot": template.output_slot,
                     "separator": template.separator, "instructions": template.instructions},
        "selector": selector.config() if hasattr(selector, "config")
        else {"name": getattr(selector, "name", "custom"), "custom": True},
        "tokenizer": builder.tokens.card(),
    }
    with atomic_dir(path, BUILDER_KIND, overwrite=overwrite) as tmp:
        builder.retriever.save(tmp / "retriever")
        (tmp / "builder.json").write_text(json.dumps(config, indent=2) + "\n")


def builder_arguments(path: str | Path, *, selector: Any = None,
                      tokenizer: Any = None) -> dict[str, Any]:
    """The ``PromptBuilder`` arguments a saved builder was made with, its retriever
    loaded; a damaged directory is an ``IndexLoadError``, never a deep library error."""
    path = Path(path)
    recover_dir(path)
    if path.exists() and not path.is_dir():
        raise IndexLoadError(f"{path} is a file, not a saved PromptBuilder. Point to the "
                             "directory that builder.save() wrote.")
    try:
        config = json.loads((path / "builder.json").read_text())
    except FileNotFoundError:
        raise IndexLoadError(f"{path} is not a saved PromptBuilder (no builder.json). "
                             "Point to the directory that builder.save() wrote.") from None
    except OSError as exc:
        raise IndexLoadError(f"{path}/builder.json cannot be read ({exc}).") from None
    except ValueError as exc:
        raise IndexLoadError(f"{path}/builder.json is corrupted ({exc}). Save again.") from None
    retriever = resolve("load_retriever")(path / "retriever")
    try:
        if selector is None:
            options = dict(config["selector"])
            if options.pop("custom", False):
                raise ConfigError(f"{path} was saved with a custom selector; pass selector=... "
                                  "to load().")
            name = options.pop("name")
            selector = BATCH_AWARE[name](**options) if name in BATCH_AWARE else \
                make_selector(name, **options)
        if tokenizer is None:
            tokenizer = config["tokenizer"]
            if tokenizer == "custom":
                raise ConfigError(f"{path} was saved with a custom tokenizer object; "
                                  "pass tokenizer=... to load().")
        t = config["template"]
        return dict(corpus=retriever.corpus, retriever=retriever, selector=selector,
                    tokenizer=tokenizer,
                    template=Template(t["text"], t["output_slot"], t["separator"],
                                      t["instructions"]),
                    k=config["k"], max_tokens=config["max_tokens"], order=config["order"],
                    seed=config["seed"], exclude_self=config["exclude_self"],
                    format=config.get("prompt_format", "text"))
    except RiclError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexLoadError(f"{path}/builder.json is damaged ({type(exc).__name__}: {exc}). "
                             "Save the builder again.") from None
