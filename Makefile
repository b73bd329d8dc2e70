# `make demo`  - create .venv, install unspool, run the e-mail analysis example offline (examples/demo.py).
# `make test`  - create .venv, install unspool with test extras, lint and run the whole suite.
# `make examples` - run the three worked examples in examples/ offline (optuna, doc search, RLM).
# `make bench` - run the benchmark suite (see bench/README.md); `make bench-quick` for a short one.
# `make bench-peers` - the same workloads through plain Python, unspool, Prefect and ZenML (each peer in its own venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo examples test lint bench bench-quick bench-peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

examples: $(VENV)/.installed
	$(VENV)/bin/unspool run examples/optuna_tuning/tuning.py:optuna_tuning --config examples/optuna_tuning/config.yaml
	$(VENV)/bin/unspool run examples/doc_search_agent/doc_search.py:doc_search --config examples/doc_search_agent/config.yaml
	$(VENV)/bin/unspool run examples/rlm_analysis/rlm.py:rlm_analysis --config examples/rlm_analysis/config.yaml

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests bench examples

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

bench-peers: $(VENV)/.installed
	$(PY) bench/peers.py

clean:
	rm -rf $(VENV) .unspool .pytest_cache .bench-venvs
