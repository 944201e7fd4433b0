#!/usr/bin/env bash
# Runs `cargo deny check bans licenses sources` with the policy in deny.toml. Installs cargo-deny
# (pinned, --locked) into a cache outside the repository the first time; later runs reuse it.
# `advisories` is left out on purpose: it fetches the RustSec database over the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
root="${CARGO_DENY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator}/cargo-deny-$version"
if [[ ! -x "$root/bin/cargo-deny" ]]; then
  echo "[deny] installing cargo-deny $version into $root (cold: about 20 minutes on 2 cores)" >&2
  started=$(date +%s)
  # A private target dir, so the install neither reuses nor pollutes the project's target/.
  CARGO_TARGET_DIR="$root.build" cargo install --locked --quiet cargo-deny --version "$version" --root "$root"
  rm -rf "$root.build"
  echo "[deny] installed in $(( $(date +%s) - started )) s" >&2
fi
"$root/bin/cargo-deny" --version >&2
exec "$root/bin/cargo-deny" check --hide-inclusion-graph bans licenses sources "$@"
