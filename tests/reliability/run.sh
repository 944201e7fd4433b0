#!/usr/bin/env bash
# The heavy fault runs of `make reliability`, one case at a time (on 2 cores, two heavy cases
# at once would starve each other and measure that instead), against the control plane that
# tests/run.sh started. Each run appends a JSON line to RELIABILITY_REPORT; a failed run is
# recorded there too, and the script goes on with the others and fails at the end.
#
# Sizes and runs (environment, with their defaults):
#   RELIABILITY_RUNS=3        runs (seeds 1..N) of every case but the SIGKILL storm
#   CHAOS_OBJECTS=500 CHAOS_KILLS=20 CHAOS_SEED=7        one SIGKILL storm
#   RUNS_CHAOS_RUNS=300 RUNS_CHAOS_KILLS=20 RUNS_CHAOS_SEED=5   one SIGKILL storm over SyncRuns
#   STORM_OBJECTS=300 STORM_ERROR_PERCENT=30             Chroma fault storm
#   CUTS_ROUNDS=20 CUTS_PER_ROUND=15                     apiserver connection cuts (300 objects)
#   CONFLICT_OBJECTS=64 CONFLICT_WRITERS=8               409 conflicts from busy writers
#   CRD_OBJECTS=100                                      CRD removed and re-installed
#   RESTART_OBJECTS=20                                   apiserver and etcd restarts
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${RELIABILITY_REPORT:?set RELIABILITY_REPORT to the JSON-lines file to append to}"
runs=${RELIABILITY_RUNS:-3}
export CHAOS_OBJECTS=${CHAOS_OBJECTS:-500} CHAOS_KILLS=${CHAOS_KILLS:-20}
export RUNS_CHAOS_RUNS=${RUNS_CHAOS_RUNS:-300} RUNS_CHAOS_KILLS=${RUNS_CHAOS_KILLS:-20}
export STORM_OBJECTS=${STORM_OBJECTS:-300} STORM_ERROR_PERCENT=${STORM_ERROR_PERCENT:-30}
export CUTS_ROUNDS=${CUTS_ROUNDS:-20} CUTS_PER_ROUND=${CUTS_PER_ROUND:-15}
export CONFLICT_OBJECTS=${CONFLICT_OBJECTS:-64} CONFLICT_WRITERS=${CONFLICT_WRITERS:-8}
export CRD_OBJECTS=${CRD_OBJECTS:-100} RESTART_OBJECTS=${RESTART_OBJECTS:-20}

cargo test --features e2e --test e2e --no-run
failed=()
# case NAME TEST [VAR=VALUE ...]: one run of one test, alone.
case_() {
  local name=$1 test=$2
  shift 2
  echo "[reliability] $name ($*)" >&2
  if ! env "$@" cargo test --quiet --features e2e --test e2e -- --exact "$test" --nocapture --test-threads=1; then
    failed+=("$name $*")
  fi
}

case_ "SIGKILL storm" chaos::a_sigkill_storm_leaves_exactly_one_source_per_object \
  CHAOS_SEED="${CHAOS_SEED:-7}"
case_ "SIGKILL storm over runs" runs::a_sigkill_storm_over_runs_leaves_exactly_one_invocation_per_run \
  RUNS_CHAOS_SEED="${RUNS_CHAOS_SEED:-5}"
for seed in $(seq 1 "$runs"); do
  case_ "Chroma fault storm" \
    chroma_faults::a_storm_of_chroma_faults_leaves_exactly_one_source_per_object STORM_SEED="$seed"
  case_ "apiserver connection cuts" \
    kube_faults::cut_apiserver_connections_lose_nothing_and_duplicate_nothing CUTS_SEED="$seed"
  case_ "409 conflicts" \
    kube_faults::conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object RUN="$seed"
  case_ "CRD removed and re-installed" \
    kube_faults::the_crd_removed_and_reinstalled_under_a_running_operator RUN="$seed"
  case_ "apiserver and etcd restarts" \
    kube_faults::the_operator_rides_out_apiserver_and_etcd_restarts RUN="$seed"
  case_ "silent path to the apiserver" \
    leader::a_leader_behind_a_silent_path_stops_before_the_standby_takes_over RUN="$seed"
  case_ "silent path to Chroma mid-create" \
    chroma_faults::a_silent_path_to_chroma_mid_create_times_out_and_duplicates_nothing RUN="$seed"
  case_ "object let go mid-create (kubernetes#77988)" \
    orphans::an_object_let_go_with_an_unrecorded_create_has_its_source_deleted RUN="$seed"
done

if ((${#failed[@]})); then
  printf '[reliability] FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
