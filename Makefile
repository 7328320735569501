# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := runs/quickstart

.PHONY: demo test bench train-tiny clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[hf,dev]"
	touch $@

demo: $(VENV)/.installed
	@mkdir -p $(DEMO)
	$(PY) examples/quickstart.py make-data $(DEMO)
	$(VENV)/bin/oobleck compile examples/quickstart.py:program --lm hf/oobleck-tiny --optimizer random \
		--train $(DEMO)/train.jsonl --dev $(DEMO)/dev.jsonl --test $(DEMO)/test.jsonl --out $(DEMO)/reverse.oobleck
	$(VENV)/bin/oobleck run $(DEMO)/reverse.oobleck --input word=planet

test: $(VENV)/.installed
	$(PY) -m pytest -q

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run_all.py

train-tiny: $(VENV)/.installed
	$(PY) -m oobleck.tiny.train --out runs/oobleck-tiny

clean:
	rm -rf $(VENV) runs .pytest_cache
