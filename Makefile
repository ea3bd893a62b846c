# Two commands on a fresh machine: `make demo` and `make test`.
# VENV can point at a cached virtualenv (CI keys one by the hash of pyproject.toml and .ci/constraints.txt).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opensora_ae-installed
CONSTRAINTS := .ci/constraints.txt
PYTEST_ARGS ?=

.PHONY: install demo test clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70.1"  # the install target builds without isolation
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The editable install records this checkout's path; re-point it cheaply when a cached venv is reused.
install: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

demo: install
	$(VENV)/bin/opensora-ae demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf outputs .pytest_cache build *.egg-info
