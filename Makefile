# The commands people and CI run. Each sets itself up on a fresh machine: it makes the virtual
# environment .venv with Python 3.11 and installs the project into it when pyproject.toml changes
# (`make serve` the service, `.[server]`; `make test` the test extra, which includes the server).
#
#   make serve        start the service on http://127.0.0.1:8000 (python -m service.api: every
#                     start flag comes from the EMBED_* settings, service/api/server.py)
#   make test         run the whole test suite (the browser tests need Debian's chromium and
#                     chromium-driver: .ci/run installs them)
#   make bench        the benchmark against Redis, numpy and PyTorch (bench/compare.py): installs
#                     the bench extra and Debian's redis-server if missing, prints the table,
#                     writes bench/results/latest.{md,json,png}; BENCH_ARGS=--quick for a smoke run
#
# Variables: HOST, PORT (serve), PYTEST_ARGS (test), PYTHON (the interpreter for the venv).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SERVER_STAMP := $(VENV)/.server-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-stamp
EXTRAS ?= test

.PHONY: serve test install lint bench clean

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

serve: $(SERVER_STAMP)
	$(BIN)/python -m service.api --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v redis-server >/dev/null || { \
	  echo "redis-server is missing: installing Debian's package (apt-get install redis-server)"; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
