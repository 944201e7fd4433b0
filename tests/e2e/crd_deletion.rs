//! Deleting the CRDs never deletes data: with the operator running, the apiserver's deletion of
//! every SyncSource and SyncRun (which a CRD's deletion makes) deletes no source and cancels no
//! invocation in Chroma Sync; each object is let go with an Event and a log line that say so.
//! On a control plane of the test's own: deleting a CRD affects every namespace.

use crate::harness::*;
use chroma_sync_operator::crd::run::SyncRun;
use chroma_sync_standin::RunPlan;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SOURCES_CRD: &str = "syncsources.chromasync.dev";
const RUNS_CRD: &str = "syncruns.chromasync.dev";
const REASON: &str = "RetainedOnCrdDeletion";

fn runs(env: &Env) -> Api<SyncRun> {
    Api::namespaced(env.client.clone(), &env.ns)
}

async fn create_run(env: &Env, name: &str, source: &str, collection: &str) {
    let run = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": name},
        "spec": {"sourceRef": {"name": source}, "targetCollectionName": collection,
                 "ref": {"branch": "main"}},
    }))
    .unwrap();
    runs(env)
        .create(&PostParams::default(), &run)
        .await
        .expect("create the SyncRun");
}

/// Waits until the run's Ready condition has `reason`; its invocation id.
async fn wait_run(env: &Env, name: &str, reason: &str) -> String {
    let what = format!("SyncRun {name} to reach reason {reason}");
    wait_for(&what, Duration::from_secs(60), || async {
        let run = runs(env).get(name).await.ok()?;
        let status = run.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == reason).then_some(())?;
        status.invocation_id
    })
    .await
}

/// Events with `reason` in the test's namespace, as (object, note).
async fn events_with(env: &Env, reason: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let list = api.list(&Default::default()).await.expect("list Events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            let object = e.involved_object.name.unwrap_or_default();
            (object, e.message.unwrap_or_default())
        })
        .collect()
}

/// The operator's GETs of the CRDs, from the audit log (it names itself in its User-Agent).
async fn operator_crd_reads(env: &Env) -> usize {
    // Entries reach the log in batches; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.audit_log
        .entries()
        .iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "customresourcedefinitions"
                && e["verb"] == "get"
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("chroma-sync-operator"))
        })
        .count()
}

/// CRD_DELETION_OBJECTS (50) SyncSources made Ready through the operator, one run Complete
/// and three Pending (a pending run's deletion cancels its invocation), and one SyncSource
/// deleted normally first (its source is deleted: the normal path). Then both CRDs are deleted
/// while the operator runs: the apiserver deletes every object, the operator lets each go, the
/// CRDs are gone, and Chroma Sync saw no DELETE and no cancel: every source is still there and
/// every pending invocation still pending. Each object has a `RetainedOnCrdDeletion` Event
/// naming its source or invocation, and the log names each source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_crds_deletes_no_source_and_cancels_no_run() {
    let cluster = PrivateCluster::start("crd-deletion");
    let mut env = Env::on_private_cluster("crddel", &cluster).await;
    let objects = setting("CRD_DELETION_OBJECTS", 50) as usize;
    env.start_operator();
    let names: Vec<String> = (0..objects).map(|i| format!("src-{i:03}")).collect();
    env.create_github(&names, "keep").await;
    env.create("plain", github("acme/plain")).await;
    let timeout = SOON + Duration::from_millis(200 * objects as u64);
    for n in names.iter().chain([&"plain".to_owned()]) {
        env.wait_reason(n, "SourceReady", timeout).await;
    }
    // Runs of the first source: one finished, three pending for the rest of the test.
    let mut invocations = Vec::new();
    env.standin.set_run_plan(RunPlan {
        pending_ms: 0,
        processing_ms: 10,
        fail_with: None,
    });
    create_run(&env, "run-done", &names[0], "done").await;
    invocations.push(wait_run(&env, "run-done", "Complete").await);
    env.standin.set_run_plan(RunPlan {
        pending_ms: 3_600_000,
        processing_ms: 3_600_000,
        fail_with: None,
    });
    let pending: Vec<String> = (0..3).map(|i| format!("run-pending-{i}")).collect();
    for (i, run) in pending.iter().enumerate() {
        create_run(&env, run, &names[0], &format!("pending-{i}")).await;
    }
    for run in &pending {
        invocations.push(wait_run(&env, run, "Pending").await);
    }

    // The normal path first: a SyncSource deleted while its CRD is fine deletes its source.
    let plain_id = env.get("plain").await.status.unwrap().source_id.unwrap();
    env.delete("plain").await;
    env.wait_gone("plain", SOON).await;
    assert!(
        !env.source_ids().contains(&plain_id),
        "its source is deleted"
    );
    assert_eq!(env.standin.calls("delete_source", "*"), 1);
    let ids: BTreeSet<String> = env.source_ids().into_iter().collect();
    assert_eq!(ids.len(), objects);
    // The plain deletion asked the CRD (its watch showed it fine, which may be stale): one GET.
    let reads_before = operator_crd_reads(&env).await;
    assert_eq!(reads_before, 1, "the plain deletion's read of its CRD");
    let first_source = env.get(&names[0]).await.status.unwrap().source_id.unwrap();

    // Both CRDs deleted while the operator runs.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let started = Instant::now();
    for crd in [SOURCES_CRD, RUNS_CRD] {
        crds.delete(crd, &DeleteParams::default())
            .await
            .expect("delete the CRD");
    }
    wait_for("both CRDs to be gone", timeout, || async {
        for crd in [SOURCES_CRD, RUNS_CRD] {
            crds.get_opt(crd).await.ok()?.is_none().then_some(())?;
        }
        Some(())
    })
    .await;
    let crds_gone = started.elapsed();

    // Nothing deleted, nothing cancelled.
    assert_eq!(
        env.standin.calls("delete_source", "*"),
        1,
        "no DELETE beyond the plain object's"
    );
    assert_eq!(env.standin.calls("cancel_invocation", "*"), 0, "no cancel");
    let kept: BTreeSet<String> = env.source_ids().into_iter().collect();
    assert_eq!(kept, ids, "every source is still in Chroma");
    let statuses: Vec<Value> = env
        .standin
        .invocations(&first_source)
        .into_iter()
        .filter(|j| invocations[1..].iter().any(|id| j["id"] == id.as_str()))
        .map(|j| j["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!("pending"); 3], "runs still pending");
    assert!(env.operator_running(), "the operator is up");

    // Said on every object, naming what stays, and in the log.
    let what = format!("{} RetainedOnCrdDeletion Events", objects + 4);
    let events = wait_for(&what, SOON, || async {
        let events = events_with(&env, REASON).await;
        (events.len() >= objects + 4).then_some(events)
    })
    .await;
    let about: BTreeSet<&str> = events.iter().map(|(o, _)| o.as_str()).collect();
    let expected: BTreeSet<&str> = names
        .iter()
        .chain(&pending)
        .map(String::as_str)
        .chain(["run-done"])
        .collect();
    assert_eq!(about, expected, "one Event per object");
    assert_eq!(events.len(), objects + 4, "one each");
    for id in ids.iter().chain(&invocations) {
        assert!(
            events.iter().any(|(_, note)| note.contains(id.as_str())),
            "an Event names {id}"
        );
    }
    let log = env.operator_log();
    let released: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("released the finalizer without calling Chroma Sync"))
        .collect();
    for id in &ids {
        assert!(
            released.iter().any(|l| l.contains(&format!("source {id}"))),
            "the log names source {id}"
        );
    }
    let reads = operator_crd_reads(&env).await - reads_before;
    println!(
        "crd deletion | {objects} Ready SyncSources, 4 SyncRuns (3 pending): both CRDs gone in \
         {:.1} s | Chroma calls after: DELETE {}, cancel {} | {} Events {REASON}, {} log lines | \
         operator's CRD GETs during the deletion {reads} (before it: {reads_before}) | \
         plain deletion: 1 DELETE",
        crds_gone.as_secs_f64(),
        env.standin.calls("delete_source", "*") - 1,
        env.standin.calls("cancel_invocation", "*"),
        events.len(),
        released.len(),
    );
    // The watch of the CRDs answers most deletions, and the GETs are shared: far fewer than one
    // per object.
    assert!(
        reads <= (objects + 4) / 4,
        "{reads} CRD GETs for {} deletions",
        objects + 4
    );
    drop(env);
}

/// The CRD is deleted while no operator runs (a GitOps prune that also restarts or removes it):
/// the objects wait, Terminating, on their finalizers, and so does the CRD. The operator started
/// afterwards lets them go without deleting a source, though it may handle their deletions
/// before its watch of the CRD has listed it (then a read of the CRD decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_deleted_while_no_operator_runs_deletes_no_source_once_one_starts() {
    let cluster = PrivateCluster::start("crd-deletion-later");
    let mut env = Env::on_private_cluster("crddellater", &cluster).await;
    let objects = 10;
    env.start_operator();
    let names: Vec<String> = (0..objects).map(|i| format!("src-{i:03}")).collect();
    env.create_github(&names, "later").await;
    for n in &names {
        env.wait_reason(n, "SourceReady", SOON).await;
    }
    let ids: BTreeSet<String> = env.source_ids().into_iter().collect();
    assert_eq!(ids.len(), objects);
    env.kill_operator();

    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.delete(SOURCES_CRD, &DeleteParams::default())
        .await
        .expect("delete the CRD");
    // The apiserver deletes the objects; their finalizers hold them, and they hold the CRD.
    wait_for("every object Terminating", SOON, || async {
        let list = env.api().list(&Default::default()).await.ok()?;
        let terminating = list
            .items
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_some())
            .count();
        (terminating == objects).then_some(())
    })
    .await;
    let crd = crds.get(SOURCES_CRD).await.expect("the CRD waits");
    assert!(crd.metadata.deletion_timestamp.is_some());

    let reads_before = operator_crd_reads(&env).await;
    let started = Instant::now();
    env.start_operator();
    wait_for("the CRD to be gone", SOON, || async {
        crds.get_opt(SOURCES_CRD)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let gone = started.elapsed();
    assert_eq!(env.standin.calls("delete_source", "*"), 0, "no DELETE");
    let kept: BTreeSet<String> = env.source_ids().into_iter().collect();
    assert_eq!(kept, ids, "every source is still in Chroma");
    let events = wait_for("an Event per object", SOON, || async {
        let events = events_with(&env, REASON).await;
        (events.len() >= objects).then_some(events)
    })
    .await;
    assert_eq!(events.len(), objects);
    for id in &ids {
        assert!(events.iter().any(|(_, note)| note.contains(id.as_str())));
    }
    let reads = operator_crd_reads(&env).await - reads_before;
    println!(
        "crd deleted before the operator started | {objects} Terminating SyncSources let go, \
         CRD gone {:.1} s after the start | DELETE 0 | operator's CRD GETs {reads}",
        gone.as_secs_f64()
    );
    assert!(reads <= objects, "{reads} CRD GETs for {objects} deletions");
    drop(env);
}
