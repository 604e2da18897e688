# Every target does its own set-up: `make test` and `make demo` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/sipec/v1/*.proto)
PROTO_STAMP := sipec/v1/.generated
export KERAS_HOME := $(CURDIR)/.tmp/keras
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: setup protos test test-fast test-stress lint unit demo bench k8s-check clean

setup: $(STAMP) $(PROTO_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

protos: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) $(STAMP) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint k8s-check
	$(VENV)/bin/pytest -q -ra --durations=40

# the edit-test loop: everything not marked slow (no training, no long pipelines)
test-fast: setup
	$(VENV)/bin/pytest -q -ra -m "not slow"

# the end-to-end and fault tests beside two CPU-burning processes (a loaded machine): results must not change
test-stress: setup
	$(VENV)/bin/pytest -q -ra --stress 2 tests/e2e

demo: setup
	$(PY) -m sipec.demo

bench: setup
	$(PY) -m bench.run

k8s-check: setup
	@if [ -d k8s/overlays ]; then $(PY) scripts/k8s_check.py; else echo "k8s-check: no k8s/overlays yet (issue 10)"; fi

clean:
	rm -rf $(VENV) sipec/v1 .tmp .pytest_cache .ruff_cache
