# Two commands on a fresh machine: `make study` runs the study, `make test` runs the tests.
# Both create .venv from the lock file first if it is missing or older than the lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: study test lint summary bench register clean-venv lock exps

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

study: $(VENV)/.installed  ## run the whole study: dvc repro (repairing a dvc.lock a kill cut short)
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m dogbreeds repro

# The suite on every core (pytest-xdist): a test module stays on one worker (--dist loadfile),
# so a module's shared study or servers are built once, and modules go out in the order
# tests/conftest.py collects them (end-to-end ones first). One worker per CPU this process may
# run on (pytest-xdist's `auto` counts physical cores, fewer where a core has two threads;
# `nproc` follows OMP_NUM_THREADS). TEST_WORKERS=0: one process.
CPUS := import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
TEST_WORKERS ?= $(shell $(PYTHON) -c '$(CPUS)')
test: $(VENV)/.installed  ## run the test suite (fails when no test ran)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

lint: $(VENV)/.installed
	$(BIN)/ruff check src stages tests && $(BIN)/ruff format --check src stages tests

summary: $(VENV)/.installed  ## params and MACs of the three nets
	$(BIN)/python -m dogbreeds summary --width-mult 1.0 --resolution 224

# A study on synthetic data is refused: make register REGISTER_ARGS=--force registers it anyway.
register: $(VENV)/.installed  ## each net's best run of the study becomes models:/dogbreeds-<arch>@champion
	$(BIN)/python -m dogbreeds register $(REGISTER_ARGS)

clean-venv:
	rm -rf $(VENV)

# Shorter or narrower with BENCH_ARGS, e.g. make bench BENCH_ARGS="--batch 32 --amp off --steps 3".
bench: $(VENV)/.installed  ## training-step throughput per net, backend, batch and precision
	$(BIN)/python -m dogbreeds bench --out bench $(BENCH_ARGS)

# The tiny study (presets/tiny.yaml, also the tests' and fixedcost's) through every stage, offline:
# `dvc exp run` with the preset as -S options. More options in SMOKE_ARGS, e.g. SMOKE_ARGS=--temp.
.PHONY: smoke
smoke: $(VENV)/.installed  ## the tiny study on generated images, every stage (dvc exp run)
	args=$$($(BIN)/python -m dogbreeds preset tiny) && set -f && \
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc exp run $$args $(SMOKE_ARGS)

# `dvc exp show` without the columns of the stages' dependencies (one file hash each, most of the
# table): only params and metrics. More options in EXPS_ARGS, e.g. EXPS_ARGS="--only-changed --md".
EXPS_DROP := [^:]*/[^:]*$$|(data|metrics|models|src|stages)$$
exps: $(VENV)/.installed  ## the experiments' params and metrics, without the file hashes
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc exp show --drop '$(EXPS_DROP)' $(EXPS_ARGS)

# The lock: the package and its dev and team extras, exact versions with sha256 hashes, one file
# for every platform (markers: the CUDA wheels only on Linux). `make lock` regenerates it with a
# pinned uv from pyproject.toml, keeping every version the lock already pins (fed to uv as
# constraints) and resolving only what is new; `make lock LOCK_UPGRADE=1` lets every version
# move within pyproject's ranges. Hashes are PyPI's.
UV_VERSION := 0.13.9
UV_DIR := .tools/uv-$(UV_VERSION)
$(UV_DIR)/bin/uv:
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(UV_DIR)/bin/uv  ## regenerate requirements.lock (universal, hashed), keeping its pins
	pins=$$(mktemp) && trap 'rm -f "$$pins"' EXIT && \
	$(if $(LOCK_UPGRADE),: >"$$pins",grep -E '^[A-Za-z0-9._-]+==' requirements.lock | sed 's/ *\\$$//' >"$$pins") && \
	$(UV_DIR)/bin/uv pip compile pyproject.toml --extra dev --extra team --universal \
	  --python-version 3.11 --generate-hashes --no-annotate --default-index https://pypi.org/simple \
	  --custom-compile-command "make lock" --constraint "$$pins" $(if $(LOCK_UPGRADE),--upgrade) \
	  --quiet --output-file requirements.lock

# MobileNet's width x resolution grid (docs/experiments.md): `make grid`
# queues one DVC experiment per (alpha, side), `dvc queue start -j 1` runs them, `make compare`
# draws accuracy against MACs and params. Pass more options in GRID_ARGS / COMPARE_ARGS, e.g.
# make grid GRID_ARGS="--resolutions 64 56 48 40 -S 'train.seeds=[0]'".
.PHONY: grid compare
grid: $(VENV)/.installed  ## queue the alpha x resolution grid as DVC experiments
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH=src $(BIN)/python -m dogbreeds grid $(GRID_ARGS)

compare: $(VENV)/.installed  ## accuracy vs MACs / params of the experiments: figures and table
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH=src $(BIN)/python -m dogbreeds compare $(COMPARE_ARGS)

# ----------------------------------------------------------------------------- a team
# docs/team.md: PostgreSQL + an MLflow tracking server on 127.0.0.1 that asks every client who
# it is (MLflow's basic-auth app; docs/reliability.md). The passwords come from your
# environment, never a URI or a command line: PGPASSWORD (the database role mlflow) and
# MLFLOW_AUTH_ADMIN_PASSWORD (the server's admin, created at its first start).
PGDATA ?= $(CURDIR)/.pgdata
PGPORT ?= 5432
MLFLOW_PORT ?= 5000
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlflow-server-artifacts

.PHONY: postgres postgres-stop mlflow-server mlflow-user

postgres:  ## a local PostgreSQL cluster in .pgdata: role mlflow, databases mlflow and mlflow_auth
	PGDATA="$(PGDATA)" PGPORT=$(PGPORT) scripts/postgres.sh start

postgres-stop:
	PGDATA="$(PGDATA)" scripts/postgres.sh stop

mlflow-server: $(VENV)/.installed  ## MLflow server with logins, on PostgreSQL, on 127.0.0.1
	PATH="$(CURDIR)/$(BIN):$$PATH" PGPORT=$(PGPORT) MLFLOW_PORT=$(MLFLOW_PORT) \
	MLFLOW_ARTIFACTS="$(MLFLOW_ARTIFACTS)" scripts/mlflow-server.sh

# As the admin (MLFLOW_TRACKING_USERNAME=admin and MLFLOW_TRACKING_PASSWORD in your environment):
# make mlflow-user NAME=alice PERMISSION=EDIT; it asks for alice's password.
mlflow-user: $(VENV)/.installed  ## add a user to the team server (NAME=..., PERMISSION=READ|EDIT)
	@test -n "$(NAME)" || { echo "usage: make mlflow-user NAME=alice [PERMISSION=EDIT]" >&2; exit 2; }
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-http://127.0.0.1:$(MLFLOW_PORT)} \
	$(BIN)/python scripts/mlflow-user.py "$(NAME)" $(if $(PERMISSION),--permission $(PERMISSION))
