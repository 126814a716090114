# Two commands do all set-up on a fresh Debian machine with Rust:
#   make run    install what is missing, build, start the server on the embedded defaults
#   make test   everything CI runs: fmt check, clippy -D warnings, all tests
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= ./volebarn-data
ARGS ?=
# A CI build is cold and built once: incremental state would only cost disk and time.
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
# CI runs the property tests from a fixed seed, like the simulation (VOLEBARN_SIM_SEED), so a run
# can be replayed; `make proptest` searches far more cases from random seeds.
export PROPTEST_RNG_SEED ?= 20261130
endif

.PHONY: all deps tools build run test fmt clippy unit proptest bench clean

all: build

# RocksDB's bindings need libclang; install it (and a C++ toolchain) when absent.
# Installs the Debian packages listed in $$missing, if any (with sudo when not root).
APT_INSTALL = if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

deps:
	@missing=""; \
	dpkg -s libclang-dev >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	command -v make >/dev/null 2>&1 || missing="$$missing make"; \
	$(APT_INSTALL)
	@command -v cargo-clippy >/dev/null 2>&1 || rustup component add clippy
	@command -v rustfmt >/dev/null 2>&1 || rustup component add rustfmt

# Servers and clients the tests run against, installed when missing: Garage (S3) into
# ~/.cargo/bin, PostgreSQL (the package only: the tests start a throwaway cluster of their own
# with initdb and pg_ctl as the postgres user), the WebDAV test suite litmus and rclone, and
# schemathesis. A test server needs no speed, so Garage is built without
# LTO at opt-level 1 and only with its SQLite metadata engine: ~14 min of CPU (about 8 min on
# 2 idle cores), once per machine.
# The web UI test (tests/web_ui.rs) needs chromium, node and npm, and the pinned
# playwright-core of crates/volebarn-server/ui-tests (npm ci, rerun when its lock changes).
# schemathesis (PyPI) checks /openapi.json against the real server (tests/schemathesis.rs),
# pinned, in a venv of its own.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_VENV := $(HOME)/.cache/volebarn-venv
# The web UI's end-to-end test drives Debian's chromium with playwright-core (npm).
UI_TESTS := crates/volebarn-server/ui-tests
tools:
	@if command -v garage >/dev/null 2>&1 || test -x ~/.cargo/bin/garage; then :; else \
		echo "installing garage (S3 server for the tests) into ~/.cargo/bin"; \
		CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
		CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
		$(CARGO) install --locked garage --no-default-features --features bundled-libs,sqlite; \
	fi
	@missing=""; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v litmus >/dev/null 2>&1 || missing="$$missing litmus"; \
	command -v rclone >/dev/null 2>&1 || missing="$$missing rclone"; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	$(APT_INSTALL)
	@# npm ships inside some nodejs packages (NodeSource's conflicts with Debian's npm).
	@missing=""; command -v npm >/dev/null 2>&1 || missing=" npm"; $(APT_INSTALL)
	@# playwright-core for the web UI test (tests/web_ui.rs), pinned by its lock file; it
	@# drives Debian's chromium and downloads no browser. It needs Node.js 20 or later.
	@if [ ! -f $(UI_TESTS)/node_modules/.package-lock.json ] || \
		[ $(UI_TESTS)/package-lock.json -nt $(UI_TESTS)/node_modules/.package-lock.json ]; then \
		echo "installing the web UI test's npm packages in $(UI_TESTS)"; \
		(cd $(UI_TESTS) && npm ci --no-audit --no-fund); \
	fi
	@if $(SCHEMATHESIS_VENV)/bin/st --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)"; then :; else \
		echo "installing schemathesis $(SCHEMATHESIS_VERSION) into $(SCHEMATHESIS_VENV)"; \
		python3 -m venv $(SCHEMATHESIS_VENV) && \
		$(SCHEMATHESIS_VENV)/bin/pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)"; \
	fi

build: deps
	$(CARGO) build --workspace

run: deps
	$(CARGO) run -p volebarn-server --bin volebarn-server -- --data-dir $(DATA_DIR) $(ARGS)

fmt:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps tools
	$(CARGO) test --workspace

test: deps tools fmt clippy unit

# A long search of the planners' property tests from random seeds; a failure is
# recorded in the crate's proptest-regressions/ and replayed by every later run, CI's included.
PROPTEST_LONG ?= 200000
proptest: deps
	PROPTEST_CASES=$(PROPTEST_LONG) $(CARGO) test -p volebarn-core -p volebarn-sync --lib -- sync:: plan::

clean:
	$(CARGO) clean

# Benchmarks print their figures next to rsync's on the same run (release build).
bench: deps tools
	@missing=""; command -v rsync >/dev/null 2>&1 || missing=" rsync"; [ -x /usr/bin/time ] || missing="$$missing time"; $(APT_INSTALL)
	$(CARGO) build --release -p volebarn-console -p volebarn-bench
	$(CARGO) run --release -p volebarn-bench -- $(BENCH_ARGS)
