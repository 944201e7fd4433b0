#!/usr/bin/env bash
# Builds the operator's OCI image from deploy/Dockerfile with buildah (no daemon), into the OCI
# layout target/image/oci, tagged with the crate's version. Prints the image reference last.
# Push it with skopeo, e.g.:
#   skopeo copy oci:target/image/oci:0.1.0 docker://registry.example.com/chroma-sync-operator:0.1.0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-musl
version="$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -n1)"
out=target/image
for tool in buildah:buildah musl-gcc:musl-tools; do
  command -v "${tool%%:*}" >/dev/null || { echo "make image needs ${tool%%:*} (apt-get install ${tool##*:})" >&2; exit 1; }
done
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

# ring compiles C: with musl-gcc (Debian musl-tools) for the static musl target.
CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --quiet --release --locked --target "$target" --bin chroma-sync-operator
rm -rf "$out/context" "$out/oci"
mkdir -p "$out/context"
cp "target/$target/release/chroma-sync-operator" "$out/context/"
cp /etc/ssl/certs/ca-certificates.crt "$out/context/"
# A private store under target/: nothing touches the machine's container storage.
store=(--root "$PWD/$out/storage" --runroot "$PWD/$out/run" --storage-driver vfs)
buildah "${store[@]}" build --quiet --timestamp 0 -f deploy/Dockerfile \
  -t "chroma-sync-operator:$version" "$out/context" >/dev/null
buildah "${store[@]}" push --quiet "chroma-sync-operator:$version" "oci:$PWD/$out/oci:$version"
buildah "${store[@]}" rmi --all >/dev/null
echo "oci:$out/oci:$version"
