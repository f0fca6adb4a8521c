# Tally's entry points. `make demo` and `make test` install and start what they need, idempotently.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target
TALLY := $(CARGO_TARGET_DIR)/debug/tally

.PHONY: demo test up down build fmt lint ci schemathesis
# make demo DEMO_ARGS="--seed 7 --events 50000" for another workload

## demo: the whole pipeline on the local stack: ingest + ledger sink, a generated workload, the oracles, a summary
demo: up build
	@set -a; source .tally/env; set +a; $(TALLY) stack health >/dev/null 2>&1 || $(TALLY) topics ensure >/dev/null; \
	  TALLY_LOG=$${TALLY_LOG:-warn} $(TALLY) demo $(DEMO_ARGS)

## test: bring the stack up and run every test (unit, property, fixture, CLI and stack integration)
test: up
	@set -a; source .tally/env; set +a; cargo nextest run --workspace --no-fail-fast --failure-output final

## schemathesis: the payments API against its own OpenAPI spec (schemathesis from PyPI, default checks)
schemathesis: up
	@scripts/schemathesis.sh $(ST_ARGS)

## up / down: start / stop PostgreSQL, Redis and the Kafka-API broker on 127.0.0.1
up:
	@scripts/up.sh
down:
	@scripts/down.sh

build:
	@cargo build --quiet --bin tally

fmt:
	cargo fmt --all
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
ci:
	bash .ci/run
