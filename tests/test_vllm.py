"""The LM protocol against a live vLLM server (CPU build, float32) on loopback.

vLLM serves the same float32 SmolLM2 folder that ``TransformersLM`` loads, so
label scores must agree to float32 noise, not just in rank. The server starts
once for the module (about 60-80 s, then 25-45 s to compile on the first
request) from ``.venv-vllm`` (``make vllm``) or ``$RICL_VLLM_PYTHON``; without
either the module is skipped. The last test kills it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import ricl
from ricl.errors import ConfigError, ServerUnavailableError
from ricl.models import load_tokenizer
from ricl.server_lm import OpenAIChatLM, OpenAICompletionsLM, continuation_logprobs
from training.feedback import read_feedback, score_candidates

VLLM_PYTHON = Path(os.environ.get("RICL_VLLM_PYTHON")
                   or Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"no vLLM interpreter at {VLLM_PYTHON}: run `make vllm` or set RICL_VLLM_PYTHON")
    from ricl.server_lm.vllm import VLLMServer

    running = VLLMServer(python=VLLM_PYTHON, log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    running.start()
    try:
        # The first request compiles (25-45 s); pay it here, with a timeout to match.
        OpenAICompletionsLM(running.base_url, timeout=300).generate(["Warm up:"], max_new_tokens=1)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def served(server) -> OpenAICompletionsLM:
    return OpenAICompletionsLM(server.base_url, max_concurrency=4)


@pytest.fixture(scope="module")
def trec_prompts(trec, trec_corpus, bm25, trec_queries):
    """Six real TREC test questions, each after its four BM25-nearest pool questions."""
    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, k=4, template=trec.template)
    return [prompt.text for prompt in builder.build_many(trec_queries[:6])]


@pytest.fixture(scope="module")
def choices(trec):
    return [" " + label for label in trec.labels]


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
@pytest.mark.server
@pytest.mark.lm
def test_label_scores_match_the_in_process_model(server, local, trec_prompts, choices, scoring):
    lm = OpenAICompletionsLM(server.base_url, scoring=scoring, max_concurrency=4)

    remote = lm.score_choices(trec_prompts, choices)
    here = local.score_choices(trec_prompts, choices)

    assert remote.shape == here.shape == (6, 6)
    assert np.array_equal(remote.argmax(axis=1), here.argmax(axis=1))
    # Measured: 2.8e-5 at most on 10 prompts (float32 on both sides).
    assert np.max(np.abs(remote - here)) < 1e-3


@pytest.mark.server
@pytest.mark.lm
def test_each_scoring_option_asks_for_its_own_response_shape(server, trec_prompts):
    text = trec_prompts[0] + " location"
    with httpx.Client(timeout=120) as http:
        def ask(**fields):
            body = {"model": "smollm2", "prompt": text, "max_tokens": 1, "temperature": 0.0, **fields}
            return http.post(f"{server.base_url}/completions", json=body).json()["choices"][0]

        echo, prompt_logprobs = ask(echo=True, logprobs=1), ask(prompt_logprobs=0)

    # vLLM's echo answer carries both shapes (prompt_logprobs with the top-1 beside each
    # token); the prompt_logprobs answer only its own. Each is read alone, to the same values.
    assert "".join(echo["logprobs"]["tokens"]).startswith(text) and echo["logprobs"]["token_logprobs"][0] is None
    assert prompt_logprobs["logprobs"] is None and prompt_logprobs["prompt_logprobs"][0] is None
    only_echo = {"logprobs": echo["logprobs"]}
    prompt_chars = len(trec_prompts[0])
    from_echo = continuation_logprobs(only_echo, prompt_chars, text)
    from_prompt_logprobs = continuation_logprobs(prompt_logprobs, prompt_chars, text)
    assert len(from_echo) == len(from_prompt_logprobs) == 1  # " location" is one token
    assert np.allclose(from_echo, from_prompt_logprobs, atol=1e-4)


@pytest.mark.server
@pytest.mark.lm
def test_first_token_scoring_equals_prompt_logprobs_for_single_token_labels(server, trec_prompts, choices):
    tokenizer = load_tokenizer()
    single = [i for i, c in enumerate(choices) if len(tokenizer(c, add_special_tokens=False)["input_ids"]) == 1]
    exact = OpenAICompletionsLM(server.base_url, scoring="prompt_logprobs").score_choices(trec_prompts, choices)
    first = OpenAICompletionsLM(server.base_url, scoring="first-token").score_choices(trec_prompts, choices)

    assert single, choices
    exact, first = exact[:, single], first[:, single]
    found = np.isfinite(first)  # a label whose token is not among the top 20 scores -inf
    best = exact.argmax(axis=1)
    assert found[np.arange(len(best)), best].all()  # the likeliest label always is
    assert np.array_equal(first.argmax(axis=1), best)
    assert np.allclose(first[found], exact[found], atol=1e-3)


@pytest.mark.server
@pytest.mark.lm
def test_generation_and_token_counts_match_the_in_process_model(served, local, trec_prompts):
    prompts = ["Count: 1, 2, 3, 4, 5,", trec_prompts[0]]

    assert served.generate(prompts, max_new_tokens=12, stop=["\n"]) == \
        local.generate(prompts, max_new_tokens=12, stop=["\n"])
    assert served.generate(["Count: 1, 2, 3, 4, 5,"], max_new_tokens=12, stop=[" 8"]) == [" 6, 7,"]
    # vLLM adds no start token for SmolLM2, like the in-process tokenizer.
    assert served.count_tokens(trec_prompts[:3]) == [len(ids) for ids in
                                                     load_tokenizer()(trec_prompts[:3])["input_ids"]]


@pytest.mark.server
@pytest.mark.lm
def test_chat_endpoint_scores_ricl_chat_prompts_like_the_in_process_model(server, local, trec, trec_corpus,
                                                                            bm25, trec_queries):
    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, k=2, template=trec.template, format="chat")
    prompts = builder.build_many(trec_queries[:4])
    chat = OpenAIChatLM(server.base_url, max_concurrency=4)

    remote = chat.score_choices(prompts, trec.labels)  # a ricl.Prompt sends its messages
    here = local.score_choices([p.text for p in prompts], trec.labels)  # the same template, locally

    assert np.array_equal(remote.argmax(axis=1), here.argmax(axis=1))
    assert np.max(np.abs(remote - here)) < 1e-3
    answer = chat.generate([list(prompts[0].messages)], max_new_tokens=4, stop=["\n"])[0]
    assert answer.strip() and answer == local.generate([prompts[0].text], max_new_tokens=4, stop=["\n"])[0]


@pytest.mark.server
@pytest.mark.lm
def test_feedback_scoring_runs_through_vllm(served, local, trec, tmp_path):
    pool = ricl.Corpus.from_records(trec.pool[:30], input="text", output="label", labels=trec.labels)
    queries = [dict(record) for record in trec.test[:2]]

    remote = score_candidates(pool, queries, trec.template, tmp_path / "remote.jsonl",
                              n_candidates=3, lm=served, progress=False)
    here = score_candidates(pool, queries, trec.template, tmp_path / "local.jsonl",
                            n_candidates=3, lm=local, progress=False)

    header, records = read_feedback(remote)
    assert header["lm"] == "OpenAICompletionsLM"
    expected = {r.query_id: r for r in read_feedback(here)[1]}
    assert sorted(expected) == sorted(q["id"] for q in queries)
    for record in records:
        twin = expected[record.query_id]
        assert record.candidates == twin.candidates
        assert np.allclose(record.lm_scores, twin.lm_scores, atol=1e-3)
        assert abs(record.zero_shot - twin.zero_shot) < 1e-3


# Keep this test last: it kills the module's server.
@pytest.mark.server
@pytest.mark.lm
@pytest.mark.subprocess
def test_a_server_killed_mid_run_is_a_clear_error_after_bounded_retries(server, trec_prompts, choices, caplog):
    lm = OpenAICompletionsLM(server.base_url, max_concurrency=2, retry_delays=(0.2, 0.2))
    prompts = [p + f" ({i})" for i in range(20) for p in trec_prompts]  # minutes of work, all distinct
    killer = threading.Timer(2.0, server.kill)
    killer.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="ricl.transport"), \
                pytest.raises(ServerUnavailableError, match="after 3 tries"):
            lm.score_choices(prompts, choices)
    finally:
        killer.join()
    assert time.monotonic() - started < 30
    assert server.process.poll() is not None
    assert any("retrying in 0.2s" in message for message in caplog.messages)


# --------------------------------------------------------------------------- chat without a server


def _chat_without_prompt_logprobs(request: dict) -> dict:
    """Answers like OpenAI's chat API: top log-probs for the generated token only."""
    top = [{"token": "location", "logprob": -0.5}, {"token": "loc", "logprob": -2.0},
           {"token": "person", "logprob": -1.5}]
    choice = {"message": {"role": "assistant", "content": "location"}}
    if request.get("logprobs"):
        choice["logprobs"] = {"content": [{"token": "location", "logprob": -0.5, "top_logprobs": top}]}
    return {"choices": [choice]}


def test_chat_without_prompt_logprobs_scores_the_first_answer_token_and_says_so(caplog, json_server):
    lm = OpenAIChatLM(json_server(_chat_without_prompt_logprobs), model="m")
    with caplog.at_level(logging.WARNING, logger="ricl.server_lm"):
        scores = lm.score_choices([[{"role": "user", "content": "Where is Paris?"}]],
                                  ["location", " person", "number"])
    assert lm.scoring == "first-token"
    assert any("first answer token" in message for message in caplog.messages)
    assert scores[0, 0] == -0.5 and scores[0, 1] == -1.5 and scores[0, 2] == -np.inf
    assert lm.generate(["Where is Paris?"]) == ["location"]


def test_chat_prompts_are_checked():
    lm = OpenAIChatLM("http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ConfigError, match="role"):
        lm.score([[{"role": "user"}]], ["x"])
    with pytest.raises(ConfigError, match="wrap one"):
        lm.score("a prompt", ["x"])
    with pytest.raises(ConfigError, match="chat server"):
        OpenAIChatLM("http://127.0.0.1:9/v1", scoring="echo")
