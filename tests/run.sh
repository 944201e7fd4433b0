#!/usr/bin/env bash
# Starts a real control plane, runs `cargo test [ARGS]` against it (every test by default), and
# stops it again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$PWD/target/controlplane-test"
tests/controlplane/controlplane.sh up "$dir"
trap 'tests/controlplane/controlplane.sh down "$dir"' EXIT
echo "[tests] running cargo test against $dir/kubeconfig (the end-to-end suite takes about a minute)" >&2
KUBECONFIG="$dir/kubeconfig" cargo test "$@"
