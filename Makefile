# losslab — every target installs what it needs first (.venv + data), so a fresh clone just works.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
STAMP := $(VENV)/.installed
DATA := data/mex-a3t/train.csv data/mex-a3t/test.csv
ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help setup data train test test-fast predict ui lock clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

$(DATA): | $(STAMP)
	$(DVC) pull

setup: $(STAMP) $(DATA) ## create .venv, install the locked stack, dvc pull the data

data: $(DATA) ## dvc pull MEX-A3T from the team remote when data/ is missing

train: setup ## train once: make train ARGS="loss=mse model.hidden=512"
	$(PY) -m losslab.train $(ARGS)

predict: setup ## classify a text with a logged model: make predict RUN=<run id> TEXT="..."
	@test -n "$(RUN)" || { echo "usage: make predict RUN=<mlflow run id> TEXT='...'" >&2; exit 2; }
	$(PY) -m losslab.predict --run "$(RUN)" --text "$(TEXT)"

ui: setup ## MLflow UI on the project store: make ui [PORT=5000]
	$(PY) -m losslab.ui --host $(HOST) --port $(PORT)

test: setup ## run every test, slow end-to-end ones included (CI runs this)
	$(PY) -m pytest

test-fast: setup ## skip the slow end-to-end tests
	$(PY) -m pytest -m "not slow"

lock: ## re-resolve the stack and rewrite constraints.txt (after editing pyproject.toml)
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; echo 'torch==2.13.0'; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

clean: ## remove Hydra outputs and caches (keeps .venv, data and the MLflow store)
	rm -rf outputs multirun .pytest_cache
