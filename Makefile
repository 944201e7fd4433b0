# chroma-sync-operator: the commands a developer needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
TEST_DIR := target/controlplane-test

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the operator and the stand-in
	$(CARGO) build --bins

controlplane: ## Build etcd, kube-apiserver and kubectl from Go modules (cached; cold: ~15 min)
	tests/controlplane/build.sh

crd: ## Regenerate crds/ from the Rust types
	$(CARGO) run --quiet --bin chroma-sync-operator -- crd > crds/syncsources.chromasync.dev.yaml

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

deny: ## cargo deny check bans licenses sources (deny.toml; installs cargo-deny, cached; cold: ~22 min)
	.ci/cargo-deny.sh

test: lint deny controlplane ## Everything: lint, deny, unit, contract and end-to-end tests on a real control plane
	tests/run.sh

reliability: controlplane ## Heavy fault runs: a 500-object SIGKILL storm with 20 kills (prints its figures)
	CHAOS_OBJECTS=$${CHAOS_OBJECTS:-500} CHAOS_KILLS=$${CHAOS_KILLS:-20} CHAOS_SEED=$${CHAOS_SEED:-7} \
	  tests/run.sh cargo test --test e2e sigkill_storm -- --nocapture

bench: controlplane ## Benchmark against the null-operator floor (BENCH_N=1000; also 10000); prints a table
	tests/run.sh cargo bench --bench operator

run: build controlplane ## Local control plane + stand-in + operator; applies the examples and shows them Ready
	deploy/local/run.sh

.PHONY: help build controlplane crd lint deny test reliability bench run
