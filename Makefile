# The one entry point for developer tasks. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# kube-apiserver and etcd for the integration tests, built once from their Go modules and cached
# in ~/.cache/contact-testbin (see tests/controlplane/build-binaries.sh).
TESTBIN = $(shell bash tests/controlplane/build-binaries.sh)
# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl, pause, CoreDNS and Traefik
# for the single-node cluster test, cached beside them (see tests/cluster/build-binaries.sh).
NODEBIN = $(shell bash tests/cluster/build-binaries.sh)

.PHONY: help demo test test-rust test-cluster test-browser lint fmt generate testbin nodebin

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## Run the demo: a tenant runtime on embedded SQLite with the Conversation API simulator
	cargo run -p contact-runtime -- demo

test: test-rust test-browser ## Run every test (needs Go, PostgreSQL, Chromium, sqlite3: .ci/run installs them)

test-rust: ## Rust tests: unit, integration on the control plane, a real node and PostgreSQL, crash test
	CONTACT_TESTBIN_DIR="$(TESTBIN)" CONTACT_NODEBIN_DIR="$(NODEBIN)" cargo test --workspace --locked

test-cluster: ## Only the production path on a real single-node cluster (root; images built with podman)
	CONTACT_TESTBIN_DIR="$(TESTBIN)" CONTACT_NODEBIN_DIR="$(NODEBIN)" cargo test -p contact-tests --locked --test cluster -- --nocapture

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

nodebin: ## Build (or find) the cached node binaries (kubelet, …, CoreDNS, Traefik) and print their folder
	@echo "$(NODEBIN)"
