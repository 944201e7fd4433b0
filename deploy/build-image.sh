#!/usr/bin/env bash
# Builds the operator's OCI image for linux/amd64 and linux/arm64 from deploy/Dockerfile with
# buildah (no daemon), as one OCI index in the layout target/image/oci, tagged with the crate's
# version. Prints the image reference last. Push both platforms with skopeo, e.g.:
#   skopeo copy --all oci:target/image/oci:0.2.0 docker://registry.example.com/chroma-sync-operator:0.2.0
# IMAGE_SOURCE sets org.opencontainers.image.source (the Makefile passes its variable).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo_field() { sed -nE "s/^$1 = \"([^\"]+)\"/\\1/p" Cargo.toml | head -n1; }
version="$(cargo_field version)"
source_url="${IMAGE_SOURCE:-$(cargo_field repository)}"
[ -n "$source_url" ] || { echo "build-image: no IMAGE_SOURCE and no repository in Cargo.toml" >&2; exit 1; }
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
out=target/image
list="chroma-sync-operator:$version"
for tool in buildah:buildah musl-gcc:musl-tools; do
  command -v "${tool%%:*}" >/dev/null || { echo "make image needs ${tool%%:*} (apt-get install ${tool##*:})" >&2; exit 1; }
done
declare -A targets=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
installed="$(rustup target list --installed)"
for target in "${targets[@]}"; do
  grep -qx "$target" <<<"$installed" || rustup target add "$target"
done

# Static musl binaries, stripped. amd64: ring compiles C with musl-gcc (Debian musl-tools).
# arm64: cross-compiled with zig as C compiler and linker (deploy/zigbuild.sh), which also builds
# jemalloc's C for the target; no emulation at build time. `-p chroma-sync-operator`: the
# operator's package alone, so the workspace's test crates (tests/standin, tests/support) are
# neither built nor let their features into the operator's dependencies.
export CARGO_PROFILE_RELEASE_STRIP=symbols
CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" \
  cargo build --quiet --release --locked --target "${targets[amd64]}" -p chroma-sync-operator --bin chroma-sync-operator
deploy/zigbuild.sh --quiet --release --locked --target "${targets[arm64]}" -p chroma-sync-operator --bin chroma-sync-operator

# A private store under target/: nothing touches the machine's container storage.
store=(--root "$PWD/$out/storage" --runroot "$PWD/$out/run" --storage-driver vfs)
# A list left by an interrupted run would collect a second image per platform.
buildah "${store[@]}" rmi --all --force >/dev/null 2>&1 || true
rm -rf "$out"/context* "$out/oci"
labels=(
  "org.opencontainers.image.title=chroma-sync-operator"
  "org.opencontainers.image.description=$(cargo_field description)"
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.licenses=$(cargo_field license)"
)
metadata=()
for label in "${labels[@]}"; do
  metadata+=(--label "$label" --annotation "$label")
done
for arch in amd64 arm64; do
  context="$out/context-$arch"
  mkdir -p "$context"
  cp "target/${targets[$arch]}/release/chroma-sync-operator" "$context/"
  cp /etc/ssl/certs/ca-certificates.crt "$context/"
  # FROM scratch with COPY only: building for another platform runs nothing of that platform.
  buildah "${store[@]}" build --quiet --timestamp 0 --platform "linux/$arch" --manifest "$list" \
    "${metadata[@]}" -f deploy/Dockerfile "$context" >/dev/null
done
buildah "${store[@]}" manifest push --quiet --all --format oci "$list" "oci:$PWD/$out/oci:$version"
buildah "${store[@]}" rmi --all --force >/dev/null
echo "oci:$out/oci:$version"
