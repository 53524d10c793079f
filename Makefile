# Two entry points, each sets up .venv on first use (and reuses it after):
#   make demo   stores a short conversation and searches it, all local (make demo-answer: and answers with the local reader)
#   make test   runs the default test suite (slow, large-model tests are opt-in: make test-slow; make lint: ruff, mypy)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-answer test test-slow lint bench install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(PY) examples/demo.py

demo-answer: install
	$(PY) -m memagent.cli models install qwen2.5-coder-1.5b-instruct
	$(PY) examples/demo.py --answer

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m memagent_evals.bench_store --sizes 10000
	$(PY) -m memagent_evals.bench_store --sizes 100000 --rounds-per-session 50
