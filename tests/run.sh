#!/usr/bin/env bash
# Starts a real control plane, runs a command against it (KUBECONFIG set; when none is given,
# every test of the workspace: `cargo test --workspace --features e2e`, the cluster suites
# included), and stops it again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$PWD/target/controlplane-test"
tests/controlplane/controlplane.sh up "$dir"
# helm for the install tests (tests/e2e/install.rs); cached, so instant after the first build.
HELM="$(tests/helm/build.sh)"
export HELM
# The previous release's binary and chart for tests/e2e/upgrade.rs and crds.rs (tests/previous/;
# built once per release commit, sharing target/'s compiled dependencies: about a minute), before
# the suite so that no test waits on a build.
if (($# == 0)) || [[ "$*" == *e2e* ]]; then
  PREVIOUS_RELEASE="$(tests/previous/build.sh)"
  export PREVIOUS_RELEASE
fi
trap 'tests/controlplane/controlplane.sh down "$dir"' EXIT
if (($# == 0)); then set -- cargo test --workspace --features e2e; fi
echo "[tests] running '$*' against $dir/kubeconfig (the end-to-end suite takes about two minutes)" >&2
KUBECONFIG="$dir/kubeconfig" "$@"
