# `make demo`  - create .venv, install unspool with its dashboard (no test extras), run the demo
#                pipeline on the embedded stores, print how to open the dashboard on its run.
# `make test`  - create .venv, install unspool with test extras, lint and run the whole suite.
# `make bench` - run the benchmark suite (see bench/README.md); `make bench-quick` for a short one.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-quick clean dashboard-ui

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# What the demo and the dashboard need, and nothing more (the test extras pull in Ray and moto).
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dashboard]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) examples/demo.py

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests bench examples

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

# Rebuild the dashboard's UI (needs Node.js and npm) into src/unspool/dashboard/static, which
# is committed: installing unspool needs no Node. tests/test_dashboard_build.py checks it.
dashboard-ui:
	cd dashboard-ui && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) .unspool .pytest_cache
