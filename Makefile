# chroma-sync-operator: the commands a developer needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
TEST_DIR := target/controlplane-test
# The image's org.opencontainers.image.source: Cargo.toml's `repository` (the chart's `home`), or
# your fork's URL when you publish it: `make image IMAGE_SOURCE=https://github.com/your-org/...`.
IMAGE_SOURCE ?= $(shell sed -nE 's/^repository = "([^"]+)"/\1/p' Cargo.toml | head -n1)
# `make release`: the version (Cargo.toml's; another is refused), the image's repository (default
# ghcr.io/<owner>/<name> of `repository`) and the cosign key (default: a development key under
# target/, not for publication; `none`: unsigned, the release workflow signs keyless).
VERSION ?= $(shell sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -n1)
RELEASE_IMAGE ?=
COSIGN_KEY ?=

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup-run: ## Install what `make run` needs and does not find (Debian packages, as root)
	tests/setup.sh run

setup-test: ## Install what `make test` needs and does not find (Debian packages as root, rustfmt, clippy, cargo-deny)
	tests/setup.sh test

build: ## Build the operator and the stand-in
	$(CARGO) build --workspace --bins

controlplane: ## Build etcd, kube-apiserver and kubectl from Go modules (cached; cold: ~15 min)
	tests/controlplane/build.sh

helm: ## Build helm and helm-docs from Go modules (cached; cold: ~5 min)
	tests/helm/build.sh
	tests/helm/docs.sh

crd: ## Regenerate crds/ (and the chart's copy, files/crds/) from the Rust types
	for plural in syncsources syncruns chromasyncconnections clusterchromasyncconnections; do \
	  $(CARGO) run --quiet --bin chroma-sync-operator -- crd $$plural > crds/$$plural.chromasync.dev.yaml; \
	  cp crds/$$plural.chromasync.dev.yaml deploy/helm/chroma-sync-operator/files/crds/; \
	done

previous: ## Build the previous release's operator (tests/previous/release) for the upgrade test (cached by commit)
	tests/previous/build.sh

manifests: helm ## Render deploy/manifests/install.yaml from the Helm chart
	helm=$$(tests/helm/build.sh); deploy/render-install.sh "$$helm" deploy/manifests/install.yaml

chart-docs: ## Regenerate the chart's README.md (values table) from values.yaml with helm-docs
	tests/helm/docs.sh deploy/helm/chroma-sync-operator

image: ## Build the OCI image for amd64 and arm64 (static binaries, buildah) into target/image/oci and check it
	tests/setup.sh image
	ref=$$(IMAGE_SOURCE='$(IMAGE_SOURCE)' deploy/build-image.sh); tests/image/check.py "$$ref"

lint: ## cargo fmt --check and clippy with warnings as errors, on the whole workspace; actionlint on .github/workflows
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --features e2e -- -D warnings
	actionlint=$$(tests/release/tools.sh actionlint); "$$actionlint" -no-color .github/workflows/*.yml && echo "actionlint: .github/workflows ok"

deny: ## cargo deny: bans licenses sources, and advisories offline against a dated RustSec snapshot (ADVISORY_DB)
	.ci/cargo-deny.sh

test: setup-test lint deny controlplane helm image release-tools ## Everything: lint, deny, image, unit, contract, install, end-to-end and release tests on a real control plane
	tests/run.sh
	tests/run.sh tests/release/check.py

release-tools: ## Build crane, cosign, actionlint and cargo-cyclonedx once into the tool cache
	for tool in crane cosign actionlint cargo-cyclonedx; do tests/release/tools.sh $$tool >/dev/null; done

release: ## Versioned, signed release files in target/dist/VERSION (refuses: no CHANGELOG section, dirty tree, advisories)
	VERSION='$(VERSION)' deploy/release.sh --preflight
	$(MAKE) --no-print-directory image
	VERSION='$(VERSION)' RELEASE_IMAGE='$(RELEASE_IMAGE)' COSIGN_KEY='$(COSIGN_KEY)' deploy/release.sh

release-check: controlplane helm release-tools image ## The release as users consume it: local registry, helm install from oci://, cosign verify, SBOM, pulled binary
	tests/run.sh tests/release/check.py

reliability: controlplane ## Heavy fault runs, one at a time (sizes: tests/reliability/run.sh); prints one table
	mkdir -p target/reliability
	report="$$PWD/target/reliability/$$(date -u +%Y%m%dT%H%M%SZ).jsonl"; status=0; \
	  RELIABILITY_REPORT="$$report" tests/run.sh tests/reliability/run.sh || status=$$?; \
	  echo; tests/reliability/report.py "$$report"; exit $$status

bench: controlplane ## Benchmark against the null-operator floor (BENCH_N=1000; also 10000); prints a table
	tests/run.sh cargo bench --bench operator

heap-profile: controlplane ## Where the heap goes at HEAP_N (10000) Ready SyncSources: heaptrack, by part of the operator
	tests/bench/heap-profile.sh

run: setup-run build controlplane ## Local control plane + stand-in + operator; applies the examples and shows them Ready
	deploy/local/run.sh

.PHONY: help setup-run setup-test build controlplane helm crd previous manifests chart-docs image lint deny test release-tools release release-check reliability bench heap-profile run
