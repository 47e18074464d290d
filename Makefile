# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := proto/peer/v1/sync.proto proto/peer/v1/local.proto
PROTOC = $(BIN)/python -m grpc_tools.protoc -Iproto

.PHONY: test lint typecheck pytest demo bench proto proto-check proto-lint proto-baseline vectors clean reliability soak sysdeps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) sysdeps proto-check proto-lint lint typecheck pytest

# System packages some tests use (Debian's; CI runs as root). Best effort: without them
# those tests skip and say why (libfaketime: the clock-skew test, D5; tmux, zsh and fish:
# the shell integration tests, tests/test_shells.py, which drive real shells in tmux).
sysdeps:
	@command -v faketime >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq faketime >/dev/null 2>&1) \
	  && echo "installed faketime (for the clock-skew test)"; } \
	  || echo "faketime not installed: the clock-skew test (D5) will skip"
	@missing=$$(for tool in tmux zsh fish; do command -v $$tool >/dev/null 2>&1 || echo $$tool; done); \
	  [ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq $$missing >/dev/null 2>&1) \
	  && echo "installed" $$missing "(for the shell integration tests)"; } \
	  || echo "not installed:" $$missing "- their shell integration tests will skip"

lint: $(STAMP)
	$(BIN)/ruff check peer tests bench scripts
	$(BIN)/ruff format --check peer tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy peer

pytest: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_sync.py
	$(BIN)/python bench/bench_daemon.py
	$(BIN)/python bench/bench_apps.py
	$(BIN)/python bench/bench_history.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_mesh.py

# The reliability suite (pr tier) on its own, then its table (also in docs/reliability.md).
reliability: $(STAMP)
	rm -f build/reliability.jsonl build/soak.jsonl
	$(BIN)/pytest -q tests/reliability
	$(BIN)/python tests/reliability/table.py build/reliability.jsonl --keep docs/reliability.md --write docs/reliability.md

# The soak tier: the same tests with the larger counts (PEER_SOAK=1), about 30-45 min.
soak: $(STAMP)
	rm -f build/soak.jsonl
	PEER_SOAK=1 PEER_REPORT=build/soak.jsonl $(BIN)/pytest -q -p no:cacheprovider tests/reliability
	$(BIN)/python tests/reliability/table.py build/reliability.jsonl build/soak.jsonl --keep docs/reliability.md --write docs/reliability.md

# Regenerate the checked-in stubs (commit the result).
proto: $(STAMP)
	$(PROTOC) --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

# Fail if the checked-in stubs differ from what the pinned generator makes.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && $(PROTOC) --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO) \
	  && diff -r -x __init__.py -x __pycache__ $$tmp/peer/v1 peer/v1 \
	  && echo "proto stubs up to date"; status=$$?; rm -rf $$tmp; exit $$status

# buf lint (STANDARD) and buf breaking against the last released protos; buf.yaml says
# which rules and why. The baseline is a byte-for-byte copy of the released .proto files
# in proto-released/ (outside the buf module, so neither linted nor generated): a copy, not
# a git ref or a binary image, so the check needs no history (a clean clone, a tarball)
# and a reader can diff the two trees. RELEASED is the commit they are copied from: the
# first release, 36c17d9 (issue 7 landed, 2026-11-29). At the next release, run
# make proto-baseline RELEASED=<its commit> and commit the copy with the new RELEASED.
RELEASED := 36c17d9
proto-lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf breaking --against proto-released

proto-baseline:
	for f in $(PROTO); do git show $(RELEASED):$$f > proto-released/$${f#proto/} || exit 1; done

# Regenerate docs/vectors/v1.json from the code (commit the result; tests/test_vectors_json.py
# fails while the committed file differs from what this writes).
vectors: $(STAMP)
	$(BIN)/python scripts/vectors.py
	$(BIN)/python scripts/roster_vectors.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
