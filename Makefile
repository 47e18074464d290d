# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := proto/peer/v1/sync.proto
PROTOC = $(BIN)/python -m grpc_tools.protoc -Iproto

.PHONY: test lint typecheck pytest demo bench proto proto-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) proto-check lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check peer tests bench
	$(BIN)/ruff format --check peer tests bench

typecheck: $(STAMP)
	$(BIN)/mypy peer

pytest: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_sync.py
	$(BIN)/python bench/bench_apps.py

# Regenerate the checked-in stubs (commit the result).
proto: $(STAMP)
	$(PROTOC) --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

# Fail if the checked-in stubs differ from what the pinned generator makes.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && $(PROTOC) --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO) \
	  && diff -r -x __init__.py -x __pycache__ $$tmp/peer/v1 peer/v1 \
	  && echo "proto stubs up to date"; status=$$?; rm -rf $$tmp; exit $$status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
