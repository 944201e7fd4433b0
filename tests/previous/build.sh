#!/usr/bin/env bash
# The previous release (tests/previous/release): its source tree at the tag's commit (git archive,
# under target/previous/<commit>/src) and its operator binary, built once and cached by commit in
# the tool cache (~/.cache/chroma-sync-operator/previous/<commit>/). Prints the cache directory
# last: it holds `chroma-sync-operator` (the binary) and `src` (a link to the tree, whose chart
# is src/deploy/helm/chroma-sync-operator). Does nothing but print when both are there.
#
# The build shares this checkout's compiled dependencies: its build directory
# (CARGO_BUILD_BUILD_DIR) is this checkout's target/, and it is a `cargo test --no-run` of one
# small test target, so the dependencies get the features `cargo test --workspace` (make test)
# gives them and only the previous release's own three crates compile. Those get a profile
# setting of their own (codegen-units) so that their artifacts never share a name with this
# checkout's: cargo judges a path crate fresh by mtimes, and git archive dates the tree's files
# at the commit, so a shared name could pass one tree's code off as the other's. Its binary goes
# to a target directory of its own (target/debug is untouched). tests/run.sh runs this before the
# tests; tests/e2e/upgrade.rs runs it when PREVIOUS_RELEASE is not set.
# Usage: build.sh [--tree]   (--tree: the source tree only, no build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
read -r tag commit < <(grep -v '^#' tests/previous/release)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator/previous/$commit"
tree="$root/target/previous/$commit/src"

if [[ ! -f "$tree/Cargo.toml" ]]; then
  git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "[previous] commit $commit ($tag) is not in this clone: git fetch origin $commit (a shallow clone has too little history)" >&2
    exit 1
  }
  rm -rf "$tree.partial" && mkdir -p "$tree.partial"
  git archive "$commit" | tar -x -C "$tree.partial"
  rm -rf "$tree" && mv "$tree.partial" "$tree"
fi
mkdir -p "$cache"
ln -sfn "$tree" "$cache/src"
if [[ "${1:-}" == --tree ]]; then
  echo "$cache"
  exit 0
fi

if [[ ! -x "$cache/chroma-sync-operator" ]]; then
  started=$(date +%s)
  printf '[previous] building chroma-sync-operator %s (%s) (%s)\n' "$tag" "${commit:0:7}" "$(date +%H:%M:%S)" >&2
  out="$root/target/previous/$commit/target"
  own=()
  for package in chroma-sync-operator chroma-sync-standin chroma-sync-test-support; do
    own+=(--config "profile.dev.package.$package.codegen-units=255")
  done
  CARGO_BUILD_BUILD_DIR="$root/target" CARGO_TARGET_DIR="$out" \
    cargo test --locked --manifest-path "$tree/Cargo.toml" --workspace --no-run --test crd \
    "${own[@]}" >&2
  cp "$out/debug/chroma-sync-operator" "$cache/chroma-sync-operator.partial"
  mv "$cache/chroma-sync-operator.partial" "$cache/chroma-sync-operator"
  printf '[previous] built %s in %d s\n' "$tag" "$(( $(date +%s) - started ))" >&2
fi
echo "$cache"
