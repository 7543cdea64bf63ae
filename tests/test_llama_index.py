"""ricl inside a real LlamaIndex query pipeline, offline (no LLM calls)."""

import pytest

llama_core = pytest.importorskip("llama_index.core")


def test_ricl_retriever_and_placement_in_a_query_engine(dense, trec_queries, tokenizer):
    from llama_index.core import Settings
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers import get_response_synthesizer

    from ricl.llama_index import EdgesPlacement, RiclRetriever

    Settings.llm = None  # offline: LlamaIndex falls back to its mock LLM
    retriever = RiclRetriever(dense, top_k=6)
    engine = RetrieverQueryEngine(
        retriever=retriever,
        node_postprocessors=[EdgesPlacement(tokenizer=tokenizer, bias=0.5)],
        response_synthesizer=get_response_synthesizer(response_mode="no_text"),
    )
    response = engine.query(trec_queries[0])
    nodes = response.source_nodes
    assert len(nodes) == 6
    scores = [n.score for n in nodes]
    best = sorted(scores, reverse=True)
    assert scores[-1] == best[0] and scores[0] == best[1]  # the two best at the two ends
    assert min(scores) in scores[2:4]  # the weakest in the middle
    retrieved = dense.search([trec_queries[0]], n=6)
    assert {n.node.node_id for n in nodes} == set(retrieved.ids[0])
    assert all("output" in n.node.metadata for n in nodes)


def test_placement_postprocessor_applies_a_budget(tokenizer):
    from llama_index.core.schema import NodeWithScore, TextNode

    from ricl.llama_index import EdgesPlacement

    nodes = [NodeWithScore(node=TextNode(text=f"passage number {i} " * 5), score=i / 10)
             for i in range(8)]
    kept = EdgesPlacement(tokenizer=tokenizer, budget_tokens=60).postprocess_nodes(nodes)
    assert 0 < len(kept) < 8
    assert {n.score for n in kept} == set(sorted(n.score for n in nodes)[-len(kept):])
