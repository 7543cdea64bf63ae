"""Where models run and in which number format: chosen for the hardware, never assumed.

``device="auto"`` is a GPU when torch sees one, else the CPU. ``dtype="auto"`` is
bfloat16 where the hardware computes it natively (a GPU that supports it; a CPU
with AMX or AVX-512 BF16, where it measured about 3x faster than float32 on one
machine) and float32 elsewhere (on an AVX2-only CPU bfloat16 is emulated and can
be slower). float32 stays the library default: its scores are exact.
"""

from __future__ import annotations

import re
from typing import Any

from ricl.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: Any = "auto") -> Any:
    """A ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a
    ``torch.device``); a ConfigError when the name is unknown or the GPU is absent."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"device={device!r}: choose one of {DEVICES}.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}, but torch sees no GPU (torch "
                              f"{torch.__version__}). Use device='cpu' or 'auto'.")
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}, but torch sees {torch.cuda.device_count()} GPU(s).")
        return torch.device("cuda", index)  # one name per GPU: "cuda" and "cuda:0" alike
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16 instructions (read from torch's CPU probe)."""
    import torch

    probe = getattr(torch, "cpu", None)
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        if callable(getattr(probe, check, None)) and getattr(probe, check)():
            return True
    return False


def resolve_dtype(dtype: str, device: Any) -> str:
    """The concrete dtype name for ``dtype`` on ``device`` ("auto" chooses, see above)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: choose one of {DTYPES}.")
    if dtype != "auto":
        return dtype
    import torch

    device = resolve_device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def describe_hardware() -> str:
    """One line naming the CPU (or GPU) a number was measured on, for reports."""
    import platform

    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            name = next((line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name")), name)
    except OSError:
        pass
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"CPU {name} ({torch.get_num_threads()} threads, {bf16}), torch {torch.__version__}"
