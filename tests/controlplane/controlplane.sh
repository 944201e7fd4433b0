#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd plus kube-apiserver, as envtest runs them, and
# kube-controller-manager with only its ClusterRole aggregation controller (what fills the
# built-in view, edit and admin ClusterRoles from the `aggregate-to-*` labelled ones; no other
# controller runs, so namespaces still never finish deleting and nothing is garbage-collected).
#
#   controlplane.sh up DIR              build the binaries if needed, start both, write
#                                       DIR/kubeconfig
#   controlplane.sh restart etcd DIR    stop one component and start it again on the same port
#   controlplane.sh restart kube-apiserver DIR     and data (for fault tests)
#   controlplane.sh down DIR            stop all three and remove DIR
#
# The admin identity is a client certificate in group system:masters. The CA, serving and
# service-account keys are made fresh with openssl for each DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage="usage: controlplane.sh up|down DIR, or restart etcd|kube-apiserver DIR"
cmd="${1:?$usage}"
if [[ "$cmd" == restart ]]; then component="${2:?$usage}"; shift; fi
dir="${2:?$usage}"

say() { printf '[control plane] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop_one() {
  local name="$1" pid
  if [[ -f "$dir/$name.pid" ]]; then
    pid="$(cat "$dir/$name.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  fi
}

stop() {
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
}

certs() {
  local pki="$dir/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=chroma-sync-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    leaf() { # name subject [san]
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
      [[ -n "${3:-}" ]] && ext+=$'\n'"subjectAltName=$3"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
        -days 30 -extfile <(printf '%s\n' "$ext") 2>/dev/null
    }
    leaf apiserver "/CN=kube-apiserver" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"
    leaf admin "/O=system:masters/CN=admin"
    leaf controller-manager "/O=system:masters/CN=system:kube-controller-manager"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# Binaries and ports of DIR's control plane: written by `up`, read by `restart`.
load_state() { source "$dir/state.env"; }

start_etcd() {
  say "starting etcd on 127.0.0.1:$etcd_port"
  # An 8 GiB backend (etcd's suggested most, default 2): `make bench` at 100,000 objects keeps
  # three namespaces of them, each written three times.
  "$bin/etcd" --name test --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true \
    --quota-backend-bytes 8589934592 \
    --log-level warn >>"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
}

start_apiserver() {
  local advertise=()
  if ! ip route show default 2>/dev/null | grep -q default; then
    advertise=(--advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  fi
  say "starting kube-apiserver on https://127.0.0.1:$api_port"
  "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
    --disable-admission-plugins ServiceAccount \
    --audit-policy-file "$here/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
    --audit-log-format json --audit-log-maxsize 100000 \
    "${advertise[@]}" >>"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
}

start_controller_manager() {
  # Its own identity (so the apiserver's audit log tells it from the tests' admin), no serving
  # port, no leader election: one controller that only reads and updates ClusterRoles.
  cat >"$dir/controller-manager.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/pki/ca.crt
users:
- name: controller-manager
  user:
    client-certificate: $dir/pki/controller-manager.crt
    client-key: $dir/pki/controller-manager.key
contexts:
- name: test
  context: {cluster: test, user: controller-manager}
current-context: test
EOF
  say "starting kube-controller-manager (clusterrole-aggregation-controller only)"
  "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --controllers clusterrole-aggregation-controller \
    --leader-elect=false --secure-port 0 \
    >>"$dir/kube-controller-manager.log" 2>&1 &
  echo $! >"$dir/kube-controller-manager.pid"
}

wait_ready() {
  say "waiting for /readyz (up to 3 minutes on a busy 2-core machine)"
  for i in $(seq 360); do
    if "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
      say "ready after $((i / 2)) s; KUBECONFIG=$dir/kubeconfig"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
      say "kube-apiserver exited; last lines of its log:"; tail -n 30 "$dir/kube-apiserver.log" >&2; return 1
    fi
    sleep 0.5
  done
  say "kube-apiserver did not become ready; last lines of its log:"
  tail -n 30 "$dir/kube-apiserver.log" >&2
  return 1
}

up() {
  bin="$("$here/build.sh" | tail -n1)"
  stop
  rm -rf "$dir" && mkdir -p "$dir"
  certs
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  printf 'bin=%q\netcd_port=%s\npeer_port=%s\napi_port=%s\n' "$bin" "$etcd_port" "$peer_port" "$api_port" \
    >"$dir/state.env"
  start_etcd
  start_apiserver
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $dir/pki/admin.crt
    client-key: $dir/pki/admin.key
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
EOF
  ln -sf "$bin/kubectl" "$dir/kubectl"
  wait_ready
  start_controller_manager
}

restart() {
  load_state
  case "$component" in
    etcd) stop_one etcd; start_etcd ;;
    kube-apiserver) stop_one kube-apiserver; start_apiserver ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  wait_ready
}

case "$cmd" in
  up) up ;;
  restart) restart ;;
  down) stop; rm -rf "$dir" ;;
  *) echo "usage: controlplane.sh up|down DIR" >&2; exit 2 ;;
esac
