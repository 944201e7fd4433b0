#!/usr/bin/env bash
# Builds one release tool once into the tool cache outside the repository
# (~/.cache/chroma-sync-operator/<tool>-<version>/), keyed by version, like tests/helm/build.sh;
# does nothing when it is there. Prints the binary's path last.
# Usage: tools.sh crane|cosign|actionlint|cargo-cyclonedx|git-cliff
#   crane            github.com/google/go-containerregistry/cmd/crane (push, digest, and the
#                    loopback registry of the release test: `crane registry serve`)
#   cosign           github.com/sigstore/cosign/v2/cmd/cosign (key-based sign and verify)
#   actionlint       github.com/rhysd/actionlint/cmd/actionlint (checks .github/workflows)
#   cargo-cyclonedx  the crate cargo-cyclonedx (the binary's crates as a CycloneDX SBOM)
#   git-cliff        the PyPI package git-cliff (a wheel carrying the binary; CHANGELOG drafts)
# TOOL_BUILD_COLD=1 builds a Go tool with an empty module and build cache of its own (to measure
# a brand-new machine's cost), removed afterwards.
set -euo pipefail
tool="${1:?usage: tools.sh crane|cosign|actionlint|cargo-cyclonedx|git-cliff}"
cache="${RELEASE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator}"
say() { printf '[tools] %s\n' "$*" >&2; }

case "$tool" in
  crane) version=v0.22.1 module=github.com/google/go-containerregistry/cmd/crane cold="about a minute" ;;
  cosign) version=v2.6.5 module=github.com/sigstore/cosign/v2/cmd/cosign cold="about 12 minutes" ;;
  actionlint) version=v1.7.12 module=github.com/rhysd/actionlint/cmd/actionlint cold="about a minute" ;;
  cargo-cyclonedx) version=0.5.9 cold="about 2 minutes" ;;
  git-cliff) version=2.14.2 cold="seconds" ;;
  *) say "unknown tool $tool"; exit 2 ;;
esac
dir="$cache/$tool-$version"
bin="$dir/bin/$tool"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

started=$(date +%s)
say "installing $tool $version into $dir (cold: $cold) ($(date +%H:%M:%S))"
rm -rf "$dir.partial"
mkdir -p "$dir.partial/bin"
case "$tool" in
  crane | cosign | actionlint)
    command -v go >/dev/null || { say "Go (>= 1.24) must be on PATH to build $tool"; exit 1; }
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    if [[ "${TOOL_BUILD_COLD:-}" == 1 ]]; then
      scratch="$(mktemp -d)"
      trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
      export GOMODCACHE="$scratch/mod" GOCACHE="$scratch/build"
    fi
    GOBIN="$dir.partial/bin" go install -trimpath -ldflags "-s -w" "$module@$version"
    ;;
  cargo-cyclonedx)
    # A private target dir, so the install neither reuses nor pollutes the project's target/.
    # --debug: half the cold build (78 s against 147 s here, sources downloaded), the same SBOM
    # (it reads `cargo metadata`; a release takes 3 s either way).
    CARGO_TARGET_DIR="$dir.build" cargo install --locked --quiet --debug "cargo-cyclonedx@$version" \
      --root "$dir.partial"
    rm -rf "$dir.build"
    ;;
  git-cliff)
    # A venv records its own path, so it is made where it stays; bin/git-cliff, linked last,
    # marks it complete.
    rm -rf "$dir" && python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "git-cliff==$version"
    mkdir -p "$dir.partial/bin" && ln -s ../venv/bin/git-cliff "$dir.partial/bin/git-cliff"
    mv "$dir.partial/bin" "$dir/bin" && rm -rf "$dir.partial"
    ;;
esac
[[ "$tool" == git-cliff ]] || { rm -rf "$dir" && mv "$dir.partial" "$dir"; }
say "$tool $version installed in $(( $(date +%s) - started )) s"
case "$tool" in
  cargo-cyclonedx) "$bin" cyclonedx --version >/dev/null ;;
  crane | cosign) "$bin" version >/dev/null 2>&1 ;;
  *) "$bin" --version >/dev/null ;;
esac
echo "$bin"
