#!/usr/bin/env bash
# `make run`: the operator end to end on the embedded default. Starts a local control plane and
# the local Chroma Sync stand-in, installs the CRD, runs the operator, applies the stand-in's token
# Secret (deploy/local/token-secret.yaml), the S3 example's made-up AWS key
# (deploy/local/aws-secret.yaml) and deploy/examples, and shows the SyncSources Ready
# with their source ids, and the example SyncRun Complete. Then it
# keeps running until Ctrl-C, so you can try things (it prints the KUBECONFIG to use).
# EXIT_WHEN_READY=1 stops once they are Ready.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
state="$PWD/.run"
say() { printf '\n[make run] %s\n' "$*" >&2; }

tests/controlplane/controlplane.sh up "$state/controlplane"
export KUBECONFIG="$state/controlplane/kubeconfig"
kubectl="$state/controlplane/kubectl"
bin="${CARGO_TARGET_DIR:-target}/debug"
pids=()
cleanup() {
  say "stopping the operator, the stand-in and the control plane"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tests/controlplane/controlplane.sh down "$state/controlplane"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
say "starting the Chroma Sync stand-in on http://127.0.0.1:$port (database: docs)"
"$bin/chroma-sync-standin" --listen "127.0.0.1:$port" --database docs --token local-dev-token \
  >"$state/standin.log" 2>&1 &
pids+=($!)

say "installing the CRD"
"$kubectl" apply -f crds/
"$kubectl" wait --for=condition=Established crd/syncsources.chromasync.dev crd/syncruns.chromasync.dev \
  crd/chromasyncconnections.chromasync.dev crd/clusterchromasyncconnections.chromasync.dev --timeout=60s

say "starting the operator (log: $state/operator.log)"
"$bin/chroma-sync-operator" --chroma-url "http://127.0.0.1:$port" --allow-insecure-http \
  --chroma-api-url "http://127.0.0.1:$port" \
  --metrics-address 127.0.0.1:0 --log-format text >"$state/operator.log" 2>&1 &
pids+=($!)

say "applying the stand-in's token Secret, the namespace's default connection to it, the S3 example's AWS key, and deploy/examples"
"$kubectl" apply -f deploy/local/token-secret.yaml -f deploy/local/aws-secret.yaml
# The examples name no connection: they use this one, the namespace's `default`.
"$kubectl" apply -f - <<EOF
apiVersion: chromasync.dev/v1alpha1
kind: ChromaSyncConnection
metadata:
  name: default
spec:
  url: http://127.0.0.1:$port
  tokenSecretRef:
    name: chroma-sync-token
  limits:
    callsPerSecond: 20
EOF
"$kubectl" wait --for=condition=Ready chromasyncconnection/default --timeout=60s
"$kubectl" get chromasyncconnections
"$kubectl" apply -R -f deploy/examples/
"$kubectl" wait --for=condition=Ready syncsource --all --timeout=60s
say "the examples (minimal/ and showcase/), Ready with their Chroma source ids:"
"$kubectl" get syncsources
say "the example sync run, from Pending to Complete (it waits for its source to be Ready):"
"$kubectl" wait --for=condition=Ready syncrun --all --timeout=90s
"$kubectl" get syncruns
if [[ "${EXIT_WHEN_READY:-0}" == 1 ]]; then
  exit 0
fi
say "running. Try: KUBECONFIG=$KUBECONFIG $kubectl get syncsrc -w   (Ctrl-C stops everything)"
wait
