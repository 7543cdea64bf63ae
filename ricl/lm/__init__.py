"""Language models for ricl: the ``LM`` protocol and the in-process transformers adapter.

One module per idea: ``protocol`` (what an LM must do, and the argument checks
every adapter shares), ``batching``, ``pairs`` (``score``), ``choices``
(``score_choices``), ``generation``, and ``transformers_lm`` (the adapter that
wires them to a local model). The adapter for OpenAI-compatible servers lives in
``ricl.server_lm``. ``prefix_tree`` computes each token prefix shared by prompts of
a batch once (label scoring with ``share_prefixes``); LM feedback's two-level form
of it (a candidate demo, then each query) is ``training.prefix_cache``.
"""

from ricl.lm.protocol import (
    LM,
    Normalize,
    choice_args,
    cut_at_stop,
    generation_args,
    pair_args,
    text_list,
)
from ricl.lm.transformers_lm import TransformersLM

__all__ = [
    "LM",
    "Normalize",
    "TransformersLM",
    "choice_args",
    "cut_at_stop",
    "generation_args",
    "pair_args",
    "text_list",
]
