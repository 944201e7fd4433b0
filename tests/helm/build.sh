#!/usr/bin/env bash
# Builds the real helm from Go modules into a cache outside the repository, keyed by version, with
# its version and the Kubernetes version it assumes stamped in (unstamped, lint and template
# pretend the cluster is 1.20). Does nothing when it is there. Prints the binary's path last.
set -euo pipefail
helm_version="${HELM_VERSION:-v3.19.5}"
kube_major=1 kube_minor=34 # the test control plane's version (tests/controlplane/kube/go.mod)
cache="${CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator/controlplane}"
bin="$cache/helm-$helm_version-k8s-$kube_major.$kube_minor"
if [[ -x "$bin/helm" ]]; then
  echo "$bin/helm"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=$kube_major -X $pkg.k8sVersionMinor=$kube_minor"
done
printf '[helm] building helm %s (cold: about 5 minutes) (%s)\n' "$helm_version" "$(date +%H:%M:%S)" >&2
mkdir -p "$bin.partial"
GOBIN="$bin.partial" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$helm_version"
rm -rf "$bin" && mv "$bin.partial" "$bin"
echo "$bin/helm"
