# The one entry point for developer tasks. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# kube-apiserver and etcd for the integration tests, built once from their Go modules and cached
# in ~/.cache/contact-testbin (see tests/controlplane/build-binaries.sh).
TESTBIN = $(shell bash tests/controlplane/build-binaries.sh)

.PHONY: help demo test test-rust test-browser lint fmt generate testbin

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## Run the demo: a tenant runtime on embedded SQLite with the Conversation API simulator
	cargo run -p contact-runtime -- demo

test: test-rust test-browser ## Run every test (needs Go, PostgreSQL, Chromium, sqlite3: .ci/run installs them)

test-rust: ## Rust tests: unit, integration on the control plane and PostgreSQL, crash test
	CONTACT_TESTBIN_DIR="$(TESTBIN)" cargo test --workspace --locked

test-browser: ## Browser tests: Debian's Chromium driven by playwright-core against the real binary
	tests/browser/run.sh

lint: ## Check formatting and clippy (warnings are errors)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	cargo fmt --all

generate: ## Regenerate committed files (CRD YAML, OpenAPI); tests fail when they drift
	cargo run -q -p contact-crds --bin crdgen
	cargo run -q -p contact-runtime -- openapi > tenant-runtime/openapi.json

testbin: ## Build (or find) the cached kube-apiserver and etcd and print their folder
	@echo "$(TESTBIN)"
