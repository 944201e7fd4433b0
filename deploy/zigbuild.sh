#!/usr/bin/env bash
# Runs `cargo zigbuild "$@"`: cargo with zig as the C compiler and linker, which cross-compiles the
# static arm64 (musl) binary, ring's and jemalloc's C included, with no cross tool chain on the
# machine (zig carries musl's headers for every target). `--install-only`: only makes sure it is
# there. cargo-zigbuild and zig both come prebuilt from PyPI (pinned below) into a cache outside
# the repository, in seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
zigbuild=0.24.0
zig=0.17.0
root="${ZIGBUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator}/zigbuild-$zigbuild-zig-$zig"
if [[ ! -x "$root/bin/cargo-zigbuild" || ! -x "$root/zig" ]]; then
  started=$(date +%s)
  rm -rf "$root"
  echo "[zigbuild] installing cargo-zigbuild $zigbuild and zig $zig (prebuilt, from PyPI) into $root" >&2
  python3 -m venv "$root"
  "$root/bin/pip" install --quiet --disable-pip-version-check "cargo-zigbuild==$zigbuild" "ziglang==$zig"
  # A fixed path to this zig, so that a different zig on the PATH is never picked up.
  ln -s "$("$root/bin/python" -c 'import pathlib, ziglang; print(pathlib.Path(ziglang.__file__).with_name("zig"))')" "$root/zig"
  "$root/zig" version >/dev/null
  echo "[zigbuild] installed in $(( $(date +%s) - started )) s" >&2
fi
[[ "${1:-}" == --install-only ]] && exit 0
CARGO_ZIGBUILD_ZIG_PATH="$root/zig" exec "$root/bin/cargo-zigbuild" zigbuild "$@"
