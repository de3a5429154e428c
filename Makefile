# Two commands for people: `make demo` and `make test`. Each creates the virtualenv when missing, from the lock.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCKED := $(VENV)/.locked
LOCK   := requirements.lock
PROTOS := $(wildcard protos/sharerank/v1/*.proto)
# Where torch's CPU wheel lies on these machines (the lock pins torch==2.13.0+cpu by its hash).
WHEELS ?= /opt/wheels
LOCK_FLAGS ?=

.PHONY: demo test notebooks bench lint lock proto clean browser

# Every package, pip and the build backend included, comes from the lock, pinned and hash-checked; the project
# itself installs editable on top without resolving anything. Quiet on stdout (progress on stderr), so
# `make demo` prints only its JSON even on a fresh clone.
$(LOCKED): $(LOCK)
	@echo "installing $(VENV) from $(LOCK)" >&2
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@$(PYTHON) -m pip install -q --require-hashes --no-deps --find-links $(WHEELS) -r $(LOCK) >&2
	@touch $(LOCKED)

$(STAMP): pyproject.toml $(LOCKED)
	@$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e . >&2
	@$(PYTHON) -m pip check >&2
	@touch $(STAMP)

# Re-resolves requirements.lock from pyproject.toml, keeping every pin that still fits
# (`make lock LOCK_FLAGS=--upgrade` moves everything to the newest releases).
lock: $(LOCKED)
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe \
		--all-build-deps --strip-extras --no-emit-index-url --find-links $(WHEELS) $(LOCK_FLAGS) \
		--output-file $(LOCK) pyproject.toml

demo: $(STAMP)
	@$(VENV)/bin/sharerank demo

# The console's browser tests drive Debian's chromium headless (tests/console); installed here when missing and
# apt-get is at hand. Without it those tests skip with the reason, and fail under CI=true.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || ! command -v apt-get >/dev/null || { apt-get update -qq >&2 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; } || \
		echo "could not install chromium: the browser tests will skip (and fail under CI=true)" >&2

test: $(STAMP) browser
	$(PYTHON) -m pytest -q

# Executes every notebook in place on the shared datasets (../shared/data, beside the checkout) with budgets that
# take 4-7 minutes on 2 busy cores, then strips volatile metadata (execution counts, timestamps, cell ids) but keeps
# the outputs, so the committed notebooks render with their pictures. Their state (SHARERANK_HOME, temporary
# folders) lives in one temporary folder, removed afterwards.
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
NB_SETTINGS ?= SHARERANK_NB_MAX_SECONDS=15 SHARERANK_NB_BUDGET=60 SHARERANK_NB_USERS=5000 SHARERANK_NB_K=30 \
	SHARERANK_NB_RUNS=1000
notebooks: $(STAMP)
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && trap 'exit 1' INT TERM && \
	for notebook in $(NOTEBOOKS); do \
		echo "executing $$notebook" >&2 && \
		env SHARERANK_HOME=$$scratch/home TMPDIR=$$scratch MPLBACKEND=module://matplotlib_inline.backend_inline \
			$(NB_SETTINGS) $(VENV)/bin/jupyter-execute --inplace --timeout=1800 --kernel_name=python3 $$notebook \
			|| exit 1; done
	$(VENV)/bin/nbstripout --keep-output $(NOTEBOOKS)

bench: $(STAMP)
	mkdir -p bench/results
	$(PYTHON) bench/bench_simulate.py --users 100000 --repeats 3 --out-json bench/results/simulate.json
# GetFeed over loopback gRPC: 1M products, 100k users, real server (1 and 2 processes), in-process store and
# Redis (a private redis-server when on PATH); the built model is cached between runs.
	OMP_NUM_THREADS=1 $(PYTHON) bench/bench_feed_grpc.py --products 1000000 --users 100000 --repeats 3 \
		--cache .sharerank/bench-cache --out-json bench/results/feed_grpc.json
# Feed p50/p99 idle, under concurrent heavy seeding and with a hung (SIGSTOPped) Redis; then >= 10,000 fuzzed
# requests over every RPC.
	$(PYTHON) bench/bench_faults.py --users 20000 --repeats 3 --without-bulkhead --out-json bench/results/faults.json
	$(PYTHON) bench/bench_fuzz.py --requests 10000 --out-json bench/results/fuzz.json
# Growth console page load times in headless chromium over a served 100k-user world.
	$(PYTHON) bench/bench_console.py --users 100000 --repeats 3 --out-json bench/results/console.json

# ruff, and the layer contract (import-linter on the installed layout; also part of `make test`).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/test_architecture.py

# Regenerates the committed gRPC code; tests/test_protos.py fails when it is stale.
proto: $(STAMP)
	$(PYTHON) -m grpc_tools.protoc -I protos --python_out=protos --grpc_python_out=protos --pyi_out=protos $(PROTOS)

clean:
	rm -rf $(VENV) .sharerank build *.egg-info
