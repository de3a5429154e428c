# Two commands for people: `make demo` and `make test`. Each creates the virtualenv when missing.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/sharerank/v1/*.proto)

.PHONY: demo test bench lint proto clean

# Quiet on stdout (progress on stderr), so `make demo` prints only its JSON even on a fresh clone.
$(STAMP): pyproject.toml
	@echo "creating $(VENV) (first run only)" >&2
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@$(PYTHON) -m pip install -q --upgrade pip setuptools wheel >&2
	@$(PYTHON) -m pip install -q -e '.[dev]' >&2
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/sharerank demo

test: $(STAMP)
	$(PYTHON) -m pytest -q

bench: $(STAMP)
	mkdir -p bench/results
	$(PYTHON) bench/bench_simulate.py --users 100000 --repeats 3 --out-json bench/results/simulate.json
# GetFeed over loopback gRPC: 1M products, 100k users, real server (1 and 2 processes), in-process store and
# Redis (a private redis-server when on PATH); the built model is cached between runs.
	OMP_NUM_THREADS=1 $(PYTHON) bench/bench_feed_grpc.py --products 1000000 --users 100000 --repeats 3 \
		--cache .sharerank/bench-cache --out-json bench/results/feed_grpc.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Regenerates the committed gRPC code; tests/test_protos.py fails when it is stale.
proto: $(STAMP)
	$(PYTHON) -m grpc_tools.protoc -I protos --python_out=protos --grpc_python_out=protos --pyi_out=protos $(PROTOS)

clean:
	rm -rf $(VENV) .sharerank build *.egg-info
