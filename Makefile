# Two commands on a fresh machine: `make demo` and `make test`.
# VENV can point at a cached virtualenv (CI keys one by the hash of setup.py).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opensora_ae-installed
PYTEST_ARGS ?=

.PHONY: install demo test clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The editable install records this checkout's path; re-point it cheaply when a cached venv is reused.
install: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

demo: install
	$(PY) scripts/vae/demo.py

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf outputs .pytest_cache
