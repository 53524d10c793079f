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

# make bench: memagent, mem0 and a plain Chroma collection side by side at 10k, 100k (one user) and
# 1M rounds (1,000 users; rounds drawn from 20k texts embedded once). Hours on 2 cores: see
# evals/results/store_benchmark.md. BENCH_OUT=file appends the tables there; BENCH_ARGS adds flags
# (e.g. BENCH_ARGS="--systems memagent chroma" or "--mem0-max-rounds 10000").
BENCH_FLAGS = $(if $(BENCH_OUT),--out $(BENCH_OUT)) $(BENCH_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m memagent_evals.bench_store --sizes 10000 $(BENCH_FLAGS)
	$(PY) -m memagent_evals.bench_store --sizes 100000 --rounds-per-session 50 $(BENCH_FLAGS)
	$(PY) -m memagent_evals.bench_store --sizes 1000000 --users 1000 --rounds-per-session 50 --pool 20000 $(BENCH_FLAGS)
