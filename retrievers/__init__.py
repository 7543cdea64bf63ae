"""Where candidate demonstrations come from: BM25, dense and fine-tuned bi-encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrievers.bm25 import BM25Retriever
from retrievers.dense import DenseRetriever
from ricl.errors import ConfigError, IndexLoadError
from ricl.io import recover_dir
from ricl.retrieval import Candidates, Retriever

__all__ = ["BM25Retriever", "Candidates", "DenseRetriever", "Retriever", "load_retriever",
           "make_retriever"]

_KINDS = {"bm25": BM25Retriever, "dense": DenseRetriever}


def make_retriever(spec: Any, *, device: Any = None, **options: Any) -> Retriever:
    """"bm25", "dense", "dense:chroma", "chroma://host:port/collection" (dense on a Chroma
    server), a sentence-transformers model dir, or a Retriever. ``device`` places a
    dense retriever's embedder ("auto", "cpu", "cuda", "cuda:N"); BM25 has none."""
    if isinstance(spec, Retriever) and not isinstance(spec, (str, Path)):
        return spec
    if device is not None and not (isinstance(spec, str) and spec.partition(":")[0] == "bm25"):
        options["device"] = device
    if isinstance(spec, str) and spec.startswith("chroma://"):
        return DenseRetriever(backend="chroma-server", server=spec, **options)
    if isinstance(spec, Path) or (isinstance(spec, str) and ("/" in spec or Path(spec).is_dir())):
        path = Path(spec)
        if not path.is_dir():
            raise ConfigError(f"retriever={str(spec)!r} is neither 'bm25'/'dense' nor an existing "
                              "sentence-transformers model directory.")
        return DenseRetriever(model=str(path), **options)
    if isinstance(spec, str):
        kind, _, backend = spec.partition(":")
        if kind == "dense" and backend:
            options.setdefault("backend", backend)
        elif backend:
            raise ConfigError(f"retriever={spec!r}: only 'dense' takes a backend suffix "
                              "('dense:exact' or 'dense:chroma').")
        if kind in _KINDS:
            return _KINDS[kind](**options)
    raise ConfigError(f"retriever={spec!r} is unknown. Use 'bm25', 'dense', 'dense:chroma', "
                      "'chroma://HOST:PORT/COLLECTION', a path "
                      "to a sentence-transformers model directory, or a Retriever object.")


def load_retriever(path: str | Path) -> Retriever:
    """Load whatever retriever ``save(path)`` wrote."""
    recover_dir(path)
    if Path(path).exists() and not Path(path).is_dir():
        raise IndexLoadError(f"{path} is a file, not a saved ricl index. Point to the "
                             "directory that save() wrote.")
    card_path = Path(path) / "retriever.json"
    try:
        kind = json.loads(card_path.read_text())["kind"]
    except FileNotFoundError:
        raise IndexLoadError(f"{path} is not a saved ricl index (no retriever.json).") from None
    except OSError as exc:
        raise IndexLoadError(f"{card_path} cannot be read ({exc}).") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexLoadError(f"{card_path} is corrupted ({exc}). Rebuild the index.") from None
    if not isinstance(kind, str) or kind not in _KINDS:
        raise IndexLoadError(f"{card_path} names an unknown retriever kind {kind!r}.")
    return _KINDS[kind].load(path)
