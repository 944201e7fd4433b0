#!/usr/bin/env bash
# Renders deploy/manifests/install.yaml from the Helm chart with its default values: the
# namespace, the CRDs (templates/crds.yaml, crds.enabled), RBAC, the Deployment and its Service, for `kubectl apply` and kustomize
# without Helm. `make manifests` writes it; tests/e2e/install.rs checks that it is current.
# Usage: [CHART=dir] render-install.sh HELM [OUT]   (OUT defaults to stdout; CHART to
# deploy/helm/chroma-sync-operator: `make release` renders its copy pinned to the image's digest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
helm="$1"
out="${2:-/dev/stdout}"
namespace=chroma-sync-system
{
  cat <<HEADER
# chroma-sync-operator: everything to run it in namespace $namespace, watching all namespaces.
# Rendered from deploy/helm/chroma-sync-operator with its default values by \`make manifests\`;
# do not edit (change the chart). Apply: kubectl apply --server-side -f install.yaml
# Each SyncSource names its token Secret (spec.tokenSecretRef); for an operator-wide default
# token use the chart (defaultToken.secretName).
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    # The operator's pod meets the "restricted" Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
HEADER
  "$helm" template chroma-sync-operator "${CHART:-deploy/helm/chroma-sync-operator}" \
    --namespace "$namespace" --skip-tests
} > "$out"
