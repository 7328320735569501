# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BENCH_VENV := .venv-bench
BENCH_PY   := $(BENCH_VENV)/bin/python
DEMO   := runs/quickstart

.PHONY: demo test bench train-tiny clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[hf,embed,postgres,serve,dev,dspy,retrieval,faiss]"
	touch $@

demo: $(VENV)/.installed
	@mkdir -p $(DEMO)
	$(PY) examples/quickstart.py make-data $(DEMO)
	$(VENV)/bin/oobleck compile examples/quickstart.py:program --lm hf/oobleck-tiny --optimizer random \
		--num-candidates 6 --threads 16 --train $(DEMO)/train.jsonl --dev $(DEMO)/dev.jsonl --test $(DEMO)/test.jsonl \
		--out $(DEMO)/first-letter.oobleck
	$(VENV)/bin/oobleck run $(DEMO)/first-letter.oobleck --input word=planet

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Benchmarks against DSPy get their own venv (.venv has DSPy too, for the interop tests, but stays the dev install).
# torch is installed first and pinned (the CPU wheel); left to pip it would pull CUDA packages.
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q torch==2.13.0
	$(BENCH_PY) -m pip install -q -e ".[hf,embed,postgres,serve,dev,bench,retrieval,faiss]"
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) benchmarks/run_all.py

train-tiny: $(VENV)/.installed
	$(PY) -m oobleck.tiny.train --out runs/oobleck-tiny-stage1
	$(PY) -m oobleck.tiny.train --out runs/oobleck-tiny --init-from runs/oobleck-tiny-stage1 --seed 1 --lr 1.5e-3

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs .pytest_cache
