"""``LM`` over an OpenAI-compatible completion server that returns prompt log-probs (vLLM, llama.cpp).

``client`` holds ``OpenAICompletionsLM``; ``logprobs`` reads a continuation's
log-probs out of a completion that echoed its prompt. The HTTP transport and
its retry policy are ``ricl.transport``, shared with the Chroma server backend.
"""

from ricl.server_lm.client import GREEDY, OpenAICompletionsLM
from ricl.server_lm.logprobs import continuation_logprobs

__all__ = ["GREEDY", "OpenAICompletionsLM", "continuation_logprobs"]
