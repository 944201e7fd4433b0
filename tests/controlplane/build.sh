#!/usr/bin/env bash
# Builds the real etcd, kube-apiserver, kube-controller-manager and kubectl from Go modules (see
# ../../CONTRIBUTING.md, "The test control plane") into a cache outside the repository, keyed by
# version. Builds only the binaries missing from the cache (so a cache made before the
# controller-manager was added gains just that one); does nothing when all are there. Prints the
# directory that holds them on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_version() { sed -nE "s#^[[:space:]]*(require[[:space:]]+)?$1[[:space:]]+(v[^[:space:]]+).*#\\2#p" "$2" | head -n1; }
kube_version="$(module_version k8s.io/kubernetes "$here/kube/go.mod")"
etcd_version="$(module_version go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")"
[[ -n "$kube_version" && -n "$etcd_version" ]] || { echo "cannot read versions from go.mod" >&2; exit 1; }
cache="${CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chroma-sync-operator/controlplane}"
bin="$cache/kube-$kube_version-etcd-$etcd_version"

binaries=(etcd kube-apiserver kube-controller-manager kubectl)
missing() { [[ ! -x "$bin/$1" ]]; }
all_there=1
for b in "${binaries[@]}"; do missing "$b" && all_there=0; done
if ((all_there)); then
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
if missing etcd; then
  step "building etcd $etcd_version (cold: about 2 minutes)"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" .)
fi
step "downloading Kubernetes $kube_version modules (cold: a few minutes)"
(cd "$here/kube" && go mod download)
# The controller-manager runs only its ClusterRole aggregation controller (controlplane.sh).
for cmd in kube-apiserver kube-controller-manager kubectl; do
  if missing "$cmd"; then
    step "building $cmd $kube_version (cold: kube-apiserver 8-15 minutes on 2 cores, the others a few)"
    (cd "$here/kube" && go build -trimpath -ldflags "-s -w $stamp" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  fi
done
# One rename per binary, so a cache in use by another control plane never loses one.
mkdir -p "$bin"
for b in "${binaries[@]}"; do
  if [[ -e "$bin.partial/$b" ]]; then mv -f "$bin.partial/$b" "$bin/$b"; fi
done
rmdir "$bin.partial"
step "control-plane binaries ready in $bin"
echo "$bin"
