#!/usr/bin/env bash
# Builds the real etcd, kube-apiserver and kubectl from Go modules (see ../../README.md, "The test
# control plane") into a cache outside the repository, keyed by version. Does nothing when the
# binaries are already there. Prints the directory that holds them on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_version() { sed -nE "s#^[[:space:]]*(require[[:space:]]+)?$1[[:space:]]+(v[^[:space:]]+).*#\\2#p" "$2" | head -n1; }
kube_version="$(module_version k8s.io/kubernetes "$here/kube/go.mod")"
etcd_version="$(module_version go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")"
[[ -n "$kube_version" && -n "$etcd_version" ]] || { echo "cannot read versions from go.mod" >&2; exit 1; }
cache="${CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator/controlplane}"
bin="$cache/kube-$kube_version-etcd-$etcd_version"

if [[ -x "$bin/etcd" && -x "$bin/kube-apiserver" && -x "$bin/kubectl" ]]; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin.partial"
major="${kube_version#v}"; major="${major%%.*}"
minor="${kube_version#v*.}"; minor="${minor%%.*}"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step() { printf '[control plane] %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
step "building etcd $etcd_version (cold: about 2 minutes)"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" .)
step "downloading Kubernetes $kube_version modules (cold: a few minutes)"
(cd "$here/kube" && go mod download)
step "building kube-apiserver $kube_version (cold: 8-15 minutes on 2 cores)"
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $stamp" -o "$bin.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
step "building kubectl $kube_version (cold: a few minutes)"
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $stamp" -o "$bin.partial/kubectl" k8s.io/kubernetes/cmd/kubectl)
rm -rf "$bin" && mv "$bin.partial" "$bin"
step "control-plane binaries ready in $bin"
echo "$bin"
