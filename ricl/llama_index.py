"""Drop ricl into a LlamaIndex pipeline: a ricl retriever as a LlamaIndex retriever,
and ricl's placement as a node postprocessor. Needs llama-index-core; no LLM calls."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ricl.chunker import DEFAULT_BIAS, LongContextChunker


class RiclRetriever(BaseRetriever):
    """A LlamaIndex retriever over an indexed ricl retriever (BM25, dense, Chroma, ...).

    Each node is one example: text = its input, metadata = its output and fields,
    id = the example id, score = the retriever's score.
    """

    def __init__(self, retriever: Any, top_k: int = 8, **kwargs: Any):
        super().__init__(**kwargs)
        if getattr(retriever, "corpus", None) is None:
            from ricl.errors import IndexNotBuiltError

            raise IndexNotBuiltError("RiclRetriever needs an indexed ricl retriever: "
                                     "call retriever.index(corpus) first.")
        self._ricl = retriever
        self._top_k = int(top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        found = self._ricl.search([query_bundle.query_str], n=self._top_k)
        corpus = self._ricl.corpus
        nodes = []
        for row, score in zip(found.rows[0], found.scores[0]):
            example = corpus[int(row)]
            node = TextNode(text=example.text, id_=example.id,
                            metadata={"output": example.output, **dict(example.inputs)})
            nodes.append(NodeWithScore(node=node, score=float(score)))
        return nodes


class EdgesPlacement(BaseNodePostprocessor):
    """Orders (and optionally budgets) nodes with ricl's placement: by default the
    highest-scored at the two ends of the context, the lowest in the middle.

    ``budget_tokens``: keep only the highest-scored nodes that fit (None: keep all).
    """

    strategy: str = Field(default="edges")
    bias: float = Field(default=DEFAULT_BIAS)
    budget_tokens: int | None = Field(default=None)
    _chunker: LongContextChunker = PrivateAttr()

    def __init__(self, tokenizer: Any = None, **data: Any):
        super().__init__(**data)
        self._chunker = LongContextChunker(tokenizer=tokenizer, strategy=self.strategy,
                                           bias=self.bias)

    @classmethod
    def class_name(cls) -> str:
        return "RiclEdgesPlacement"

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        texts = [n.node.get_content() for n in nodes]
        scores = [n.score if n.score is not None else 0.0 for n in nodes]
        budget = self.budget_tokens if self.budget_tokens is not None else 10**12
        placement = self._chunker.place(texts, scores, budget)
        return [nodes[i] for i in placement.order]
