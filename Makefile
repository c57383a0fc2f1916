# The two set-up commands (see README):  `make demo`  and  `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install test test-fast lint demo bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (cdcrouter needs Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,flink]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# Full suite: unit tests, then integration tests on the real local stack (started by the tests).
test: install
	$(BIN)/ruff check src tests
	$(BIN)/python -m cdcrouter.testing.run_pytest tests

test-fast: install
	$(BIN)/python -m cdcrouter.testing.run_pytest tests -m "not integration and not flink"

demo: install
	$(BIN)/cdcrouter demo

bench: install
	$(BIN)/cdcrouter bench

clean:
	rm -rf $(VENV) build *.egg-info
