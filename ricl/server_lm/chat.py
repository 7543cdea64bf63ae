"""``OpenAIChatLM``: the ``LM`` protocol over an OpenAI-compatible ``/v1/chat/completions`` server.

Many served models are reachable only through the chat endpoint. A prompt is a
list of messages (``{"role": ..., "content": ...}``), a ``ricl.Prompt`` built
with ``format="chat"`` (its ``messages``), or a plain string, sent as one user
message; the server applies the model's chat template.

Scoring a continuation: the messages plus an assistant message holding the
continuation, sent with ``continue_final_message=true`` (the template leaves
that turn open) and ``prompt_logprobs=0`` (vLLM); the continuation's tokens are
the last tokens of the templated prompt, read back from the end of the
``prompt_logprobs`` list. A server that returns no prompt log-probs (OpenAI's
own API, most gateways) reports ``top_logprobs`` for generated tokens only:
the client then logs a warning once and scores every continuation from the
first answer token alone (``scoring="first-token"``, see
``OpenAICompletionsLM``), exact for single-token labels and an approximation
(the first token's log-prob) for longer ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ricl.errors import ConfigError, ServerResponseError
from ricl.server_lm.client import OpenAICompletionsLM
from ricl.server_lm.logprobs import first_token_top, tail_logprobs

log = logging.getLogger(__name__)

Messages = tuple[tuple[str, str], ...]  # hashable: identical requests are sent once
GREEDY_CHAT = {"temperature": 0.0, "top_p": 1.0}


class OpenAIChatLM(OpenAICompletionsLM):
    """``ricl.LM`` over an OpenAI-compatible ``/v1/chat/completions`` server (vLLM, OpenAI-style APIs).

    Takes the arguments of ``OpenAICompletionsLM``; ``scoring`` is
    ``"prompt_logprobs"`` (the default: exact, vLLM) or ``"first-token"``, and
    becomes ``"first-token"`` by itself, with a warning, when the server answers
    a scoring request without prompt log-probs. ``count_tokens`` counts plain
    text, as the builder's budget asks; a chat template adds its own tokens
    around each message.
    """

    def __init__(self, base_url: str, *args: Any, scoring: str = "prompt_logprobs", **kwargs: Any):
        if scoring == "echo":
            raise ConfigError("scoring='echo' is the completions API's shape; a chat server scores with "
                              "'prompt_logprobs' or 'first-token'.")
        super().__init__(base_url, *args, scoring=scoring, **kwargs)

    _fresh_turn = True

    def _prompt_list(self, prompts: Sequence[Any]) -> list[Messages]:
        if isinstance(prompts, (str, Mapping)) or hasattr(prompts, "messages"):
            raise ConfigError("prompts must be a list of prompts: wrap one as [prompt].")
        return [_messages(prompt, i) for i, prompt in enumerate(prompts)]

    def _post_chat(self, messages: Messages, **fields: Any) -> dict[str, Any]:
        body = {"messages": [{"role": role, "content": content} for role, content in messages], **fields}
        answer = self._post("/chat/completions", body)
        if not isinstance(answer, dict):
            raise ServerResponseError(f"{self.base_url}/chat/completions did not answer an object.")
        return answer

    def _generate_one(self, prompt: Messages, max_new_tokens: int, stop: list[str]) -> str:
        fields: dict[str, Any] = {"max_tokens": int(max_new_tokens), **GREEDY_CHAT}
        if stop:
            fields["stop"] = stop
        message = self._first_choice(self._post_chat(prompt, **fields)).get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ServerResponseError(f"{self.base_url}/chat/completions returned a choice without content.")
        return content

    def _continuation_logprobs(self, prompt: Messages, continuation: str) -> list[float | None] | None:
        answer = self._post_chat(prompt + (("assistant", continuation),), max_tokens=1, prompt_logprobs=0,
                                 add_generation_prompt=False, continue_final_message=True,
                                 temperature=0.0)
        entries = answer.get("prompt_logprobs")
        if entries is None:
            choices = answer.get("choices")
            if choices and isinstance(choices[0], dict):
                entries = choices[0].get("prompt_logprobs")
        return tail_logprobs(entries, answer.get("prompt_token_ids"), continuation)

    def _first_token_top(self, prompt: Messages) -> dict[str, float] | None:
        answer = self._post_chat(prompt, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs,
                                 temperature=0.0)
        return first_token_top(self._first_choice(answer))

    def _fall_back_to_first_token(self) -> bool:
        log.warning("%s/chat/completions returns no prompt log-probs; scoring each continuation from the "
                    "first answer token's top %d log-probs instead (exact for single-token labels).",
                    self.base_url, self.top_logprobs)
        self.scoring = "first-token"
        return True


def _messages(prompt: Any, index: int) -> Messages:
    """One prompt as hashable (role, content) pairs."""
    if isinstance(prompt, str):
        return (("user", prompt),)
    messages = getattr(prompt, "messages", prompt)  # a ricl.Prompt built with format="chat"
    if hasattr(prompt, "messages") and not messages:
        return (("user", str(prompt.text)),)
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError(f"prompts[{index}] must be a string, a non-empty list of messages, or a "
                          f"ricl.Prompt; got {type(prompt).__name__}.")
    out = []
    for message in messages:
        role, content = (message.get("role"), message.get("content")) if isinstance(message, Mapping) \
            else (None, None)
        if not isinstance(role, str) or not isinstance(content, str):
            raise ConfigError(f"prompts[{index}] holds a message without string 'role' and 'content': "
                              f"{message!r}.")
        out.append((role, content))
    return tuple(out)
