"""The LM protocol over HTTP: a real llama.cpp server (llama-cpp-python) on loopback.

The server serves the SmolLM2 GGUF file that ``TransformersLM`` converts to a
float32 copy, so the two must rank candidates alike; they differ a little in
value because the server computes with the quantized (Q4_1) weights.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

import ricl
from ricl.errors import ServerUnavailableError
from ricl.models import load_tokenizer, smollm2_gguf_path
from ricl.errors import ServerResponseError
from ricl.server_lm import OpenAICompletionsLM, continuation_logprobs
from training.feedback import read_feedback, score_candidates

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Run the server with ggml's extra weight buffers off. The wheel is built for the build
# machine's CPU, which reports AMX; ggml's AMX matmul then dies in `ldtilecfg` (SIGSEGV) in
# this VM. Plain CPU kernels compute the same products.
SERVER_MAIN = """
import runpy
import llama_cpp.llama_cpp as C
default_params = C.llama_model_default_params
def without_extra_buffers():
    params = default_params()
    params.use_extra_bufts = False
    return params
C.llama_model_default_params = without_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__")
"""


class LlamaCppServer:
    """llama-cpp-python's OpenAI-compatible server on a free loopback port, stopped in teardown.

    llama-cpp-python 0.3.36 shifts echoed prompt log-probs by one token when the
    prompt holds no start token, and SmolLM2's GGUF adds none: the value it
    reports for token i is read from the distribution after token i. So the
    server adds SmolLM2's document separator <|endoftext|> (id 0) before every
    prompt, a start token it handles right; the in-process model sees none.
    """

    def __init__(self, model: Path, log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        # One thread each: the machine is small and shared, and requests are served one at a time.
        command = [sys.executable, "-c", SERVER_MAIN, "--model", str(model),
                   "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(self.port),
                   "--n_ctx", "2048", "--logits_all", "true", "--n_threads", "1",
                   "--n_threads_batch", "1", "--verbose", "false", "--kv_overrides",
                   "tokenizer.ggml.add_bos_token=bool:true", "tokenizer.ggml.bos_token_id=int:0"]
        self.log = open(log_path, "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the llama.cpp server exited at start:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2):
                    break
            except OSError:  # not listening yet (the model loads first)
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"the llama.cpp server did not listen within {STARTUP_TIMEOUT_S} s:\n"
                               f"{self.log_text()}")
        self.start_seconds = time.monotonic() - started

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]==0.3.36'")
    running = LlamaCppServer(smollm2_gguf_path(), tmp_path_factory.mktemp("llama") / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def served(server) -> OpenAICompletionsLM:
    return OpenAICompletionsLM(server.base_url, max_concurrency=2)


@pytest.fixture(scope="module")
def trec_prompts(trec, trec_corpus, bm25, trec_queries):
    """Ten real TREC test questions, each after its two BM25-nearest pool questions."""
    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, k=2, template=trec.template)
    return [prompt.text for prompt in builder.build_many(trec_queries[:10])]


@pytest.mark.lm
@pytest.mark.server
def test_the_server_ranks_label_words_like_the_in_process_model(served, local, trec, trec_prompts):
    choices = [" " + label for label in trec.labels]  # six candidate continuations per prompt

    remote = served.score_choices(trec_prompts, choices)
    here = local.score_choices(trec_prompts, choices)

    assert remote.shape == here.shape == (10, 6)
    assert np.all(remote < 0)
    taus = [kendalltau(r, h).statistic for r, h in zip(remote, here)]
    same_best = int(np.sum(remote.argmax(axis=1) == here.argmax(axis=1)))
    # Measured on these prompts: mean Kendall tau 0.96 (lowest 0.87), the same best label
    # for 10 of 10, a median gap of 0.45 nats (Q4_1 weights and the server's start token).
    assert np.mean(taus) >= 0.85, taus
    assert same_best >= 9, (remote.argmax(axis=1), here.argmax(axis=1))
    assert np.median(np.abs(remote - here)) < 1.0


@pytest.mark.lm
@pytest.mark.server
def test_generate_is_greedy_and_cut_before_the_stop_string(served):
    text = served.generate(["Count: 1, 2, 3, 4, 5,"], max_new_tokens=12, stop=[" 8"])[0]

    assert text == " 6, 7,"


@pytest.mark.lm
@pytest.mark.server
def test_counts_tokens_as_the_server_sees_them(served, trec_prompts):
    here = [len(ids) for ids in load_tokenizer()(trec_prompts[:3])["input_ids"]]

    # The same tokenizer, plus the start token this server adds (see LlamaCppServer).
    assert served.count_tokens(trec_prompts[:3]) == [n + 1 for n in here]


@pytest.mark.lm
@pytest.mark.server
def test_feedback_scoring_runs_against_the_server(served, trec, tmp_path):
    pool = ricl.Corpus.from_records(trec.pool[:30], input="text", output="label", labels=trec.labels)
    queries = [dict(record) for record in trec.test[:2]]

    path = score_candidates(pool, queries, trec.template, tmp_path / "feedback.jsonl",
                            n_candidates=3, lm=served, progress=False)

    header, records = read_feedback(path)
    assert header["lm"] == "OpenAICompletionsLM"
    assert sorted(r.query_id for r in records) == sorted(q["id"] for q in queries)
    for record in records:
        assert len(record.lm_scores) == 3 and all(s < 0 for s in record.lm_scores)
        assert record.zero_shot < 0


def test_a_down_server_is_a_clear_error_within_seconds():
    lm = OpenAICompletionsLM(f"http://127.0.0.1:{free_port()}/v1", model="any")
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="llama_cpp.server"):
        lm.score(["Question: Who wrote Hamlet ?\nAnswer type:"], [" person"])
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- response shapes


def test_a_token_across_the_boundary_counts_as_continuation():
    # "Answer type: " + "location": the tokenizer joins the space and the word.
    choice = {"logprobs": {"tokens": ["Answer", " type", ":", " location", "\n"],
                           "token_logprobs": [None, -1.0, -0.5, -2.0, -0.1],
                           "text_offset": [0, 6, 11, 12, 21]}}

    assert continuation_logprobs(choice, len("Answer type: "), "Answer type: location") == [-2.0]


def test_vllm_echo_with_a_start_token_and_vllm_prompt_logprobs_give_the_same_tokens():
    text, prompt_chars = "Answer type: location", len("Answer type:")
    # vLLM echoes Llama's "<s>" as text and counts it in the offsets.
    echo = {"logprobs": {"tokens": ["<s>", "Answer", " type", ":", " location", "\n"],
                         "token_logprobs": [None, -7.0, -1.0, -0.5, -2.0, -0.1],
                         "text_offset": [0, 3, 9, 14, 15, 24]}}
    prompt_logprobs = {"prompt_logprobs": [
        None,
        {"3": {"logprob": -7.0, "rank": 9, "decoded_token": "Answer"}},
        {"4": {"logprob": -1.0, "rank": 1, "decoded_token": " type"}},
        {"5": {"logprob": -0.5, "rank": 1, "decoded_token": ":"}},
        {"6": {"logprob": -2.0, "rank": 2, "decoded_token": " location"}},
    ]}

    assert continuation_logprobs(echo, prompt_chars, text) == [-2.0]
    assert continuation_logprobs(prompt_logprobs, prompt_chars, text) == [-2.0]


def test_a_server_without_prompt_logprobs_is_a_clear_error(json_server):
    # answers like llama.cpp's own llama-server: log-probs for the generated token only
    url = json_server(lambda request: {"choices": [{"text": "Answer type: location\n", "logprobs": {
        "tokens": ["\n"], "token_logprobs": [-0.1], "text_offset": [21]}}]})
    lm = OpenAICompletionsLM(url, model="m")
    with pytest.raises(ServerResponseError, match="logits_all"):
        lm.score(["Answer type:"], [" location"])
