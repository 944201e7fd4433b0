#!/usr/bin/env bash
# Builds helm-docs (the chart README's values table from values.yaml comments) from Go modules
# into the same cache as helm (tests/helm/build.sh), keyed by version; does nothing when it is
# there. With a chart directory, writes that chart's README.md (from its README.md.gotmpl and
# values.yaml); without, prints the binary's path.
# Usage: docs.sh [CHART_DIR]   (`make chart-docs`; tests/e2e/install.rs runs it on a copy of the
# chart and fails when the committed README.md differs)
set -euo pipefail
version="${HELM_DOCS_VERSION:-v1.14.2}"
cache="${CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator/controlplane}"
bin="$cache/helm-docs-$version"
if [[ ! -x "$bin/helm-docs" ]]; then
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  printf '[helm-docs] building helm-docs %s (cold: about a minute) (%s)\n' "$version" "$(date +%H:%M:%S)" >&2
  rm -rf "$bin.partial" && mkdir -p "$bin.partial"
  GOBIN="$bin.partial" go install -trimpath -ldflags "-s -w" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@$version"
  rm -rf "$bin" && mv "$bin.partial" "$bin"
fi
if (($# == 0)); then
  echo "$bin/helm-docs"
  exit 0
fi
# No version footer: the README stays byte-identical across helm-docs builds.
"$bin/helm-docs" --chart-search-root "$1" --skip-version-footer --log-level warning
