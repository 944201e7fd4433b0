//! Faults on the Kubernetes side, on the real apiserver: broken connections (watch streams and
//! writes in flight), 409 Conflicts from a stale cache, the CRD removed and re-installed, and the
//! apiserver and etcd restarted.
//! Each test checks the end state and the cost (Chroma calls, from the stand-in's counters) and
//! that the operator recovered without a restart of its own.
//!
//! `make test` runs them small; `make reliability` scales them up (CUTS_ROUNDS,
//! CUTS_PER_ROUND, CUTS_SEED; CONFLICT_OBJECTS, CONFLICT_WRITERS; CRD_OBJECTS; RESTART_OBJECTS).

use crate::harness::*;
use crate::proxy::{Proxy, server_addr};
use chroma_sync_operator::crd::SyncSource;
use chroma_sync_standin::Faults;
use futures::future::join_all;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lines of the operator's log that contain `needle`.
fn log_lines(env: &Env, needle: &str) -> usize {
    env.operator_log()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

async fn wait_ready_probe(env: &Env) -> String {
    let base = env.metrics_url().await;
    wait_for("/readyz to answer 200", SOON, || async {
        (readyz(&base).await == Some(200)).then_some(())
    })
    .await;
    base
}

async fn readyz(base: &str) -> Option<u16> {
    let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
    Some(r.status().as_u16())
}

fn tmp_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The operator talks to the apiserver through a proxy that resets every connection (watch
/// streams and requests in flight) six times (CUTS_ROUNDS) while objects are created, six per
/// round (CUTS_PER_ROUND), and some deleted. Nothing is
/// lost and nothing is done twice: one source per live object, none for deleted ones, one
/// create call per object, and the operator never restarts. Then: how soon an object created
/// right after a cut becomes Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_apiserver_connections_lose_nothing_and_duplicate_nothing() {
    chroma_sync_operator::chroma::install_crypto_provider();
    let kubeconfig = kubeconfig_path();
    let proxy = Proxy::start(server_addr(&kubeconfig)).await;
    let mut env = Env::without_operator("cuts").await;
    env.spread_over_two_connections().await;
    env.operator_kubeconfig = Some(proxy.kubeconfig(&kubeconfig, &tmp_dir()));
    env.start_operator();
    wait_ready_probe(&env).await;
    // A little Chroma latency keeps reconciles in flight when the cuts land.
    env.standin.set_faults(Faults {
        latency_ms: 20,
        ..Default::default()
    });

    let seed = setting("CUTS_SEED", 11);
    let rounds = setting("CUTS_ROUNDS", 6);
    let per_round = setting("CUTS_PER_ROUND", 6);
    let mut report = Report::new("apiserver connection cuts", Some(seed), &env.standin);
    report.set("cuts", rounds);
    report.set("connections", 2);
    report.set(
        "invariant",
        "one source per live object, none per deleted one, every create committed, no restart",
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut churn = Churn::default();
    let mut cut_sizes = Vec::new();
    let mut created = 0;
    for round in 0..rounds {
        let names: Vec<String> = (0..per_round)
            .map(|i| format!("k{round:02}-{i:03}"))
            .collect();
        created += names.len();
        // Over all rounds, delete about half of the objects: some before they are Ready.
        let p = 0.9 / rounds as f64;
        churn.round(&env, names, "cuts", p, &mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        // Cut once the operator has reconnected (its two watches at least), so that every cut
        // breaks watch streams, not just an idle moment.
        wait_for("the operator to reconnect", SOON, || async {
            (proxy.open() >= 2).then_some(())
        })
        .await;
        cut_sizes.push(proxy.cut_all());
    }
    let last_cut = Instant::now();
    env.standin.set_faults(Faults::default());
    report.set("objects", created + 3);
    report.set("deleted", churn.deleted.len());
    let timeout = Duration::from_secs(45 + created as u64 / 5);
    let recorded = settle(&env, &churn.live, &churn.deleted, timeout).await;
    let converged = last_cut.elapsed();
    report.set("converge_secs", converged.as_secs_f64());
    assert_one_source_each(&env, "cuts", &recorded, &churn.deleted);
    // Every cut found the operator's connections open (at least its two watches).
    assert!(cut_sizes.iter().all(|&n| n >= 2), "cuts: {cut_sizes:?}");

    let creates = env.standin.calls("create_source", "*");
    let committed = env.standin.created_total();
    // Creates go to Chroma, not through the proxy, and each is preceded by a guarded mark: a
    // mark whose answer was cut is found by the next reconcile (listing), never created again.
    assert_eq!(creates, committed, "every create call committed");
    assert!(
        creates as usize <= created,
        "{creates} create calls for {created} objects"
    );
    assert_eq!(
        env.standin.calls("delete_source", "204") as usize,
        creates as usize - churn.live.len(),
        "each created source of a deleted object deleted once"
    );

    // Reconnect latency: an object created right after a cut.
    let mut latencies = Vec::new();
    for i in 0..3 {
        let name = format!("after-cut-{i}");
        proxy.cut_all();
        let t = Instant::now();
        env.create(&name, github(&format!("cuts/{name}"))).await;
        env.wait_reason(&name, "SourceReady", SOON).await;
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        env.operator_running(),
        "the operator recovered without a restart of its own"
    );
    assert_eq!(
        env.standin.calls("create_source", "*"),
        creates + 3,
        "one create per new object"
    );
    let failed = log_lines(&env, "reconcile failed");
    let after_cut: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    report.set("ready_after_cut_secs", &after_cut);
    report.set("failed_reconciles", failed);
    println!(
        "cuts | objects {created} | live {} | deleted {} | cuts {cut_sizes:?} connections | \
         create calls {creates} | list calls {} | delete calls {} | connections accepted {} | \
         failed reconciles {failed} | converged {:.1} s after the last cut | \
         create -> Ready after a cut: {:?}",
        churn.live.len(),
        churn.deleted.len(),
        env.standin.calls("list_sources", "*"),
        env.standin.calls("delete_source", "*"),
        proxy.accepted(),
        converged.as_secs_f64(),
        latencies
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
    );
    for l in &latencies {
        assert!(*l < Duration::from_secs(10), "Ready {l:?} after a cut");
    }
    report.pass();
}

/// Another client rewrites a label on every object in a tight loop while the operator creates
/// and deletes, so the operator's resourceVersion-guarded writes (the create-pending mark, the
/// finalizer's removal) meet real 409 Conflicts. The conflicts are counted in the apiserver's
/// audit log; the operator still makes exactly one source per object, one create call each,
/// and keeps the other client's labels. Sizes: CONFLICT_OBJECTS (16), CONFLICT_WRITERS (4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object() {
    let env = Env::start("conflicts").await;
    wait_ready_probe(&env).await;
    let objects = setting("CONFLICT_OBJECTS", 16) as usize;
    let writer_count = setting("CONFLICT_WRITERS", 4) as usize;
    let mut report = Report::new("409 conflicts (busy writer)", None, &env.standin);
    report.set("objects", objects);
    report.set("deleted", objects / 2);
    report.set("writers", writer_count);
    report.set(
        "invariant",
        "one source per live object, one POST per object, one DELETE per deleted one, labels kept",
    );
    let names: Vec<String> = (0..objects).map(|i| format!("x{i:03}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    // Writers, each bumping a label on every other object in turn, as fast as the apiserver
    // answers: each object changes every few tens of milliseconds.
    let writers: Vec<_> = (0..writer_count)
        .map(|w| {
            let (api, names) = (env.api(), names.clone());
            let (stop, ticks) = (stop.clone(), ticks.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    for n in names.iter().skip(w).step_by(2) {
                        i += 1;
                        let patch =
                            json!({"metadata": {"labels": {format!("writer-{w}"): i.to_string()}}});
                        if api
                            .patch(n, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .is_ok()
                        {
                            ticks.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    let started = Instant::now();
    env.create_github(&names, "conflicts").await;
    let live: BTreeSet<String> = names.iter().cloned().collect();
    let timeout = Duration::from_secs(45 + objects as u64 / 2);
    let recorded = settle(&env, &live, &BTreeSet::new(), timeout).await;
    let to_ready = started.elapsed();
    report.set("ready_secs", to_ready.as_secs_f64());
    let conflicts_creating = conflicts(&env).await;

    // Deletions under the same load: the finalizer's removal is guarded too.
    let doomed: BTreeSet<String> = names.iter().take(objects / 2).cloned().collect();
    let started = Instant::now();
    join_all(doomed.iter().map(|n| env.delete(n))).await;
    let live: BTreeSet<String> = live.difference(&doomed).cloned().collect();
    let recorded_after = settle(&env, &live, &doomed, timeout).await;
    let to_gone = started.elapsed();
    report.set("gone_secs", to_gone.as_secs_f64());
    // The load lasts until here: the time to converge is under it, not after it.
    report.set("converge_secs", to_ready.max(to_gone).as_secs_f64());
    stop.store(true, Ordering::SeqCst);
    join_all(writers).await;

    let all_conflicts = conflicts(&env).await;
    report.set("conflicts", all_conflicts);
    let creates = env.standin.calls("create_source", "*");
    println!(
        "conflicts | objects {} | other writer's updates {} | 409s on operator writes: {} while \
         creating, {} in all | create calls {creates} | list calls {} | delete calls {} \
         (204: {}) | failed reconciles {} | all Ready in {:.1} s | deleted in {:.1} s",
        names.len(),
        ticks.load(Ordering::SeqCst),
        conflicts_creating,
        all_conflicts,
        env.standin.calls("list_sources", "*"),
        env.standin.calls("delete_source", "*"),
        env.standin.calls("delete_source", "204"),
        log_lines(&env, "reconcile failed"),
        to_ready.as_secs_f64(),
        to_gone.as_secs_f64(),
    );
    assert!(all_conflicts > 0, "the load produced conflicts");
    assert_one_source_each(&env, "conflicts", &recorded_after, &doomed);
    for (name, id) in &recorded_after {
        assert_eq!(&recorded[name], id, "{name} kept its source");
    }
    assert_eq!(creates as usize, names.len(), "one create call per object");
    // A conflict on the finalizer's removal retries that write alone: no second DELETE.
    assert_eq!(
        env.standin.calls("delete_source", "*") as usize,
        doomed.len(),
        "exactly one delete call per deleted object"
    );
    assert_eq!(
        env.standin.calls("delete_source", "204") as usize,
        doomed.len(),
        "one successful delete per deleted object"
    );
    // The operator's merge patches never drop what another client wrote.
    for name in &live {
        let o = env.get(name).await;
        assert!(
            o.labels().keys().any(|k| k.starts_with("writer-")),
            "{name} kept the other writer's labels: {:?}",
            o.labels()
        );
    }
    report.pass();
}

/// 409 answers to writes on SyncSources in the test's namespace, from the audit log. Only the
/// operator makes guarded writes here (the test's own patches carry no resourceVersion).
async fn conflicts(env: &Env) -> usize {
    env.audit("syncsources")
        .await
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 409)
        .count()
}

/// The CRD is deleted while the operator runs (on a control plane of the test's own: it
/// affects every namespace). Kubernetes deletes every SyncSource; the operator lets each go
/// without deleting its source (deleting a CRD never deletes data: `crd_deletion.rs`), whatever
/// its `deletionPolicy`, then the CRD goes. While it is gone the operator stays up and does not
/// spin; once re-installed, new objects become Ready without a restart. Size: CRD_OBJECTS (4)
/// objects, plus one with `deletionPolicy: Retain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_removed_and_reinstalled_under_a_running_operator() {
    let cluster = PrivateCluster::start("crd-gone");
    let mut env = Env::on_private_cluster("crdgone", &cluster).await;
    let objects = setting("CRD_OBJECTS", 4) as usize;
    let mut report = Report::new("CRD removed and re-installed", None, &env.standin);
    report.set("objects", objects + 1 + 3);
    report.set("deleted", objects + 1);
    report.set(
        "invariant",
        "every source kept, no DELETE; operator up, not spinning; new objects Ready",
    );
    env.start_operator();
    let base = wait_ready_probe(&env).await;
    let names: Vec<String> = (0..objects).map(|i| format!("before-{i:03}")).collect();
    env.create_github(&names, "crd").await;
    let mut retained = github("crd/retained");
    retained["deletionPolicy"] = json!("Retain");
    env.create("retained", retained).await;
    let timeout = SOON + Duration::from_millis(200 * objects as u64);
    for n in names.iter().chain([&"retained".to_owned()]) {
        env.wait_reason(n, "SourceReady", timeout).await;
    }
    assert_eq!(env.source_ids().len(), objects + 1);

    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let started = Instant::now();
    crds.delete("syncsources.chromasync.dev", &DeleteParams::default())
        .await
        .expect("delete the CRD");
    wait_for("the CRD to be gone", timeout, || async {
        matches!(crds.get_opt("syncsources.chromasync.dev").await, Ok(None)).then_some(())
    })
    .await;
    let crd_gone = started.elapsed();
    report.set("crd_gone_secs", crd_gone.as_secs_f64());
    // The operator let the objects go with their CRD: every source stays.
    let remaining: Vec<Value> = env
        .standin
        .sources(DATABASE)
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(remaining.len(), objects + 1, "every source is left");
    assert_eq!(env.standin.calls("delete_source", "*"), 0, "no DELETE");

    // The gap: no CRD. The operator must neither exit nor spin.
    let log_before = env.operator_log().lines().count();
    let lists_before = operator_lists(&env).await;
    let gap = Duration::from_secs(6);
    let mut probes = BTreeMap::new();
    let gap_start = Instant::now();
    while gap_start.elapsed() < gap {
        *probes.entry(readyz(&base).await).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gap_lines = env.operator_log().lines().count() - log_before;
    let gap_lists = operator_lists(&env).await - lists_before;
    report.set("gap_list_watch_requests", gap_lists);
    assert!(
        env.operator_running(),
        "the operator survives the CRD's absence"
    );

    let reinstalled = Instant::now();
    apply_crd(&env.client, MANAGER).await;
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    for n in &after {
        env.create(n, github(&format!("crd/{n}"))).await;
    }
    for n in &after {
        env.wait_reason(n, "SourceReady", Duration::from_secs(45))
            .await;
    }
    let back = reinstalled.elapsed();
    // The fault ends with the re-install: from there to the new objects Ready.
    report.set("converge_secs", back.as_secs_f64());
    let new_object: SyncSource = env.get("after-0").await;
    assert!(
        new_object
            .finalizers()
            .iter()
            .any(|f| f.contains("chromasync"))
    );
    println!(
        "crd | deleted with {} Ready objects: CRD gone in {:.1} s, sources deleted 0, \
         kept {} \
         | gap {:.0} s: {gap_lines} log lines, {gap_lists} list/watch requests, /readyz {probes:?} \
         | re-installed -> 3 new objects Ready in {:.1} s | create calls {}",
        objects + 1,
        crd_gone.as_secs_f64(),
        objects + 1,
        gap.as_secs_f64(),
        back.as_secs_f64(),
        env.standin.calls("create_source", "*"),
    );
    assert!(env.operator_running(), "no restart needed");
    assert_eq!(
        env.standin.calls("create_source", "*") as usize,
        objects + 1 + 3,
        "one create per object"
    );
    assert_eq!(
        env.source_ids().len(),
        objects + 1 + 3,
        "the kept ones + three new"
    );
    // The watches back off while the resource is missing: a handful of attempts, not a loop.
    assert!(
        gap_lists <= 20,
        "{gap_lists} list/watch requests in {gap:?}"
    );
    assert!(gap_lines <= 60, "{gap_lines} log lines in {gap:?}");
    report.pass();
    drop(env);
}

/// List and watch requests on SyncSources in the namespace (the operator's, while the CRD is
/// gone: the test makes none then).
async fn operator_lists(env: &Env) -> usize {
    env.audit("syncsources")
        .await
        .iter()
        .filter(|e| matches!(e["verb"].as_str(), Some("list" | "watch")))
        .count()
}

/// On a control plane of its own: the apiserver, then etcd, restarted under a running operator;
/// RESTART_OBJECTS (1) objects are created after each restart and must become Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_apiserver_and_etcd_restarts() {
    let cluster = PrivateCluster::start("restarts");
    let mut env = Env::on_private_cluster("restarts", &cluster).await;
    // What rides out the outage here is the watches and reconciles. A Lease that cannot be
    // renewed for the renew deadline (10 s; an etcd restart can take that long) ends leadership
    // and the process, by design (the pod restarts): the silent-path test covers that.
    env.leader_election = false;
    let per_restart = setting("RESTART_OBJECTS", 1) as usize;
    let mut report = Report::new("apiserver + etcd restarts", None, &env.standin);
    report.set("objects", 1 + 2 * per_restart);
    report.set("deleted", 1);
    report.set(
        "invariant",
        "one source per object, objects made after each restart Ready, no operator restart",
    );
    env.start_operator();
    env.create("before", github("acme/before")).await;
    env.wait_reason("before", "SourceReady", SOON).await;

    // After each restart (the component is serving again when `restart` returns): new objects,
    // and how long until they are all Ready.
    let mut converge = Vec::new();
    for component in ["kube-apiserver", "etcd"] {
        cluster.restart(component);
        let back = Instant::now();
        let names: Vec<String> = (0..per_restart)
            .map(|i| format!("after-{component}-{i:03}"))
            .collect();
        env.create_github(&names, "acme").await;
        for n in &names {
            env.wait_reason(n, "SourceReady", Duration::from_secs(60))
                .await;
        }
        converge.push(back.elapsed().as_secs_f64());
        report.set(
            "converge_secs",
            converge.iter().copied().fold(0.0, f64::max),
        );
    }
    report.set("ready_after_restart_secs", &converge);
    env.delete("before").await;
    env.wait_gone("before", Duration::from_secs(60)).await;

    assert!(
        env.operator_running(),
        "the operator recovered without a restart of its own"
    );
    assert_eq!(env.source_ids().len(), 2 * per_restart);
    assert_eq!(
        env.standin.calls("create_source", "*") as usize,
        1 + 2 * per_restart,
        "no duplicate work"
    );
    report.pass();
    drop(env);
}
