#!/usr/bin/env bash
# Pushes a release that `make release` built (target/dist/<version>/) to an OCI registry, as users
# then consume it: the image index under its version tag (checked to keep the release's digest),
# the key-based cosign signature `make release` made, each platform's SBOM attached to that
# platform's image (as an SBOM and as the signed attestation `make release` made), and the chart to oci://<registry>/<owner>/charts. The registry is the one the
# release names (RELEASE_IMAGE when it was built). The release workflow pushes the same files
# but signs keyless instead (.github/workflows/release.yml).
# Usage: deploy/publish-release.sh DIR [--plain-http]   (--plain-http: a loopback registry)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:?usage: publish-release.sh DIR [--plain-http]}"
plain_http="${2:-}"
say() { printf '[publish] %s\n' "$*" >&2; }
crane="$(tests/release/tools.sh crane)"
cosign="$(tests/release/tools.sh cosign)"
helm="$(tests/helm/build.sh)"
crane_flags=() cosign_flags=() helm_flags=()
if [[ "$plain_http" == --plain-http ]]; then
  crane_flags=(--insecure) cosign_flags=(--allow-http-registry --allow-insecure-registry)
  helm_flags=(--plain-http)
fi

(cd "$dir" && sha256sum --quiet -c SHA256SUMS) || { say "SHA256SUMS does not check in $dir"; exit 1; }
chart="$(ls "$dir"/chroma-sync-operator-*.tgz)"
version="$(basename "$chart" .tgz)" && version="${version#chroma-sync-operator-}"
name="chroma-sync-operator-$version"
digest="$(cat "$dir/$name.digest")"
payload="$dir/$name.sig.payload"
image="$(jq -r '.critical.identity["docker-reference"]' "$payload")"

layout="$(mktemp -d)"
trap 'rm -rf "$layout"' EXIT
tar -C "$layout" -xf "$dir/$name.oci.tar"
say "pushing $image:$version ($digest)"
"$crane" "${crane_flags[@]}" push "$layout" "$image:$version" >/dev/null
pushed="$("$crane" "${crane_flags[@]}" digest "$image:$version")"
[[ "$pushed" == "$digest" ]] || { say "the registry holds $pushed, not the release's $digest"; exit 1; }

say "attaching the signature and the SBOMs"
"$cosign" attach signature "${cosign_flags[@]}" --payload "$payload" --signature "$dir/$name.sig" \
  "$image@$digest" >/dev/null 2>&1
for arch in amd64 arm64; do
  platform_digest="$(jq -r --arg a "$arch" \
    '.manifests[] | select(.platform.architecture == $a) | .digest' \
    "$layout/blobs/sha256/${digest#sha256:}")"
  "$cosign" attach sbom "${cosign_flags[@]}" --type cyclonedx --sbom "$dir/$name.$arch.cdx.json" \
    "$image@$platform_digest" >/dev/null 2>&1
  "$cosign" attach attestation "${cosign_flags[@]}" --attestation "$dir/$name.$arch.cdx.att.json" \
    "$image@$platform_digest" >/dev/null 2>&1
done

say "pushing the chart to oci://${image%/*}/charts"
"$helm" push "$chart" "oci://${image%/*}/charts" "${helm_flags[@]}" >&2
echo "$image@$digest"
