# Tally's entry points. `make demo` and `make test` install and start what they need, idempotently.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target
TALLY := $(CARGO_TARGET_DIR)/debug/tally

.PHONY: demo test up down status build check fmt lint ci

## demo: bring the stack up, create the topics, and print the stack's health
demo: up build
	@set -a; source .tally/env; set +a; $(TALLY) topics ensure && $(TALLY) stack health

## test: bring the stack up and run every test (unit, property, fixture, CLI and stack integration)
test: up
	@set -a; source .tally/env; set +a; cargo nextest run --workspace --no-fail-fast --failure-output final

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
