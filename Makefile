# `make demo`  - create .venv, install unspool with its dashboard (no test extras), run the
#                e-mail analysis example offline, print how to open the dashboard on its run.
# `make test`  - create .venv, install unspool with test extras, lint and run the whole suite.
# `make examples` - run the three worked examples in examples/ offline (optuna, doc search, RLM).
# `make bench` - run the benchmark suite (see bench/README.md); `make bench-quick` for a short one.
# `make bench-peers` - the same workloads through plain Python, unspool, Prefect and ZenML (each peer in its own venv).
# `make torture` - the reliability suite (kills, concurrent resumes and writers, full disks; see README); not part of `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo examples test lint bench bench-quick bench-peers torture torture-quick clean dashboard-ui

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

# What the demo and the dashboard need, and nothing more (the test extras pull in Ray and moto).
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dashboard,demo]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) examples/demo.py

examples: $(VENV)/.installed
	$(VENV)/bin/unspool run examples/optuna_tuning/tuning.py:optuna_tuning --config examples/optuna_tuning/config.yaml
	$(VENV)/bin/unspool run examples/doc_search_agent/doc_search.py:doc_search --config examples/doc_search_agent/config.yaml
	$(VENV)/bin/unspool run examples/rlm_analysis/rlm.py:rlm_analysis --config examples/rlm_analysis/config.yaml

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests bench examples torture

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

bench-peers: $(VENV)/.installed
	$(PY) bench/peers.py

# Rebuild the dashboard's UI (needs Node.js and npm) into src/unspool/dashboard/static, which
# is committed: installing unspool needs no Node. tests/test_dashboard_build.py checks it.
dashboard-ui:
	cd dashboard-ui && npm ci --no-audit --no-fund && npm run build

torture: $(VENV)/.installed
	$(PY) torture/run.py

torture-quick: $(VENV)/.installed
	$(PY) torture/run.py --quick --out torture/results/quick.json

clean:
	rm -rf $(VENV) .unspool .pytest_cache .bench-venvs
