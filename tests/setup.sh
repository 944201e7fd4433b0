#!/usr/bin/env bash
# Installs what `make run` or `make test` needs and does not find, so that each works on a fresh
# machine by itself (and .ci/run needs no list of its own):
#   tests/setup.sh run    Debian packages the local run uses
#   tests/setup.sh image  those, plus what `make image` (and `make release`) uses: buildah, umoci,
#                         musl-gcc, qemu-user-static (runs the arm64 binary in the image check), jq, the Rust
#                         musl targets for amd64 and arm64, and cargo-zigbuild with zig
#   tests/setup.sh test   all of the above, plus Lua, rustfmt and clippy, and cargo-deny
# Debian packages are installed with apt-get when running as root; otherwise it stops with the
# one apt-get line to run. Go (>= 1.24; not for `image`) and Rust (>= 1.89) must be on PATH already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what="${1:?usage: tests/setup.sh run|image|test}"
say() { printf '[setup] %s\n' "$*" >&2; }

# command:package pairs.
needs=(openssl:openssl python3:python3 curl:curl)
if [[ "$what" == image || "$what" == test ]]; then
  needs+=(buildah:buildah umoci:umoci musl-gcc:musl-tools qemu-aarch64-static:qemu-user-static jq:jq)
fi
if [[ "$what" == test ]]; then
  needs+=(lua5.1:lua5.1)
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

[[ "$what" == image ]] || command -v go >/dev/null || { say "Go >= 1.24 must be on PATH (it builds kube-apiserver, etcd and helm)"; exit 1; }
command -v cargo >/dev/null || { say "a Rust toolchain (>= 1.89) must be on PATH"; exit 1; }

if [[ "$what" == image || "$what" == test ]]; then
  installed="$(rustup target list --installed)"
  for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! grep -qx "$target" <<<"$installed"; then
      say "adding the Rust target $target"
      rustup target add "$target"
    fi
  done
  deploy/zigbuild.sh --install-only
fi

if [[ "$what" == test ]]; then
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      say "adding the Rust component $component"
      rustup component add "$component"
    fi
  done
  .ci/cargo-deny.sh --install-only
fi
