//! Upgrade without loss, on a control plane of the test's own (it changes the CRDs): the
//! previous release (tests/previous/release) installed by its chart, its binary making 500
//! SyncSources Ready and some SyncRuns Complete; then the README's upgrade steps as written
//! (CRDs, their adoption, `helm upgrade` of this chart) and this tree's binary; then
//! `helm rollback` and the previous binary again. At each step: no create, delete or
//! replacement at the stand-in, no new run or invocation, every object still Ready with the same
//! `status.sourceId`, every one reconciled within seconds, and the objects the other release
//! wrote read back through this tree's types.

use crate::harness::release::{
    CRDS, RELEASE, RELEASE_NS, helm_at, kubectl_at, previous_chart, previous_release, previous_tag,
    readme_block, run_readme_upgrade, tool,
};
use crate::harness::{Env, PrivateCluster, settle, wait_for};
use chroma_sync_operator::crd::run::{RunPhase, SyncRun};
use chroma_sync_standin::RunPlan;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SOURCES: usize = 500;
const RUNS: usize = 5;
/// Calls that change what Chroma holds or start work.
const WRITES: [&str; 4] = [
    "create_source",
    "delete_source",
    "create_invocation",
    "cancel_invocation",
];

/// What the objects say: SyncSource name -> source ID (all Ready, observed), SyncRun name ->
/// (phase, invocation ID).
#[derive(Debug, PartialEq)]
struct State {
    sources: BTreeMap<String, String>,
    runs: BTreeMap<String, (Option<RunPhase>, Option<String>)>,
    uids: BTreeSet<String>,
}

async fn runs_complete(
    env: &Env,
    timeout: Duration,
) -> BTreeMap<String, (Option<RunPhase>, Option<String>)> {
    let runs: Api<SyncRun> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("every SyncRun to be Complete", timeout, || async {
        let list = runs.list(&Default::default()).await.ok()?;
        let mut done = BTreeMap::new();
        for run in list.items {
            let status = run.status.as_ref()?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            let current = status.observed_generation == run.metadata.generation;
            if !(current && ready.reason == "Complete") {
                return None;
            }
            done.insert(run.name_any(), (status.phase, status.invocation_id.clone()));
        }
        (done.len() == RUNS).then_some(done)
    })
    .await
}

async fn state(env: &Env, names: &BTreeSet<String>, timeout: Duration) -> State {
    let sources = settle(env, names, &BTreeSet::new(), timeout).await;
    let runs = runs_complete(env, timeout).await;
    let list = env.api().list(&Default::default()).await.unwrap();
    let uids = list.items.iter().map(|o| o.uid().unwrap()).collect();
    State {
        sources,
        runs,
        uids,
    }
}

/// `reconciles_total` of `kind` on the operator's /metrics.
fn reconciles(metrics: &str, kind: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("chroma_sync_operator_reconciles_total{")
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Starts `binary` and waits until it has reconciled every SyncSource and SyncRun once; how
/// long that took from the start.
async fn start_and_time_reconciles(env: &mut Env, binary: &Path) -> Duration {
    env.operator_binary = binary.to_path_buf();
    let started = Instant::now();
    env.start_operator();
    wait_for(
        "the operator to reconcile every object",
        Duration::from_secs(120),
        || async {
            // The log names the new process's address once it serves; until then the last one
            // logged is the stopped process's, which refuses.
            let url = format!("{}/metrics", env.metrics_url().await);
            let metrics = reqwest::get(url).await.ok()?.text().await.ok()?;
            (reconciles(&metrics, "SyncSource") >= SOURCES as u64
                && reconciles(&metrics, "SyncRun") >= RUNS as u64)
                .then_some(())
        },
    )
    .await;
    started.elapsed()
}

async fn stop(env: &mut Env) {
    env.sigterm_operator();
    let status = env.wait_operator_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "the operator exited with {status}");
}

/// Every stored object, read back through this tree's types (all must decode), and the CRDs'
/// storage versions.
async fn read_back(env: &Env, kubeconfig: &Path) {
    let sources = env
        .api()
        .list(&Default::default())
        .await
        .expect("decode every SyncSource");
    assert_eq!(sources.items.len(), SOURCES);
    for o in &sources.items {
        let status = o.status.as_ref().expect("a status");
        assert!(status.source_id.is_some(), "{}", o.name_any());
        assert!(!o.spec.database_name.is_empty());
    }
    let runs: Api<SyncRun> = Api::namespaced(env.client.clone(), &env.ns);
    let runs = runs
        .list(&Default::default())
        .await
        .expect("decode every SyncRun");
    assert_eq!(runs.items.len(), RUNS);
    for crd in CRDS {
        let (ok, out) = kubectl_at(
            kubeconfig,
            &["get", "crd", crd, "-o", "jsonpath={.status.storedVersions}"],
        );
        assert!(ok, "{out}");
        assert_eq!(out, r#"["v1alpha1"]"#, "{crd}");
    }
}

fn writes(env: &Env) -> BTreeMap<String, u64> {
    let all = env.standin.all_calls();
    WRITES
        .iter()
        .map(|e| ((*e).to_owned(), all.get(*e).copied().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_the_previous_release_and_roll_back_without_loss() {
    let tag = previous_tag();
    let previous = previous_release(false);
    let previous_binary = previous.join("chroma-sync-operator");
    let current_binary = PathBuf::from(crate::support::operator_binary!());
    let cluster = PrivateCluster::start("upgrade");
    let kubeconfig = cluster.kubeconfig();
    let mut figures: Vec<(String, Duration)> = Vec::new();

    // The previous release, installed by its chart (CRDs from its crds/ directory).
    let chart = previous_chart(&previous);
    let (ok, out) = helm_at(
        &kubeconfig,
        &[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "-n",
            RELEASE_NS,
            "--create-namespace",
        ],
    );
    assert!(ok, "helm install of {tag}: {out}");
    let mut env = Env::on_installed_cluster("upgrade", &cluster).await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 200,
        processing_ms: 500,
        fail_with: None,
    });
    env.operator_binary = previous_binary.clone();
    env.start_operator();
    let names: Vec<String> = (0..SOURCES).map(|i| format!("s{i:03}")).collect();
    let started = Instant::now();
    env.create_github(&names, "acme").await;
    let runs: Api<SyncRun> = Api::namespaced(env.client.clone(), &env.ns);
    for (i, source) in names.iter().take(RUNS).enumerate() {
        let run: SyncRun = serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
            "metadata": {"name": format!("run-{i}")},
            "spec": {"sourceRef": {"name": source}, "targetCollectionName": format!("c{i}"),
                     "ref": {"branch": "main"}},
        }))
        .unwrap();
        runs.create(&PostParams::default(), &run)
            .await
            .expect("create a SyncRun");
    }
    let live: BTreeSet<String> = names.iter().cloned().collect();
    let before = state(&env, &live, Duration::from_secs(300)).await;
    figures.push((
        format!("{tag}: {SOURCES} Ready, {RUNS} runs Complete"),
        started.elapsed(),
    ));
    assert_eq!(before.sources.len(), SOURCES);
    let ids: BTreeSet<&String> = before.sources.values().collect();
    assert_eq!(ids.len(), SOURCES, "one source each");
    assert_eq!(env.standin.sources(crate::harness::DATABASE).len(), SOURCES);
    stop(&mut env).await;
    let writes_before = writes(&env);
    assert_eq!(writes_before["create_source"], SOURCES as u64);
    assert_eq!(writes_before["create_invocation"], RUNS as u64);

    // The README's upgrade steps, as written, then this tree's binary.
    let block = readme_block("upgrade-from-0.1.0");
    assert!(block.contains("helm upgrade"), "{block}");
    let started = Instant::now();
    run_readme_upgrade(&kubeconfig);
    figures.push((
        "README upgrade steps (CRDs, adoption, helm upgrade)".to_string(),
        started.elapsed(),
    ));
    // What the previous release wrote reads through this tree's types.
    read_back(&env, &kubeconfig).await;
    let took = start_and_time_reconciles(&mut env, &current_binary).await;
    figures.push((
        "current binary: every object reconciled after its start".to_string(),
        took,
    ));
    let after = state(&env, &live, Duration::from_secs(60)).await;
    assert_eq!(after, before, "the objects after the upgrade");
    assert_eq!(
        writes(&env),
        writes_before,
        "calls that write, after the upgrade"
    );
    assert_eq!(env.standin.sources(crate::harness::DATABASE).len(), SOURCES);
    stop(&mut env).await;

    // Back: helm rollback as the README says, and the previous binary again.
    let (ok, out) = tool(
        &kubeconfig,
        "bash",
        &["-c", &format!("helm rollback {RELEASE} -n {RELEASE_NS}")],
        Path::new(crate::harness::release::ROOT),
    );
    assert!(ok, "{out}");
    let (ok, history) = helm_at(&kubeconfig, &["history", RELEASE, "-n", RELEASE_NS]);
    assert!(ok && history.contains("Rollback to 1"), "{history}");
    // What this tree's binary wrote reads through the types (the same in both releases).
    read_back(&env, &kubeconfig).await;
    let took = start_and_time_reconciles(&mut env, &previous_binary).await;
    figures.push((
        format!("{tag} binary after rollback: every object reconciled"),
        took,
    ));
    let back = state(&env, &live, Duration::from_secs(60)).await;
    assert_eq!(back, before, "the objects after the rollback");
    assert_eq!(
        writes(&env),
        writes_before,
        "calls that write, after the rollback"
    );
    stop(&mut env).await;
    let all = env.standin.all_calls();
    println!("stand-in calls over the whole test: {all:?}");
    for (what, took) in &figures {
        println!("[upgrade] {what}: {:.1} s", took.as_secs_f64());
    }
}
