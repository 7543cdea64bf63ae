"""Supporting documents for a prompt (RAG): checked, chunked and scored per query.

A document is a string (split into token-bounded chunks by the builder's
``LongContextChunker`` and scored by the dense encoder's cosine with the query, or
by its given order when there is no encoder), a ``Chunk``, or a ``(text, score)``
pair whose score the caller chose. The builder then places the best within the
budget (``LongContextChunker.place``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ricl.chunker import Chunk
from ricl.errors import ConfigError
from ricl.text import check_text

Scored = tuple[str, str, float]  # (document id, text, score)


def score_documents(queries: Sequence[str], documents: Sequence[Sequence[Any]],
                    split: Callable[..., Sequence[Chunk]],
                    encode: Callable[[list[str]], np.ndarray] | None) -> list[list[Scored]]:
    """(doc id, text, score) per item and query; every text checked at the door."""
    scored = []
    for qi, (query, items) in enumerate(zip(queries, documents)):
        if isinstance(items, (str, bytes)):
            raise ConfigError(f"documents for query {qi} must be a list, not one string.")
        pieces, given = [], []
        for di, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2:
                text, score = item
                text = text.text if isinstance(text, Chunk) else text
                given.append((f"{di}", document_text(text, qi, di), _score(score, qi, di)))
            elif isinstance(item, Chunk):
                pieces.append((f"{item.doc_id}#{item.index}", document_text(item.text, qi, di)))
            else:
                for chunk in split(document_text(item, qi, di), doc_id=str(di)):
                    pieces.append((f"{chunk.doc_id}#{chunk.index}", chunk.text))
        if pieces and encode is not None:
            vectors = encode([query] + [text for _, text in pieces])
            sims = vectors[1:] @ vectors[0]
            given += [(pid, text, float(s)) for (pid, text), s in zip(pieces, sims)]
        else:
            given += [(pid, text, -float(i)) for i, (pid, text) in enumerate(pieces)]
        scored.append(given)
    return scored


def document_text(item: Any, query: int, doc: int) -> str:
    """``item`` if it is text a tokenizer can take, else a ConfigError naming it."""
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"document {doc} of query {query} must be a non-empty string "
                          "(or a (text, score) pair).")
    return check_text(item, f"document {doc} of query {query}", ConfigError)


def _score(score: Any, query: int, doc: int) -> float:
    if isinstance(score, bool) or not isinstance(score, (int, float, np.number)) \
            or not np.isfinite(score):
        raise ConfigError(f"document {doc} of query {query}: its score {score!r} must be a "
                          "finite number, as in (text, 0.83).")
    return float(score)
