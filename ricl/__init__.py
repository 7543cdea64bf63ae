"""ricl: retrieval-augmented in-context learning.

    import ricl
    corpus = ricl.Corpus.from_records(records, input="text", output="label")
    builder = ricl.PromptBuilder(corpus, retriever="dense", selector="dpp", k=8,
                                 template="Review: {input}\\nSentiment: {output}")
    prompt = builder.build("a gripping, beautifully shot film")

Names are imported lazily, so ``import ricl`` is fast and pulls in torch only
when a model is actually needed.
"""

from __future__ import annotations

import importlib
import os

# Nothing in ricl may reach a model hub: set this before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

__version__ = "0.1.0"

_EXPORTS = {
    "Corpus": "ricl.data",
    "Example": "ricl.data",
    "Template": "ricl.template",
    "Prompt": "ricl.prompt",
    "Demo": "ricl.prompt",
    "PromptBuilder": "ricl.builder",
    "LongContextChunker": "ricl.chunker",
    "Chunk": "ricl.chunker",
    "Selection": "ricl.selectors",
    "CandidateView": "ricl.selectors",
    "Selector": "ricl.selectors",
    "SelectorBase": "ricl.selectors",
    "make_selector": "ricl.selectors",
    "LM": "ricl.lm",
    "TransformersLM": "ricl.lm",
    "OpenAICompletionsLM": "ricl.server_lm",
    "OpenAIChatLM": "ricl.server_lm",
    "Predictor": "ricl.predictor",
    "Prediction": "ricl.predictor",
    "errors": "ricl.errors",
    "Retriever": "ricl.retrieval",
    "Candidates": "ricl.retrieval",
}
# Retrievers live above the core; their names resolve through the plug-in registry.
_REGISTERED = ("BM25Retriever", "DenseRetriever", "make_retriever", "load_retriever")

__all__ = sorted([*_EXPORTS, *_REGISTERED])


def __getattr__(name: str):
    if name in _REGISTERED:
        from ricl.registry import resolve

        value = resolve(name)
    elif name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = module if name == "errors" else getattr(module, name)
    else:
        raise AttributeError(f"module 'ricl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
