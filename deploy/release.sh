#!/usr/bin/env bash
# `make release`: one versioned release of the operator, as files under target/dist/<version>/,
# from the image `make image` built (target/image/oci) and the chart. Prints that directory last.
#   chroma-sync-operator-<v>.oci.tar        the multi-arch image index (linux/amd64, linux/arm64)
#                                           as an OCI layout, tagged <v>
#   chroma-sync-operator-<v>.digest         the index's digest (sha256:...)
#   chroma-sync-operator-<v>.sig            cosign's signature of the image (base64) over
#   chroma-sync-operator-<v>.sig.payload    its payload (the digest and the image's repository),
#                                           attached to the image when it is pushed
#   chroma-sync-operator-<v>.<arch>.cdx.json  SBOM of each platform's binary: the crates it links
#                                           and the procedural macros it is built with (CycloneDX
#                                           1.5, cargo-cyclonedx), attached to that platform's image
#   chroma-sync-operator-<v>.<arch>.cdx.att.json  that SBOM as a signed attestation of that image
#   chroma-sync-operator-<v>.tgz            the Helm chart (version = appVersion = <v>), its
#                                           image pinned by digest
#   install.yaml                            the chart rendered with its defaults, pinned too
#   crds.yaml                               the four CRDs alone
#   RELEASE-NOTES.md                        CHANGELOG.md's section for <v>
#   cosign.pub                              the public key that verifies the signatures
#   SHA256SUMS, SHA256SUMS.sig              checksums of every file above; their signature
# The image's repository: RELEASE_IMAGE (default ghcr.io/<owner>/<name> from Cargo.toml's
# repository). Signing key: COSIGN_KEY (with COSIGN_PASSWORD), else a development key made once
# under target/release-dev-key/ and named NOT-FOR-PUBLICATION in the release; COSIGN_KEY=none
# signs nothing here (the release workflow signs keyless after pushing).
# Refuses: a VERSION other than Cargo.toml's, a version without a CHANGELOG.md section, a dirty
# work tree (RELEASE_ALLOW_DIRTY=1 allows it, for tests), an image not built from HEAD, and any
# RustSec advisory matching Cargo.lock (.ci/cargo-deny.sh advisories).
# Usage: VERSION=x.y.z [RELEASE_DIR=dir] deploy/release.sh [--preflight]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[release] %s\n' "$*" >&2; }
refuse() { say "REFUSED: $*"; exit 1; }
cargo_field() { sed -nE "s/^$1 = \"([^\"]+)\"/\\1/p" Cargo.toml | head -n1; }

crate_version="$(cargo_field version)"
version="${VERSION:-$crate_version}"
version="${version#v}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || refuse "VERSION=$version is not x.y.z"

# 1. Preflight: every refusal before anything is built.
notes="$(awk -v v="$version" '
  $0 ~ "^## \\[" { if (on) exit; if (index($0, "## [" v "]") == 1) { on = 1; next } }
  on { print }' CHANGELOG.md)"
[[ -n "$(tr -d '[:space:]' <<<"$notes")" ]] \
  || refuse "CHANGELOG.md has no section \"## [$version]\" (or it is empty): write the release's notes there first"
[[ "$version" == "$crate_version" ]] \
  || refuse "VERSION=$version but Cargo.toml says $crate_version: bump Cargo.toml (and the chart) first"
if [[ -n "$(git status --porcelain --untracked-files=normal)" ]]; then
  if [[ "${RELEASE_ALLOW_DIRTY:-}" == 1 ]]; then
    say "the work tree is dirty; going on (RELEASE_ALLOW_DIRTY=1): NOT a publishable release"
  else
    git status --short >&2
    refuse "the work tree is dirty (above): commit or stash first (RELEASE_ALLOW_DIRTY=1 for tests)"
  fi
fi
if tagged="$(git rev-parse --verify --quiet "refs/tags/v$version^{commit}")" \
    && [[ "$tagged" != "$(git rev-parse HEAD)" ]]; then
  say "WARNING: the tag v$version is commit ${tagged:0:7}, not HEAD: these files are not that release's (bump the version to publish HEAD)"
fi
.ci/cargo-deny.sh advisories || refuse "RustSec advisories match Cargo.lock (above)"
[[ "${1:-}" == --preflight ]] && { say "preflight ok for $version"; exit 0; }

# 2. The image: the index `make image` left for this version, built from HEAD.
layout=target/image/oci
revision="$(git rev-parse HEAD)"
index_desc="$(jq -ce --arg v "$version" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $v)' \
  "$layout/index.json" 2>/dev/null)" || refuse "no image $version in $layout: run make image"
digest="$(jq -r .digest <<<"$index_desc")"
first="$(jq -r '.manifests[0].digest' "$layout/blobs/sha256/${digest#sha256:}")"
built_from="$(jq -r '.annotations["org.opencontainers.image.revision"] // empty' \
  "$layout/blobs/sha256/${first#sha256:}")"
[[ "$built_from" == "$revision" ]] || refuse "the image in $layout was built from ${built_from:-?}, not HEAD ($revision): run make image"

owner_name="$(cargo_field repository | sed -nE 's|^https://github.com/([^/]+/[^/]+)$|\1|p')"
image="${RELEASE_IMAGE:-ghcr.io/$owner_name}"
out="${RELEASE_DIR:-target/dist/$version}"
rm -rf "$out" && mkdir -p "$out"
out="$(cd "$out" && pwd)"
name="chroma-sync-operator-$version"
say "releasing $version: $image@$digest into $out"

# The OCI layout with that one tag, as a reproducible tar (sorted, no owners, time 0).
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/oci/blobs/sha256"
cp "$layout/oci-layout" "$stage/oci/"
jq -c --argjson d "$index_desc" '{schemaVersion: 2, manifests: [$d]}' "$layout/index.json" > "$stage/oci/index.json"
# The index, its manifests, their configs and layers.
blobs=("${digest#sha256:}")
for manifest in $(jq -r '.manifests[].digest' "$layout/blobs/sha256/${digest#sha256:}"); do
  blobs+=("${manifest#sha256:}")
  for blob in $(jq -r '.config.digest, .layers[].digest' "$layout/blobs/sha256/${manifest#sha256:}"); do
    blobs+=("${blob#sha256:}")
  done
done
for blob in "${blobs[@]}"; do cp "$layout/blobs/sha256/$blob" "$stage/oci/blobs/sha256/"; done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$stage/oci" -cf "$out/$name.oci.tar" .
echo "$digest" > "$out/$name.digest"

# 3. The SBOMs, one for each platform's binary: the operator's package resolved for that target
# (the crates it links, and the procedural macros it is compiled with; no build scripts' or
# dev-dependencies, none of the workspace's test crates).
cyclonedx="$(tests/release/tools.sh cargo-cyclonedx)"
declare -A targets=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
for arch in amd64 arm64; do
  # cargo-cyclonedx writes <name>.cdx.json beside every member's Cargo.toml: the operator's is
  # moved out, the test crates' removed.
  "$cyclonedx" cyclonedx --manifest-path Cargo.toml --format json --spec-version 1.5 \
    --target "${targets[$arch]}" --no-build-deps --override-filename sbom-release.cdx >/dev/null
  mv sbom-release.cdx.json "$out/$name.$arch.cdx.json"
  rm -f tests/standin/sbom-release.cdx.json tests/support/sbom-release.cdx.json
done

# 4. The chart, pinned to the image by digest, and install.yaml rendered from it.
helm="$(tests/helm/build.sh)"
chart="$stage/chart/chroma-sync-operator"
mkdir -p "$stage/chart" && cp -R deploy/helm/chroma-sync-operator "$chart"
python3 - "$chart" "$version" "$image" "$digest" <<'PY'
import pathlib, re, sys
chart, version, image, digest = pathlib.Path(sys.argv[1]), *sys.argv[2:]
def sub(path, pattern, repl):
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, f"{path}: no match for {pattern}"
    path.write_text(new)
sub(chart / "Chart.yaml", r'^version: .*$', f'version: {version}')
sub(chart / "Chart.yaml", r'^appVersion: .*$', f'appVersion: "{version}"')
sub(chart / "Chart.yaml", r'^(      image: ).*$', rf'\g<1>{image}:{version}@{digest}')
sub(chart / "values.yaml", r'^(  repository: ).*$', rf'\g<1>{image}')
sub(chart / "values.yaml", r'^(  digest: )"".*$', rf'\g<1>"{digest}"')
PY
"$helm" lint --strict "$chart" >/dev/null || refuse "the pinned chart fails helm lint"
"$helm" package "$chart" --destination "$out" >/dev/null
[[ -f "$out/$name.tgz" ]] || refuse "helm package wrote no $name.tgz"
CHART="$chart" deploy/render-install.sh "$helm" "$out/install.yaml"
grep -q "image: $image@$digest" "$out/install.yaml" || refuse "install.yaml is not pinned to $digest"

# 5. The CRDs on their own, in the order `chroma-sync-operator crd` prints them.
for plural in syncsources syncruns chromasyncconnections clusterchromasyncconnections; do
  [[ "$plural" == syncsources ]] || echo "---"
  cat "crds/$plural.chromasync.dev.yaml"
done > "$out/crds.yaml"

# 6. Release notes.
{
  echo "# chroma-sync-operator $version"
  echo
  echo "Image: \`$image@$digest\` (linux/amd64, linux/arm64)"
  echo "Chart: \`oci://${image%/*}/charts/chroma-sync-operator\` version $version"
  printf '%s\n' "$notes"
} > "$out/RELEASE-NOTES.md"

# 7. Signatures: the image (cosign's payload for its digest, signed as a blob here and attached
# when pushed) and SHA256SUMS (which covers the SBOM and every other file).
cosign_key="${COSIGN_KEY:-}"
if [[ "$cosign_key" != none ]]; then
  cosign="$(tests/release/tools.sh cosign)"
  if [[ -z "$cosign_key" ]]; then
    keydir="$PWD/target/release-dev-key"
    if [[ ! -f "$keydir/cosign.key" ]]; then
      mkdir -p "$keydir"
      (cd "$keydir" && COSIGN_PASSWORD="" "$cosign" generate-key-pair >/dev/null 2>&1)
      echo "A development signing key made by make release: NOT FOR PUBLICATION." > "$keydir/README"
    fi
    cosign_key="$keydir/cosign.key"
    export COSIGN_PASSWORD=""
    say "signing with the DEVELOPMENT key $cosign_key (not for publication; set COSIGN_KEY)"
    echo "Signed with a development key made by make release: NOT FOR PUBLICATION." > "$out/DEV-KEY-NOT-FOR-PUBLICATION"
  fi
  export COSIGN_PASSWORD="${COSIGN_PASSWORD:-}"
  "$cosign" public-key --key "$cosign_key" > "$out/cosign.pub"
  "$cosign" generate "$image@$digest" > "$out/$name.sig.payload"
  jq -e --arg d "$digest" '.critical.image["docker-manifest-digest"] == $d' "$out/$name.sig.payload" >/dev/null \
    || refuse "cosign's payload does not name $digest"
  "$cosign" sign-blob --yes --key "$cosign_key" --tlog-upload=false \
    --output-signature "$out/$name.sig" "$out/$name.sig.payload" >/dev/null 2>&1
  # Each platform's SBOM as a signed in-toto attestation of that platform's image (a DSSE
  # envelope, attached when pushed; `cosign verify-attestation --type cyclonedx` checks it).
  for arch in amd64 arm64; do
    platform_digest="$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' \
      "$layout/blobs/sha256/${digest#sha256:}")"
    "$cosign" attest --yes --key "$cosign_key" --tlog-upload=false --no-upload --type cyclonedx \
      --predicate "$out/$name.$arch.cdx.json" "$image@$platform_digest" \
      > "$out/$name.$arch.cdx.att.json" 2>/dev/null
  done
fi
chmod 644 "$out"/*
(cd "$out" && sha256sum -- * | grep -v ' SHA256SUMS' > SHA256SUMS)
if [[ "$cosign_key" != none ]]; then
  "$cosign" sign-blob --yes --key "$cosign_key" --tlog-upload=false \
    --output-signature "$out/SHA256SUMS.sig" "$out/SHA256SUMS" >/dev/null 2>&1
fi
(cd "$out" && sha256sum --quiet -c SHA256SUMS) || refuse "SHA256SUMS does not check"
say "release $version: $(ls "$out" | wc -l) files in $out"
echo "$out"
