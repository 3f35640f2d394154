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
.PHONY: help setup data train test test-fast lint predict ui lock clean runs-check runs-sync

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# pull only the data: the pipeline's outputs (dvc.lock) are rebuilt by `make repro`, not in the remote
$(DATA): | $(STAMP)
	$(DVC) pull data.dvc

setup: $(STAMP) $(DATA) ## create .venv, install the locked stack, dvc pull the data

data: $(DATA) ## dvc pull MEX-A3T from the team remote when data/ is missing

train: setup ## train once: make train ARGS="loss=mse model.hidden=512"
	$(PY) -m losslab.train $(ARGS)

predict: setup ## classify a text with a logged model: make predict RUN=<run id> TEXT="..."
	@test -n "$(RUN)" || { echo "usage: make predict RUN=<mlflow run id> TEXT='...'" >&2; exit 2; }
	$(PY) -m losslab.serving.predict --run "$(RUN)" --text "$(TEXT)"

ui: setup ## MLflow UI on the project store: make ui [PORT=5000]
	$(PY) -m losslab.ops.ui --host $(HOST) --port $(PORT)

runs-check: setup ## close runs left RUNNING by a dead process as KILLED (every command that opens the store does it too)
	$(PY) -m losslab.tracking.liveness

runs-sync: setup ## upload the results trainings kept on disk while the tracking server was down: make runs-sync [ARGS=<dir>]
	$(PY) -m losslab.tracking.outbox $(ARGS)

test: setup browser-deps postgres-deps slurm-deps ## run every test, slow end-to-end ones included (CI runs this)
	$(PY) -m pytest

test-fast: setup ## skip the slow end-to-end tests
	$(PY) -m pytest -m "not slow"

# both reports always print; either failing fails the target
lint: setup ## ruff (style, pyflakes) + lint-imports (the layer contract in pyproject.toml)
	$(VENV)/bin/ruff check .; ruff=$$?; $(VENV)/bin/lint-imports --no-cache --no-logo && exit $$ruff

lock: ## re-resolve the stack and rewrite constraints.txt (after editing pyproject.toml)
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q 'torch==2.13.0' -e '.[dev,s3]'   # every extra, so its pins stay in the lock
	{ sed -n '1,2p' constraints.txt; echo 'torch==2.13.0'; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

clean: ## remove Hydra outputs and caches (keeps .venv, data and the MLflow store)
	rm -rf outputs multirun .pytest_cache

# --- sweeps, the comparison report, the browser check of the MLflow UI --------------------------
SWEEP ?= losses
SWEEP_JOBS ?= auto
LAUNCHER ?=
EXPERIMENT ?=
SWEEP_ID ?=
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)
.PHONY: sweep tune report browser-deps

# LAUNCHER=slurm: every job through Hydra's submitit SLURM launcher (conf/hydra/launcher/submitit_slurm.yaml) to the
# cluster $$SLURM_CONF names, else the one `make slurm` runs; LAUNCHER=local: submitit, one local process per job.
# SLURM decides how many jobs run at once (hydra.launcher.array_parallelism), so SWEEP_JOBS is not used then.
sweep: setup ## every loss over seeds + report: make sweep [SWEEP=losses|quick|grid|search] [SWEEP_JOBS=auto|N] [LAUNCHER=slurm] [ARGS=...]
	$(if $(filter-out slurm local,$(LAUNCHER)),$(error LAUNCHER=$(LAUNCHER): use LAUNCHER=slurm or LAUNCHER=local))
	$(if $(and $(LAUNCHER),$(filter search,$(SWEEP))),$(error SWEEP=search runs its trials here (Optuna); LAUNCHER works with losses, quick and grid))
	@$(if $(filter slurm,$(LAUNCHER)),SLURM_CONF="$$($(PY) -m losslab.ops.slurm conf)" || exit 2; export SLURM_CONF; \
	  echo "submitting to the SLURM cluster of $$SLURM_CONF" >&2;) \
	$(PY) -m losslab.sweeps $(SWEEP) $(if $(LAUNCHER),--jobs 1 hydra/launcher=submitit_$(LAUNCHER),--jobs $(SWEEP_JOBS)) $(ARGS)

tune: setup ## the recipe for a dataset, chosen on validation → conf/experiment/<data.name>_best.yaml: make tune [ARGS=...]
	$(PY) -m losslab.sweeps.tune $(ARGS)

report: setup ## rebuild a sweep's report from the store: make report [EXPERIMENT=mex-a3t] [SWEEP_ID=<id>]
	$(PY) -m losslab.report $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)") $(if $(SWEEP_ID),--sweep-id "$(SWEEP_ID)")

# Runs made where the team store is out of reach travel as files (losslab.tracking.transfer).
.PHONY: export-runs import-runs
export-runs: setup ## a sweep's runs + artifacts to a folder: make export-runs TO=<folder> [SWEEP_ID=<id>] [EXPERIMENT=..]
	@test -n "$(TO)" || { echo "usage: make export-runs TO=<folder> [SWEEP_ID=<id>] [EXPERIMENT=<name>]" >&2; exit 2; }
	$(PY) -m losslab.tracking.transfer export --to "$(TO)" $(if $(SWEEP_ID),--sweep-id "$(SWEEP_ID)") \
	  $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)")

import-runs: setup ## merge exported runs into this store (idempotent): make import-runs FROM=<folder>
	@test -n "$(FROM)" || { echo "usage: make import-runs FROM=<folder written by make export-runs>" >&2; exit 2; }
	$(PY) -m losslab.tracking.transfer import --from "$(FROM)" $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)")

browser-deps: ## Debian chromium + chromedriver for the browser test (apt-get, only when missing)
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# --- the DVC pipeline: prepare → featurize → train@<loss> → compare (dvc.yaml) -----------------
S ?=
WITH_VENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
.PHONY: params repro exp plots

params: setup ## compose conf/pipeline.yaml into params.yaml (as dvc exp run does)
	$(PY) -m losslab.pipeline.params

repro: params ## rebuild every loss's model, metrics and reports/losses.md; a second run does nothing
	$(WITH_VENV) $(DVC) repro

exp: setup ## a pipeline variant without editing files: make exp S="loss=kl model.hidden=512"
	$(WITH_VENV) $(DVC) exp run $(addprefix -S ,$(S))

plots: setup ## learning curves + confusion matrices as HTML in dvc_plots/index.html
	$(WITH_VENV) $(DVC) plots show

# --- benchmarks: one table + bench/results.json (issue 6) -----------------------------------------
ACCELERATOR ?= cpu
BENCH_ARGS ?=
.PHONY: bench

bench: setup ## performance table + bench/results.json: make bench [ACCELERATOR=gpu] [BENCH_ARGS="--runs 5"]
	$(PY) bench/run.py --accelerator $(ACCELERATOR) $(BENCH_ARGS)

.PHONY: gpu-check
gpu-check: setup ## on a GPU machine: GPU tests (none may skip) + a 2-epoch training on cuda; fails without a GPU
	bash bench/gpu_check.sh

.PHONY: gpu-wheels
gpu-wheels: setup ## .whl/: what the lent GPU machine lacks, as Python 3.12 wheels (then: bash bench/gpu_session.sh there)
	PY=$(PY) bash bench/gpu_wheels.sh

# --- team setup: MLflow server on PostgreSQL, model registry and serving ------------------------
# make server prints `export MLFLOW_TRACKING_URI=...` on stdout (eval "$$(make -s server)" sets it).
MODEL ?=
AUTH ?=
NAME ?=
PERMISSION ?=
.PHONY: server server-stop server-status server-user register serve postgres-deps

postgres-deps: ## Debian postgresql for make server and its test (apt-get, only when missing)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

server: setup postgres-deps ## MLflow server on PostgreSQL under .run/, returns when up: make server [PORT=5000] [AUTH=1 [HOST=0.0.0.0]]
	@$(PY) -m losslab.ops.server start $(if $(filter command line,$(origin PORT)),--port $(PORT)) \
	  $(if $(filter-out 0 false no,$(AUTH)),--auth) $(if $(filter command line,$(origin HOST)),--host $(HOST))

server-user: setup ## AUTH server: add a user, generated password, EDIT on the project: make server-user NAME=ana [PERMISSION=READ]
	@test -n "$(NAME)" || { echo "usage: make server-user NAME=<user> [PERMISSION=READ|EDIT|MANAGE]" >&2; exit 2; }
	@$(PY) -m losslab.ops.server user "$(NAME)" $(if $(PERMISSION),--permission $(PERMISSION))

server-stop: setup ## stop exactly what make server started (the database and artifacts stay in .run/)
	@$(PY) -m losslab.ops.server stop

server-status: setup ## is the make server server up? (prints its export line when it is)
	@$(PY) -m losslab.ops.server status

register: setup ## best run of a sweep -> models:/<name>@champion: make register [SWEEP_ID=<id>] [EXPERIMENT=..] [MODEL=..]
	$(PY) -m losslab.serving.registry register $(if $(SWEEP_ID),--sweep-id "$(SWEEP_ID)") \
	  $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)") $(if $(MODEL),--model "$(MODEL)")

serve: setup ## serve models:/<MODEL>@champion on 127.0.0.1: make serve [MODEL=losslab-mex-a3t] [PORT=5002]
	$(PY) -m losslab.serving.registry serve $(if $(MODEL),--model "$(MODEL)") \
	  $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)") $(if $(filter command line,$(origin PORT)),--port $(PORT))

# --- a one-node SLURM cluster on this machine (losslab.ops.slurm, conf/slurm.yaml) ------------------------
# make slurm prints `export SLURM_CONF=...` on stdout (eval "$$(make -s slurm)" sets it).
.PHONY: slurm slurm-stop slurm-status slurm-deps

slurm-deps: ## Debian slurm-wlm, munge, slurmdbd + mariadb-server for make slurm and its tests (apt-get, when missing)
	@test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged -a -x /usr/bin/sbatch \
	  -a -x /usr/sbin/slurmdbd -a -x /usr/sbin/mariadbd || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    slurm-wlm munge slurmdbd mariadb-server; }

slurm: setup slurm-deps ## start munged + slurmctld + slurmd under .run/slurm/, return when the node is idle
	@$(PY) -m losslab.ops.slurm start

slurm-stop: setup ## cancel the cluster's jobs, stop exactly the daemons make slurm started
	@$(PY) -m losslab.ops.slurm stop

slurm-status: setup ## is the make slurm cluster up? (prints its export line when it is)
	@$(PY) -m losslab.ops.slurm status
