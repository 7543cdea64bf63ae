"""``OpenAICompletionsLM``: the ``LM`` protocol over an OpenAI-compatible completion server.

Works with llama-cpp-python's server (``python -m llama_cpp.server --model M.gguf
--logits_all true``) and vLLM (``vllm serve MODEL``); the C++ ``llama-server``
of llama.cpp returns log-probs for generated tokens only, so it can generate
but not score (you get a ``ServerResponseError`` that says so). How a
continuation is scored from an echoed prompt: ``ricl.server_lm.logprobs``.
Requests go through ``ricl.transport`` (httpx, bounded retries); neither the
``openai`` package nor llama-cpp-python is needed.

llama-cpp-python's server: a model whose GGUF adds no start token (SmolLM2,
Qwen2) gets echoed log-probs shifted by one token in llama-cpp-python 0.3.36,
each token scored from the distribution after itself, and no client can undo
that. Make the server add a start token, which it handles right; for SmolLM2,
``--kv_overrides tokenizer.ggml.add_bos_token=bool:true
tokenizer.ggml.bos_token_id=int:0`` (its ``<|endoftext|>``). Scores then
condition on that token too. The server also sorts the whole vocabulary in
Python for every echoed token (about 40 ms a token on one core here): it is a
reference to test against, not a way to scale; vLLM is.

vLLM answers both the OpenAI echo shape and its own ``prompt_logprobs``;
``scoring=`` picks which to ask for, or ``"first-token"`` scoring, which reads
labels off the first answer token (see ``OpenAICompletionsLM``). vLLM skips its
prefix cache for any request that asks for prompt log-probs.
``ricl.server_lm.chat.OpenAIChatLM`` is the same over ``/v1/chat/completions``;
``ricl.server_lm.vllm.VLLMServer`` starts vLLM's CPU build on loopback.

Requests run on a small thread pool; a server that batches (vLLM) joins them,
one that serializes (llama-cpp-python) queues them. They go out sorted by prompt, so
prompts that share a prefix (``PromptBuilder.build_many(share_prefixes=True)``) reach
the server one after another and hit its prefix cache; results come back in the
caller's order. Connection failures are
retried on a short, bounded schedule, then raise ``ServerUnavailableError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from tqdm.auto import tqdm

from ricl.errors import ConfigError, ServerResponseError
from ricl.lm import Normalize, choice_args, cut_at_stop, generation_args, text_list
from ricl.server_lm.logprobs import continuation_logprobs, first_token_score, first_token_top
from ricl.transport import RETRY_DELAYS, JSONClient

log = logging.getLogger(__name__)

# llama-cpp-python's server adds a repeat penalty of 1.1 unless told otherwise; greedy means none.
GREEDY = {"temperature": 0.0, "top_p": 1.0, "repeat_penalty": 1.0}
START_A_SERVER = (
    "Start it, for instance `python -m llama_cpp.server --model MODEL.gguf --logits_all true --port PORT` "
    "or `vllm serve MODEL --port PORT`, and pass base_url='http://HOST:PORT/v1'."
)
WHEN_SLOW = "raise timeout=, lower max_concurrency=, or send shorter prompts."
NEEDS_PROMPT_LOGPROBS = (" The server must return prompt log-probs: start llama-cpp-python's server with "
                         "`--logits_all true`, or use vLLM.")
# How a continuation is scored: see the class docstring.
SCORING = ("echo", "prompt_logprobs", "first-token")


class _NoPromptLogprobs(Exception):
    """The server's answer holds no log-probs for the prompt's tokens."""

_T = TypeVar("_T")
_R = TypeVar("_R")


class OpenAICompletionsLM:
    """``ricl.LM`` over an OpenAI-compatible ``/v1/completions`` server (vLLM, llama-cpp-python).

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8080/v1"``.
        model: the served model's name; ``None`` asks the server (``GET /models``,
            first entry) on first use.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        timeout: seconds to wait for one response. A request that times out is
            not retried (the server is busy, not gone): raise it for long prompts
            on a slow server.
        max_concurrency: requests in flight at once.
        retry_delays: seconds slept between tries when the server cannot be
            reached (or answers 502/503/504); one try more than delays.
        tokenizer: optional local Hugging Face tokenizer of the served model
            (e.g. ``ricl.models.load_tokenizer()`` for the default SmolLM2).
            ``count_tokens`` then runs locally, without a request per text;
            without it, ``count_tokens`` asks the server (vLLM ``/tokenize``,
            llama-cpp-python ``/extras/tokenize``).
        extra_body: fields merged into every request body, e.g. vLLM sampling
            extensions; a ``None`` value removes a field ricl would send (such as
            ``"repeat_penalty"``, which llama-cpp-python needs for plain greedy
            decoding and vLLM ignores with a warning).
        progress: show a tqdm bar over requests.
        scoring: how a continuation is scored, one request per (prompt, continuation)
            unless said otherwise:

            - ``"echo"`` (default): ``echo=true, logprobs=1`` on the joined text; the
              OpenAI shape, served by llama-cpp-python (``--logits_all true``) and vLLM.
            - ``"prompt_logprobs"``: vLLM's own ``prompt_logprobs=0`` on the joined text,
              read from the choice's ``prompt_logprobs`` list (no echoed text sent back).
            - ``"first-token"``: one request per prompt (``max_tokens=1`` with the top
              ``top_logprobs`` candidates for the first answer token); a continuation
              scores the log-prob of its first token only (the longest top candidate
              it starts with), ``-inf`` when that token is not among them. For servers
              that report generated tokens only, and for single-token labels, where it
              is exact and sends one request per prompt instead of one per label.

            The two prompt log-prob shapes give the same scores; on vLLM both skip its
            prefix cache (it needs logits for every prompt token), ``"first-token"`` does not.
        top_logprobs: candidates asked for in ``"first-token"`` scoring (OpenAI allows 20,
            vLLM ``--max-logprobs``, 20 by default).

    Nothing is sent until the first call.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 4,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        tokenizer: Any = None,
        extra_body: Mapping[str, Any] | None = None,
        progress: bool = False,
        scoring: str = "echo",
        top_logprobs: int = 20,
    ):
        parsed = urlparse(base_url) if isinstance(base_url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"base_url={base_url!r} is not an http(s) URL; write the API root, "
                              "e.g. 'http://127.0.0.1:8080/v1'.")
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive, got {timeout}.")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be a positive integer, got {max_concurrency!r}.")
        if any(not d >= 0 for d in retry_delays):
            raise ConfigError(f"retry_delays must be non-negative seconds, got {list(retry_delays)}.")
        if scoring not in SCORING:
            raise ConfigError(f"scoring={scoring!r} is unknown; choose one of {SCORING}.")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be a positive integer, got {top_logprobs!r}.")
        self.base_url = base_url.rstrip("/")
        self._root = self.base_url.removesuffix("/v1")  # where /tokenize and /extras/tokenize live
        self.model = model
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.tokenizer = tokenizer
        self.extra_body = dict(extra_body or {})
        self.progress = progress
        self.scoring = scoring
        self.top_logprobs = top_logprobs
        self._warned_missing: set[str] = set()
        self._tokenize_route: str | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = JSONClient(server="the LM server", remedy=START_A_SERVER, slow_remedy=WHEN_SLOW,
                                timeout=self.timeout, headers=headers, delays=self.retry_delays)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the connections kept alive to the server; no request can be sent after."""
        self._http.close()

    # ------------------------------------------------------------------ protocol

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """``log p(continuations[i] | prompts[i])``, shape (n,); ``ricl.server_lm.logprobs`` says where
        the continuation starts when a token straddles the boundary."""
        prompts = self._prompt_list(prompts)
        continuations = text_list(continuations, "continuations")
        if len(prompts) != len(continuations):
            raise ConfigError(f"score() pairs prompts with continuations: got {len(prompts)} prompts "
                              f"and {len(continuations)} continuations.")
        return self._score_pairs(prompts, continuations)[0]

    def score_choices(
        self, prompts: Sequence[str], choices: Sequence[str], normalize: Normalize = "sum"
    ) -> np.ndarray:
        """Every choice after every prompt, shape (n_prompts, n_choices); ``"mean"`` divides by the
        number of tokens each choice was scored over."""
        _, choices = choice_args([], choices, normalize)
        prompts = self._prompt_list(prompts)
        if any(not c for c in choices):
            raise ConfigError(f"Choices must not be empty strings: {choices!r}.")
        # Requests go out sorted (``_map``): a prompt's labels one after another, then the
        # prompt sharing the longest prefix with it, which a server's prefix cache reuses.
        sums, counts = self._score_pairs([p for p in prompts for _ in choices], choices * len(prompts))
        scores = sums.reshape(len(prompts), len(choices))
        if normalize == "mean":
            scores = scores / np.maximum(counts.reshape(scores.shape), 1)
        return scores

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Greedy (temperature 0) continuations, each cut before the first stop string."""
        _, stop = generation_args([], max_new_tokens, stop)
        prompts = self._prompt_list(prompts)
        if max_new_tokens == 0:  # llama-cpp-python would read max_tokens=0 as "no limit"
            return [""] * len(prompts)
        # Servers differ on whether the stop string is kept.
        return self._map(lambda prompt: cut_at_stop(self._generate_one(prompt, max_new_tokens, stop), stop),
                         prompts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the server tokenizes a prompt (or the local ``tokenizer``, if given)."""
        texts = text_list(texts, "texts")
        if not texts:
            return []
        if self.tokenizer is not None:
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return self._map(self._count_on_server, texts)

    # ------------------------------------------------------------------ requests (one server API)

    def _prompt_list(self, prompts: Sequence[Any]) -> list[Any]:
        """The prompts as the requests take them, each hashable (identical pairs are sent once)."""
        return text_list(prompts, "prompts")

    def _generate_one(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        body = {"prompt": prompt, "max_tokens": int(max_new_tokens), **GREEDY}
        if stop:
            body["stop"] = stop
        text = self._first_choice(self._post("/completions", body)).get("text")
        if not isinstance(text, str):
            raise ServerResponseError(f"{self.base_url}/completions returned a choice without text.")
        return text

    def _continuation_logprobs(self, prompt: str, continuation: str) -> list[float | None] | None:
        """The continuation's token log-probs, or None when the answer has no prompt log-probs."""
        text = prompt + continuation
        if self.scoring == "prompt_logprobs":
            body = {"prompt": text, "max_tokens": 1, "prompt_logprobs": 0, "temperature": 0.0}
        else:
            body = {"prompt": text, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}
        return continuation_logprobs(self._first_choice(self._post("/completions", body)), len(prompt), text)

    def _first_token_top(self, prompt: str) -> dict[str, float] | None:
        body = {"prompt": prompt, "max_tokens": 1, "logprobs": self.top_logprobs, "temperature": 0.0}
        return first_token_top(self._first_choice(self._post("/completions", body)))

    _fresh_turn = False  # whether an answer starts a turn of its own (chat): see first_token_score

    def _fall_back_to_first_token(self) -> bool:
        """Whether to score from the first answer token when the server gives no prompt log-probs."""
        return False

    def _no_prompt_logprobs(self) -> ServerResponseError:
        return ServerResponseError(
            f"{self.base_url}/completions returned no log-probabilities for the prompt's tokens, "
            "only (if any) for generated ones, so it cannot score a continuation. The server must "
            "support echo=true with logprobs: start llama-cpp-python's server with "
            "`--logits_all true`, or use vLLM; llama.cpp's own llama-server does not support it. "
            "Or score from the first answer token: scoring='first-token'."
        )

    # ------------------------------------------------------------------ scoring

    def _score_pairs(self, prompts: Sequence[Any],
                     continuations: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Summed log-probs and token counts of each (checked) pair; identical pairs are sent once."""
        if any(c and not p for p, c in zip(prompts, continuations)):
            raise ConfigError("A server cannot score a continuation after an empty prompt: the first "
                              "token of a text gets no log-probability. Give every prompt some text.")
        pairs = list(zip(prompts, continuations))
        todo = [pair for pair in dict.fromkeys(pairs) if pair[1]]
        if self.scoring == "first-token":
            results = self._score_first_tokens(todo)
        else:
            try:
                results = dict(zip(todo, self._map(lambda pair: self._score_one(*pair), todo)))
            except _NoPromptLogprobs:
                if not self._fall_back_to_first_token():
                    raise self._no_prompt_logprobs() from None
                results = self._score_first_tokens(todo)
        sums = np.array([results[pair][0] if pair[1] else 0.0 for pair in pairs], dtype=float)
        counts = np.array([results[pair][1] if pair[1] else 0 for pair in pairs], dtype=float)
        return sums, counts

    def _score_one(self, prompt: Any, continuation: str) -> tuple[float, int]:
        logprobs = self._continuation_logprobs(prompt, continuation)
        if logprobs is None:
            raise _NoPromptLogprobs()
        if any(lp is None for lp in logprobs):
            raise ServerResponseError("The server gave the continuation's first token no log-probability "
                                      "(it is the text's first token). Give the prompt some text.")
        return float(sum(logprobs)), len(logprobs)

    def _score_first_tokens(self, pairs: list[tuple[Any, str]]) -> dict[tuple[Any, str], tuple[float, int]]:
        """Each pair's score from the first answer token's top candidates: one request per prompt."""
        prompts = list(dict.fromkeys(prompt for prompt, _ in pairs))
        tops = dict(zip(prompts, self._map(self._first_token_top, prompts)))
        results = {}
        for prompt, continuation in pairs:
            top = tops[prompt]
            if top is None:
                raise ServerResponseError(f"{self.base_url} returned no top log-probs for the first "
                                          "generated token; it cannot score labels.")
            value = first_token_score(top, continuation, fresh_turn=self._fresh_turn)
            if value is None:
                if continuation not in self._warned_missing:
                    self._warned_missing.add(continuation)
                    log.warning("The first token of %r is not among the top %d answer tokens of a "
                                "prompt; it scores -inf there (raise top_logprobs=).",
                                continuation, self.top_logprobs)
                value = -np.inf
            results[(prompt, continuation)] = (value, 1)
        return results

    # ------------------------------------------------------------------ tokens

    def _count_on_server(self, text: str) -> int:
        routes = [self._tokenize_route] if self._tokenize_route else ["/tokenize", "/extras/tokenize"]
        for route in routes:
            body = {"prompt": text} if route == "/tokenize" else {"input": text}
            try:
                answer = self._post(route, body, root=True)
            except ServerResponseError as error:
                if error.status in (404, 405) and not self._tokenize_route:
                    continue
                raise
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(tokens, list):
                raise ServerResponseError(f"{self._root}{route} returned no token list.")
            self._tokenize_route = route
            return len(tokens)
        raise ServerResponseError(
            f"The server at {self._root} has no tokenize endpoint (tried /tokenize and /extras/tokenize), "
            "so it cannot count tokens. Pass the served model's tokenizer: "
            "OpenAICompletionsLM(..., tokenizer=ricl.models.load_tokenizer(PATH_OR_NONE))."
        )

    # ------------------------------------------------------------------ HTTP

    def _model_name(self) -> str:
        if self.model is None:
            answer = self._request("GET", f"{self.base_url}/models", None)
            data = answer.get("data") if isinstance(answer, dict) else None
            if not data or not isinstance(data[0], dict) or "id" not in data[0]:
                raise ServerResponseError(f"{self.base_url}/models lists no model; pass model=NAME.")
            self.model = str(data[0]["id"])
            log.info("Using the served model %r at %s.", self.model, self.base_url)
        return self.model

    def _post(self, route: str, body: dict[str, Any], root: bool = False) -> Any:
        body = {"model": self._model_name(), **body, **self.extra_body}
        body = {key: value for key, value in body.items() if value is not None}
        return self._request("POST", f"{self._root if root else self.base_url}{route}", body)

    def _request(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        try:
            return self._http.request(method, url, body)
        except ServerResponseError as error:
            raise _with_hint(error) from None

    @staticmethod
    def _first_choice(answer: Any) -> dict[str, Any]:
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ServerResponseError(f"The server's completion holds no choices: {str(answer)[:200]}")
        return choices[0]

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``[fn(x) for x in items]`` on up to ``max_concurrency`` threads, in the caller's order.

        Requests go out in sorted order (``prefix_order``): prompts that share a prefix
        one after another, so that a server's prefix cache (vLLM's automatic prefix
        caching, llama.cpp's slot cache) still holds it when the next one asks. The
        first error cancels the requests not yet started and is raised.
        """
        if items:
            self._model_name()  # once, before the threads start
        order = prefix_order(items)
        out: list[Any] = [None] * len(items)
        bar = tqdm(total=len(items), unit="req", disable=not self.progress, dynamic_ncols=True)
        try:
            if len(items) <= 1 or self.max_concurrency == 1:
                for i in order:
                    out[i] = fn(items[i])
                    bar.update()
                return out
            pool = ThreadPoolExecutor(min(self.max_concurrency, len(items)), thread_name_prefix="ricl-lm")
            try:
                for i, result in zip(order, pool.map(fn, [items[i] for i in order])):
                    out[i] = result
                    bar.update()
                return out
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            bar.close()


def prefix_order(items: Sequence[Any]) -> list[int]:
    """Indices of ``items`` (prompt texts, chat turns, or pairs of them) in sorted order,
    the depth-first order of their character trie: each item follows the one it shares
    the longest prefix with (``ricl.prefix_sharing.trie_order`` over characters, which
    needs no tokenizer). Items that do not sort keep their order."""
    try:
        return sorted(range(len(items)), key=items.__getitem__)
    except TypeError:
        return list(range(len(items)))


def _with_hint(error: ServerResponseError) -> ServerResponseError:
    """The error, with what to do added where its status or text says what went wrong."""
    message = str(error)
    if error.status is None:
        return error
    if "logits_all" in message or "logprobs" in message.lower():
        message += NEEDS_PROMPT_LOGPROBS
    if error.status in (401, 403):
        message += " Pass the server's key as api_key=."
    return ServerResponseError(message, status=error.status)
