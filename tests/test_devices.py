"""Devices and number formats are chosen from what the hardware offers, and named
clearly when asked for something it lacks."""

from __future__ import annotations

import copy

import pytest
import torch

import ricl
from ricl.devices import cpu_has_native_bf16, describe_hardware, resolve_device, resolve_dtype
from ricl.errors import ConfigError


def test_auto_is_a_gpu_when_torch_sees_one_else_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine_says_so():
    with pytest.raises(ConfigError, match="no GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no GPU"):
        ricl.TransformersLM(device="cuda:0")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", 3, None])
def test_unknown_devices_are_config_errors(bad):
    with pytest.raises(ConfigError, match="device"):
        resolve_device(bad)


def test_auto_dtype_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert resolve_dtype("float32", cpu) == "float32"
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("int8", cpu)
    assert "torch" in describe_hardware()


def test_the_embedder_runs_where_it_is_told(trec_corpus):
    builder = ricl.PromptBuilder(trec_corpus, retriever="dense", k=2, device="cpu")
    assert builder.retriever.device == torch.device("cpu")
    assert builder.retriever.encoder.device.type == "cpu"
    bm25 = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=2, device="cpu")  # no embedder
    assert bm25.retriever.kind == "bm25"


@pytest.mark.lm
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU: torch.cuda.is_available() is False")
def test_a_model_loaded_on_the_gpu_scores_like_the_cpu():
    gpu = ricl.TransformersLM(device="cuda")
    cpu = ricl.TransformersLM(device="cpu")
    prompts = ["Review: a warm, funny film\nSentiment:", "Question: Who wrote Hamlet?\nAnswer type:"]
    choices = [" positive", " negative", " person"]
    assert gpu.model.device.type == "cuda"
    assert abs(gpu.score_choices(prompts, choices) - cpu.score_choices(prompts, choices)).max() < 1e-3
    moved = ricl.TransformersLM((copy.deepcopy(cpu.model).to("cuda"), cpu.tokenizer))  # stays there
    assert moved.device.type == "cuda"
