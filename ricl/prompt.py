"""The Prompt value object: what users inspect when a prediction looks wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Demo:
    """One demonstration as placed in the prompt.

    ``score`` is the retriever's score for this query (cosine or BM25), ``rank`` the
    order in which the selector chose it (0 = first), ``position`` its place in the
    prompt (0 = first, farthest from the query).
    """

    id: str
    fields: dict[str, str]
    output: str
    score: float | None
    rank: int
    position: int
    tokens: int


@dataclass(frozen=True)
class Dropped:
    id: str
    score: float | None
    reason: str


@dataclass(frozen=True)
class PlacedDocument:
    """A supporting document chunk as placed in the prompt (``position`` 0 = first)."""

    id: str
    text: str
    score: float
    position: int


@dataclass(frozen=True)
class Prompt:
    text: str
    query: dict[str, str]
    demos: tuple[Demo, ...]
    token_count: int
    max_tokens: int | None
    dropped: tuple[Dropped, ...] = ()
    notes: tuple[str, ...] = ()
    selector: str = ""
    retriever: str = ""
    answer_prefix: str = " "
    documents: tuple[PlacedDocument, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = ""  # whose tokens token_count and max_tokens are in
    # format="chat": the conversation whose chat-templated rendering is ``text``
    messages: tuple[dict[str, str], ...] = ()

    @property
    def demo_ids(self) -> list[str]:
        return [demo.id for demo in self.demos]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        """A short human-readable account of what went into the prompt and why."""
        lines = [f"{len(self.demos)} demos via {self.retriever}/{self.selector}, "
                 f"{self.token_count} tokens" +
                 (f" of {self.max_tokens}" if self.max_tokens else "") +
                 (f" ({self.tokenizer})" if self.tokenizer else "")]
        for demo in self.demos:
            score = "n/a" if demo.score is None else f"{demo.score:.3f}"
            text = " | ".join(demo.fields.values())
            lines.append(f"  [{demo.position}] id={demo.id} score={score} rank={demo.rank} "
                         f"-> {demo.output!r}: {text[:70]}")
        lines += [f"  dropped id={d.id}: {d.reason}" for d in self.dropped]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text
