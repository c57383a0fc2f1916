# The two set-up commands (see README):  `make demo`  and  `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-all-$(HASH)
BASE_STAMP := $(VENV)/.installed-base-$(HASH)

.PHONY: install install-base test test-fast lint demo bench dist clean

# rustup puts cargo in ~/.cargo/bin, which a non-login shell's PATH may lack.
export PATH := $(PATH):$(HOME)/.cargo/bin

# The native Avro codec (native/, Rust) is compiled by pip install: a change to it reinstalls.
NATIVE_SRC := $(wildcard native/Cargo.toml native/Cargo.lock native/src/*.rs)
CARGO_CHECK = @command -v cargo >/dev/null || { echo "error: cargo not found: installing cdcrouter compiles its \
native Avro codec (native/, Rust). Install Rust: https://rustup.rs"; exit 1; }

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (cdcrouter needs Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The demo needs only the package; the tests also need PyFlink (~850 MB) and the dev tools.
$(BASE_STAMP): pyproject.toml $(NATIVE_SRC) | $(BIN)/python
	$(CARGO_CHECK)
	$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): pyproject.toml $(NATIVE_SRC) | $(BIN)/python
	$(CARGO_CHECK)
	$(BIN)/pip install -q -e '.[dev,flink]'
	@touch $@ $(BASE_STAMP)

install-base: $(BASE_STAMP)
install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests testing
	$(BIN)/ruff format --check src tests testing

# Full suite: unit tests, then integration tests on the real local stack (started by the tests).
# --durations=25: the CI log names the slowest tests (the suite's budget is 30 minutes on 2 cores).
test: install
	$(BIN)/ruff check src tests testing
	$(BIN)/python testing/cdcrouter_testing/run_pytest.py tests --durations=25

test-fast: install
	$(BIN)/python testing/cdcrouter_testing/run_pytest.py tests -m "not integration and not flink"

demo: install-base
	$(BIN)/cdcrouter demo

# The documented benchmark set (BENCHMARKS.md), each run BENCH_REPEAT times: the JSON results go
# to bench-results/ (one file per line below), then a markdown table of them to stdout.
#   make bench               the full set, about 3 hours on 2 cores (Flink at 100 filters is half of
#                            it): capture vs Debezium, the router at 20 and 1,000 filters, Flink at
#                            20 and 100 filters and its latency, fused mode, the snapshot
#   make bench BENCH=quick   the same subjects, small counts, no Debezium/Flink (~15 min, estimated)
# Add a benchmark with one line: $(call bench_run,NAME,SUBJECT ARGS...[,--runs]) ($(call bench_flink,...) for
# `bench flink`, which always prints JSON and repeats by rounds). It uses the stack in
# $CDCROUTER_STATE_DIR (default .cdcrouter/), started here if it is not up (Connect and Flink too
# for the full set; `bench flink` starts a private Flink cluster of its own besides).
BENCH ?= full
BENCH_OUT ?= bench-results
BENCH_REPEAT ?= 3
bench_run = $(BIN)/cdcrouter bench $(2) $(or $(3),--repeat) $(BENCH_REPEAT) --json > $(BENCH_OUT)/$(1).json.tmp \
	&& mv $(BENCH_OUT)/$(1).json.tmp $(BENCH_OUT)/$(1).json
bench_flink = $(BIN)/cdcrouter bench flink $(2) --repeat $(BENCH_REPEAT) > $(BENCH_OUT)/$(1).json.tmp \
	&& mv $(BENCH_OUT)/$(1).json.tmp $(BENCH_OUT)/$(1).json

bench: $(if $(filter quick,$(BENCH)),install-base,install)
	@case "$(BENCH)" in full|quick) ;; *) echo "error: BENCH=$(BENCH): expected full or quick"; exit 2;; esac
	@mkdir -p $(BENCH_OUT)
ifeq ($(BENCH),quick)
	$(BIN)/cdcrouter stack up --only postgres,kafka,registry
	$(call bench_run,generate-1000,generate --filters-count 1000)
	$(call bench_run,match-20,match --filters-count 20 --events 100000)
	$(call bench_run,match-1000,match --filters-count 1000 --events 100000)
	$(call bench_run,route-throughput-20,route --events 100000 --filters-count 20 --skip-latency)
	$(call bench_run,route-throughput-1000,route -n 1000 --events 100000 --warmup 20000 --skip-latency)
	$(call bench_run,route-latency-20,route --skip-throughput --filters-count 20 --rate 2000 --seconds 10)
	$(call bench_run,capture-embedded,capture --no-debezium --changes 50000 --warmup 20000 --rate 2000 --seconds 10)
	$(call bench_run,fused,fused --rate 2000 --seconds 10,--runs)
else
	$(BIN)/cdcrouter stack up --only postgres,kafka,registry,connect
	$(call bench_run,generate-1000,generate --filters-count 1000)
	$(call bench_run,match-20,match --filters-count 20 --events 200000)
	$(call bench_run,match-200,match --filters-count 200 --events 200000)
	$(call bench_run,match-1000,match --filters-count 1000 --events 200000)
	$(call bench_run,match-1000-no-index,match --filters-count 1000 --events 50000 --no-index)
	$(call bench_run,route-throughput-20,route --events 200000 --filters-count 20 --skip-latency)
	$(call bench_run,route-throughput-1000,route -n 1000 --events 1000000 --warmup 200000 --skip-latency)
	$(call bench_run,route-latency-4,route --skip-throughput --filters-count 4 --rate 2000 --seconds 15)
	$(call bench_run,route-latency-20,route --skip-throughput --filters-count 20 --rate 2000 --seconds 15)
	$(call bench_run,capture-vs-debezium,capture --changes 100000 --warmup 100000 --rate 2000 --seconds 15)
	$(call bench_flink,flink-20,--events 1000000 --warmup 200000 --filters-count 20 --checkpoint-interval 5s)
	$(call bench_flink,flink-100,--events 1000000 --warmup 200000 --filters-count 100 \
		--checkpoint-interval 5s --sink-shape one-sink --sink-shape per-topic)
	$(call bench_flink,flink-latency,--latency-only --filters-count 20 --rate 2000 --seconds 15 \
		--checkpoint-interval 1s)
	$(call bench_run,fused,fused --rate 2000 --seconds 15,--runs)
	$(call bench_run,snapshot-300k,snapshot --rows 300000 --rate 1000 --kill-at 0.5)
endif
	@$(BIN)/cdcrouter bench report $(BENCH_OUT)

# dist/: the sdist, then a platform wheel built from that sdist (so the sdist is proven complete).
# The wheel holds the compiled codec: `pip install dist/cdcrouter-*.whl` needs no Rust.
BUILD_PIN = $(shell grep -o '"build==[^"]*"' pyproject.toml | tr -d '"')
dist: | $(BIN)/python
	$(CARGO_CHECK)
	@$(BIN)/python -c "import build" 2>/dev/null || $(BIN)/pip install -q "$(BUILD_PIN)"
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	@ls -l dist

clean:
	rm -rf $(VENV) build dist *.egg-info native/target src/cdcrouter/_native*.so
