#!/usr/bin/env bash
# `make heap-profile`: where the operator's heap goes with HEAP_N (default 10000) Ready
# SyncSources. Builds the operator with the system allocator (heaptrack sees malloc, not
# jemalloc), starts a control plane and the stand-in, creates the objects, runs the operator under
# heaptrack until every object is Ready and 10 s more, stops it, and prints the heap at that
# steady state by part of the operator (the reflector's store, the controller's queue, HTTP, ...),
# per object, with the RSS beside it. The profile stays in target/heap-profile/ for heaptrack_gui.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n="${HEAP_N:-10000}"
out="$PWD/target/heap-profile"
say() { printf '[heap-profile] %s\n' "$*" >&2; }

tests/setup.sh run
if ! command -v heaptrack >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "installing heaptrack"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends heaptrack >/dev/null
  else
    say "heaptrack is missing: sudo apt-get install -y heaptrack"; exit 1
  fi
fi
tests/controlplane/build.sh >/dev/null
say "building the operator with the system allocator"
cargo build --release -p chroma-sync-operator -p chroma-sync-standin --bins --features chroma-sync-operator/system-allocator
rm -rf "$out/cp" "$out"/heaptrack.* "$out/bin"
mkdir -p "$out/bin"
# A copy: the next plain release build replaces these.
cp target/release/chroma-sync-operator target/release/chroma-sync-standin "$out/bin/"
bin="$out/bin"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tests/controlplane/controlplane.sh down "$out/cp"
}
trap cleanup EXIT
tests/controlplane/controlplane.sh up "$out/cp"
export KUBECONFIG="$out/cp/kubeconfig"
kubectl="$out/cp/kubectl"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin/chroma-sync-standin" --listen "127.0.0.1:$port" --database docs --token profile-token \
  >"$out/standin.log" 2>&1 &
pids+=($!)
"$bin/chroma-sync-operator" crd | "$kubectl" apply -f - >/dev/null
"$kubectl" wait --for=condition=Established crd/syncsources.chromasync.dev --timeout=60s >/dev/null
"$kubectl" create namespace profile >/dev/null
"$kubectl" -n profile create secret generic chroma-token --from-literal=token=profile-token >/dev/null

say "creating $n SyncSources"
python3 - "$n" "$out" <<'EOF'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
parts = 8
for p in range(parts):
    items = [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
              "metadata": {"name": f"s{i:06}", "namespace": "profile"},
              "spec": {"databaseName": "docs", "github": {"repository": f"acme/repo-{i}"},
                       "tokenSecretRef": {"name": "chroma-token"}}}
             for i in range(p, n, parts)]
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(f"{out}/objects-{p}.json", "w"))
EOF
ls "$out"/objects-*.json | xargs -P 8 -I{} "$kubectl" create -f {} -o name | wc -l >/dev/null

say "running the operator under heaptrack until all $n are Ready"
heaptrack -o "$out/heaptrack.operator" "$bin/chroma-sync-operator" \
  --chroma-url "http://127.0.0.1:$port" --allow-insecure-http --leader-election false \
  --namespaces profile --drift-interval 0 --metrics-address 127.0.0.1:0 --log-format text \
  >"$out/operator.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 600); do
  ready="$("$kubectl" -n profile get syncsources -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
  [[ "$ready" == "$n" ]] && break
  sleep 2
done
[[ "$ready" == "$n" ]] || { say "only $ready of $n Ready after 20 minutes"; exit 1; }
sleep 10
operator="$(pgrep -f -n "^$bin/chroma-sync-operator")"
rss_kib="$(awk '/^VmRSS/ {print $2}' "/proc/$operator/status")"
kill -TERM "$operator"
wait "${pids[-1]}" || true

profile="$(ls "$out"/heaptrack.operator.*)"
heaptrack_print -f "$profile" -M "$out/massif.txt" -F "$out/peak-stacks.txt" \
  --flamegraph-cost-type peak -p 0 -a 0 -T 0 -l 0 >/dev/null 2>&1
python3 - "$n" "$rss_kib" "$out" <<'EOF'
import collections, sys
n, rss_kib, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# The steady heap: the last massif snapshot before the shutdown began to free (the largest of
# the last 100 snapshots).
heaps = [int(l.split("=")[1]) for l in open(f"{out}/massif.txt") if l.startswith("mem_heap_B=")]
steady = max(heaps[-100:]) if heaps else 0
# The peak's allocations by the innermost frame naming a part of the operator.
# (Generic frames spell paths with `..`.)
parts = [("reflector::store", "reflector store (the cached objects, their keys, the map)"),
         ("runner..Runner", "controller queue (scheduler and runner maps)"),
         ("scheduler..Scheduler", "controller queue (scheduler and runner maps)"),
         ("controller::cache", "change filter"), ("chroma_sync_operator::", "operator code"),
         ("hyper", "HTTP (hyper)"), ("rustls", "TLS"), ("tokio", "tokio"),
         ("tracing", "tracing"), ("kube_client", "kube client")]
by_part = collections.Counter()
for line in open(f"{out}/peak-stacks.txt"):
    stack, _, cost = line.rstrip().rpartition(" ")
    label = "other"
    for frame in reversed(stack.split(";")):
        hit = next((name for key, name in parts if key in frame), None)
        if hit:
            label = hit
            break
    by_part[label] += int(cost)
peak = sum(by_part.values())
print(f"heap profile, {n} Ready SyncSources (system allocator, heaptrack)")
print(f"  RSS at steady state: {rss_kib / 1024:.1f} MiB")
print(f"  heap at steady state: {steady / 2**20:.1f} MiB ({steady / n:.0f} bytes per object); peak {peak / 2**20:.1f} MiB")
for label, cost in by_part.most_common():
    print(f"  {label:<58} {cost / 2**20:6.2f} MiB  {cost / n:6.0f} bytes/object")
EOF
say "profile: $profile (heaptrack_gui or heaptrack_print)"
