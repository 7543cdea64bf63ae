"""LLM-feedback scoring of candidate demonstrations and bi-encoder fine-tuning.

``score_candidates`` writes a resumable feedback file of (query, candidates,
LM scores); ``train_retriever`` fine-tunes a sentence-transformers bi-encoder on
it and saves a model directory that ``ricl.PromptBuilder(corpus, retriever=dir)``
loads like any other. Imports are lazy: transformers is slow to import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FeedbackError", "FeedbackRecord", "ListwiseDistillLoss", "read_feedback",
           "score_candidates", "train_retriever"]

_WHERE = {"FeedbackError": "training.feedback", "FeedbackRecord": "training.feedback",
          "read_feedback": "training.feedback", "score_candidates": "training.feedback",
          "train_retriever": "training.train", "ListwiseDistillLoss": "training.losses"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
