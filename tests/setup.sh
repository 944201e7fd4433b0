#!/usr/bin/env bash
# Installs what `make run` or `make test` needs and does not find, so that each works on a fresh
# machine by itself (and .ci/run needs no list of its own):
#   tests/setup.sh run    Debian packages the local run uses
#   tests/setup.sh test   those, plus what the tests use (Lua, buildah, umoci, musl-gcc), rustfmt
#                         and clippy, and cargo-deny
# Debian packages are installed with apt-get when running as root; otherwise it stops with the
# one apt-get line to run. Go (>= 1.24) and Rust (>= 1.89) must be on PATH already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what="${1:?usage: tests/setup.sh run|test}"
say() { printf '[setup] %s\n' "$*" >&2; }

# command:package pairs.
needs=(openssl:openssl python3:python3 curl:curl)
if [[ "$what" == test ]]; then
  needs+=(lua5.1:lua5.1 buildah:buildah umoci:umoci musl-gcc:musl-tools)
fi
missing=()
for need in "${needs[@]}"; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need##*:}")
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing tools; install them with:"
    say "  sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

command -v go >/dev/null || { say "Go >= 1.24 must be on PATH (it builds kube-apiserver, etcd and helm)"; exit 1; }
command -v cargo >/dev/null || { say "a Rust toolchain (>= 1.89) must be on PATH"; exit 1; }

if [[ "$what" == test ]]; then
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      say "adding the Rust component $component"
      rustup component add "$component"
    fi
  done
  .ci/cargo-deny.sh --install-only
fi
