"""LLM-feedback scoring of candidate demonstrations and bi-encoder fine-tuning.

``score_candidates`` writes a resumable feedback file of (query, candidates,
LM scores); ``train_retriever`` fine-tunes a sentence-transformers bi-encoder on
it and saves a model directory that ``ricl.PromptBuilder(corpus, retriever=dir)``
loads like any other. ``score_sets`` scores sampled sets of candidates instead,
and ``train_retriever(loss="ceil")`` trains the DPP selector's encoder on them
(CEIL). ``train_multitask`` trains one retriever on feedback pooled from several
tasks behind task instructions, and ``train_udr`` runs that recipe with rounds of
re-mining (UDR). Imports are lazy: transformers is slow to import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CEILLoss", "FeedbackError", "FeedbackRecord", "ListwiseDistillLoss", "SetFeedbackRecord",
           "Task", "TaskFeedback", "read_feedback", "read_set_feedback", "score_candidates",
           "score_sets", "train_multitask", "train_retriever", "train_udr"]

_WHERE = {"FeedbackError": "training.feedback", "FeedbackRecord": "training.feedback",
          "read_feedback": "training.feedback", "score_candidates": "training.feedback",
          "SetFeedbackRecord": "training.set_feedback", "read_set_feedback": "training.set_feedback",
          "score_sets": "training.set_feedback",
          "train_retriever": "training.train", "train_multitask": "training.train",
          "TaskFeedback": "training.train", "Task": "training.multitask",
          "train_udr": "training.multitask",
          "ListwiseDistillLoss": "training.losses", "CEILLoss": "training.losses"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
