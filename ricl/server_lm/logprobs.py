"""Reading a continuation's log-probs out of an OpenAI-compatible completion that echoed its prompt.

One request per (prompt, continuation) with ``echo=true, logprobs=1,
max_tokens=1`` on the joined text (``max_tokens=0`` would be the natural ask,
but llama-cpp-python reads 0 as "no limit"). The server answers with every
token of the text, its log-probability and its character offset
(``logprobs.tokens / token_logprobs / text_offset``; a vLLM response that
carries ``prompt_logprobs`` instead is read too). The score is the sum over the
continuation's tokens: those that start at or after ``len(prompt)``, plus a
token that starts inside the prompt and ends inside the continuation. Such a
token exists when the tokenizer merges across the boundary (a prompt ending in
a space, a continuation starting with a letter); it is counted whole, so its
log-probability also covers the prompt's last characters, because the server
has no token that holds only the continuation's part. ``TransformersLM``
tokenizes the two apart instead; both agree when the prompt ends where the
tokenizer cuts anyway, which ricl's templates arrange (``"...Answer type:"``
then ``" location"``).

A chat request's prompt is templated by the server, so its text is not known
here: ``tail_logprobs`` takes the tokens covering the continuation from the end
of ``prompt_logprobs``. Servers that report generated tokens only give
``first_token_top`` (the first answer token's top candidates) and
``first_token_score`` reads a label's first token from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def continuation_logprobs(choice: Mapping[str, Any], prompt_chars: int,
                          text: str) -> list[float | None] | None:
    """Log-probs of the tokens of ``text[prompt_chars:]`` in one completion choice of an echo request.

    Reads the OpenAI echo shape (``logprobs.tokens / token_logprobs /
    text_offset``, llama-cpp-python and vLLM) or vLLM's ``prompt_logprobs``
    list. Returns ``None`` when the choice holds neither for the prompt's
    tokens (a server that reports generated tokens only).
    """
    echoed = _from_echo(choice.get("logprobs"), prompt_chars, text)
    if echoed is not None:
        return echoed
    return _from_prompt_logprobs(choice.get("prompt_logprobs"), choice.get("prompt_token_ids"),
                                 prompt_chars, text)


def _from_echo(logprobs: Any, prompt_chars: int, text: str) -> list[float | None] | None:
    if not isinstance(logprobs, Mapping):
        return None
    tokens, values, offsets = (logprobs.get(k) for k in ("tokens", "token_logprobs", "text_offset"))
    if not (isinstance(tokens, list) and isinstance(values, list) and isinstance(offsets, list)):
        return None
    if not tokens or not len(tokens) == len(values) == len(offsets):
        return None
    # vLLM echoes a start token as text ("<s>") that the prompt does not hold, and counts it
    # in the offsets: measure them from where the text begins among the echoed tokens.
    joined = "".join(t if isinstance(t, str) else "" for t in tokens)
    if len(joined) < len(text):
        return None  # generated tokens only: the prompt was not echoed
    shift = max(joined.find(text), 0)
    starts = [int(o) - shift for o in offsets]
    ends = starts[1:] + [starts[-1] + len(tokens[-1] or "")]
    # Without echo, every token starts at or after the text's end and nothing is inside.
    return _inside(starts, ends, values, prompt_chars, len(text)) or None


def _from_prompt_logprobs(entries: Any, token_ids: Any, prompt_chars: int,
                          text: str) -> list[float | None] | None:
    """vLLM's ``prompt_logprobs``: per prompt token ``None`` (the first) or ``{token_id: {logprob,
    rank, decoded_token}}`` holding the prompt's own token, plus the top-k when k > 0."""
    chosen = _own_tokens(entries, token_ids)
    if chosen is None:
        return None
    # Place tokens from the end (the text's last token ends at len(text)): a start token
    # without text, or None, may open the list.
    starts, ends, values, end = [], [], [], len(text)
    for item in reversed(chosen):
        piece = item[1] if item is not None else text[:end]
        starts.append(end - len(piece))
        ends.append(end)
        values.append(item[0] if item is not None else None)
        end -= len(piece)
    return _inside(starts[::-1], ends[::-1], values[::-1], prompt_chars, len(text))


def tail_logprobs(entries: Any, token_ids: Any, continuation: str) -> list[float | None] | None:
    """Log-probs of the tokens that make up the last ``len(continuation)`` characters of a prompt
    the server built itself (a chat request's templated messages), read from ``prompt_logprobs``.

    The text is the decoded tokens joined; ``None`` when it does not end with the continuation
    (or there are no prompt log-probs at all).
    """
    chosen = _own_tokens(entries, token_ids)
    if chosen is None:
        return None
    pieces = [item[1] if item is not None else "" for item in chosen]
    text = "".join(pieces)
    if not continuation or not text.endswith(continuation):
        return None
    starts, position = [], 0
    for piece in pieces:
        starts.append(position)
        position += len(piece)
    ends = starts[1:] + [len(text)]
    values = [item[0] if item is not None else None for item in chosen]
    return _inside(starts, ends, values, len(text) - len(continuation), len(text))


def _own_tokens(entries: Any, token_ids: Any) -> list[tuple[float, str] | None] | None:
    """(log-prob, decoded text) of each prompt token in a ``prompt_logprobs`` list, ``None`` for a
    token without one (the first); ``None`` in all when the list cannot be read."""
    if not isinstance(entries, list) or len(entries) < 2:
        return None
    ids = token_ids if isinstance(token_ids, list) and len(token_ids) == len(entries) else None
    chosen: list[tuple[float, str] | None] = []
    for i, entry in enumerate(entries):
        if entry is None:
            chosen.append(None)
            continue
        if not isinstance(entry, Mapping) or not entry:
            return None
        # Which entry is the prompt's own token: the one named by prompt_token_ids, or the
        # only one (prompt_logprobs=0); with top-k and no ids it cannot be told.
        if ids is not None:
            own = entry.get(str(ids[i]), entry.get(ids[i]))
        else:
            own = next(iter(entry.values())) if len(entry) == 1 else None
        if not isinstance(own, Mapping) or "logprob" not in own:
            return None
        chosen.append((float(own["logprob"]), str(own.get("decoded_token") or "")))
    return chosen


def first_token_top(choice: Mapping[str, Any]) -> dict[str, float] | None:
    """``{token text: log-prob}`` of the top candidates for the first generated token of a
    completion choice (``logprobs.top_logprobs[0]``) or a chat choice
    (``logprobs.content[0].top_logprobs``); ``None`` when the choice holds neither."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return None
    top = logprobs.get("top_logprobs")
    if isinstance(top, list) and top and isinstance(top[0], Mapping):  # completions
        return {str(token): float(value) for token, value in top[0].items() if value is not None}
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], Mapping):  # chat
        entries = content[0].get("top_logprobs")
        if isinstance(entries, list):
            return {str(e["token"]): float(e["logprob"]) for e in entries
                    if isinstance(e, Mapping) and "token" in e and e.get("logprob") is not None}
    return None


def first_token_score(top: Mapping[str, float], continuation: str, *,
                      fresh_turn: bool = False) -> float | None:
    """The log-prob of the continuation's first token among the first answer token's top
    candidates: the longest candidate the continuation starts with; with ``fresh_turn`` (a chat
    answer, which starts a turn of its own) also compared without leading spaces when none
    matches as is. ``None`` when no candidate does (its first token is not in the top k)."""
    ways = [(continuation, lambda t: t)]
    if fresh_turn:
        ways.append((continuation.lstrip(), lambda t: t.lstrip()))
    for text, token_text in ways:
        matches = [(len(token_text(t)), value) for t, value in top.items()
                   if token_text(t) and text.startswith(token_text(t))]
        if matches:
            return max(matches)[1]
    return None


def _inside(starts: list[int], ends: list[int], values: list[Any], prompt_chars: int,
            text_chars: int) -> list[float | None]:
    """Values of tokens that overlap ``[prompt_chars, text_chars)``, generated tokens excluded."""
    return [None if v is None else float(v) for s, e, v in zip(starts, ends, values)
            if s < text_chars and (s >= prompt_chars or e > prompt_chars)]

