"""``LM`` over an OpenAI-compatible server that returns prompt log-probs (vLLM, llama.cpp).

``client`` holds ``OpenAICompletionsLM`` (``/v1/completions``); ``chat`` holds
``OpenAIChatLM`` (``/v1/chat/completions``, same options); ``logprobs`` reads a continuation's
log-probs out of a completion that echoed its prompt. The HTTP transport and
its retry policy are ``ricl.transport``, shared with the Chroma server backend.
"""

from ricl.server_lm.chat import OpenAIChatLM
from ricl.server_lm.client import GREEDY, SCORING, OpenAICompletionsLM
from ricl.server_lm.logprobs import continuation_logprobs

__all__ = ["GREEDY", "SCORING", "OpenAIChatLM", "OpenAICompletionsLM", "continuation_logprobs"]
