# The commands people and CI run. Each sets itself up on a fresh machine: it makes the virtual
# environment .venv with Python 3.11 and installs the project into it when pyproject.toml changes
# (`make serve` the service, `.[server]`; `make test` the test extra, which includes the server
# and the docs; `make check` the dev extra too). docs/development.md says more.
#
#   make serve        start the service on http://127.0.0.1:8000 (python -m service.api: every
#                     start flag comes from the EMBED_* settings, service/api/server.py);
#                     EMBED_CLUSTER=ray make serve: cluster mode on a local Ray instance (the ray
#                     extra is installed for it; docs/cluster.md)
#   make test         run the whole test suite (the docker, browser and bench tests need programs
#                     outside Python: docs/development.md says which; .ci/run installs them)
#   make check        what CI runs: ruff, mypy (strict on service/), then exactly `make test`
#   make lint         ruff check .
#   make types        mypy (configured in pyproject.toml)
#   make docs         the documentation site into site/ (mkdocs build --strict)
#   make bench        the benchmark against Redis, numpy and PyTorch (bench/compare.py), then the
#                     load rows (bench/load.py: wrk and redis-benchmark): installs the bench extra
#                     and Debian's redis-server, redis-tools and wrk if missing, prints the tables,
#                     writes bench/results/latest.{md,json,png}; BENCH_ARGS=--quick for a smoke run
#
# Variables: HOST, PORT (serve), PYTEST_ARGS (test), PYTHON (the interpreter for the venv).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SERVER_STAMP := $(VENV)/.server-stamp
RAY_STAMP := $(VENV)/.ray-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-stamp
EXTRAS ?= test

DEV_STAMP := $(VENV)/.dev-stamp
# mkdocs-material announces its end of life on every build; the docs say what it is built with
export NO_MKDOCS_2_WARNING := 1

.PHONY: serve test check lint types docs install bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

$(SERVER_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server]'
	@touch $(SERVER_STAMP)

install: $(STAMP)

$(RAY_STAMP): pyproject.toml $(SERVER_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server,ray]'
	@touch $(RAY_STAMP)

# cluster mode (EMBED_CLUSTER=ray) needs the ray extra besides the server's
serve: $(if $(filter ray,$(EMBED_CLUSTER)),$(RAY_STAMP),$(SERVER_STAMP))
	$(BIN)/python -m service.api --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench,ray]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null \
	  && command -v wrk >/dev/null || { \
	  echo "redis-server, redis-benchmark or wrk is missing: installing Debian's packages" \
	       "(apt-get install redis-server redis-tools wrk)"; \
	  apt-get update -qq && apt-get install -y -qq redis-server redis-tools wrk >/dev/null; }
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(BIN)/python -m ruff check .

types: $(DEV_STAMP)
	$(BIN)/python -m mypy

# In this order (make runs prerequisites left to right): the quick checks fail first.
check: lint types test

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site
	@echo "the site is in site/ (open site/index.html)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
