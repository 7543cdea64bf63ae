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


def _inside(starts: list[int], ends: list[int], values: list[Any], prompt_chars: int,
            text_chars: int) -> list[float | None]:
    """Values of tokens that overlap ``[prompt_chars, text_chars)``, generated tokens excluded."""
    return [None if v is None else float(v) for s, e, v in zip(starts, ends, values)
            if s < text_chars and (s >= prompt_chars or e > prompt_chars)]

