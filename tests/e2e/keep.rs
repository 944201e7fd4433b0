//! `spec.sync.keepCollections` on the real control plane against the stand-in (which serves the
//! Chroma API's identity and collection delete too): four runs with `keepCollections: 2` leave
//! exactly the newest two collections, with exactly two deletes, the published one kept; under
//! `deletionPolicy: Retain` nothing is ever deleted.

use crate::harness::*;
use chroma_sync_operator::crd::LastSync;
use chroma_sync_operator::crd::run::RunPhase;
use chroma_sync_standin::RunPlan;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(60);

/// `status.lastSync`, once it is a completed run other than those in `not`.
async fn wait_completed(env: &Env, not: &[LastSync]) -> LastSync {
    wait_for("a new sync run to complete", RUN, || async {
        let last = *env.get("docs").await.status?.last_sync?;
        let new = not.iter().all(|n| n.name != last.name);
        (new && last.phase == Some(RunPhase::Complete)).then_some(last)
    })
    .await
}

/// Starts `spec` and three more runs (a new commit each), waiting for each to complete; the
/// runs, oldest first.
async fn four_runs(env: &Env, spec: serde_json::Value) -> Vec<LastSync> {
    env.standin.set_run_plan(RunPlan {
        pending_ms: 200,
        processing_ms: 500,
        fail_with: None,
    });
    env.create("docs", spec).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    let mut done: Vec<LastSync> = Vec::new();
    for sha in [None, Some("0a1b2c3d"), Some("4e5f6a7b"), Some("8c9d0e1f")] {
        if let Some(sha) = sha {
            env.merge_spec(
                "docs",
                json!({"sync": {"ref": {"branch": null, "sha": sha}}}),
            )
            .await;
        }
        let run = wait_completed(env, &done).await;
        done.push(run);
    }
    done
}

fn collection(run: &LastSync) -> String {
    run.collection_name.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_collections_leaves_the_newest_completed_and_deletes_the_rest_once() {
    let env = Env::start("keep").await;
    let mut spec = github("acme/keep");
    spec["sync"] = json!({"targetCollectionName": "docs", "ref": {"branch": "main"},
                          "keepCollections": 2,
                          "publishTo": {"configMapName": "docs-current"}});
    let runs = four_runs(&env, spec).await;
    let newest: Vec<String> = runs[2..].iter().map(collection).collect();
    let remaining = wait_for("two collections to remain", SOON, || async {
        let left = env.standin.collections("docs");
        (left.len() == 2).then_some(left)
    })
    .await;
    let mut expected = newest.clone();
    expected.sort();
    assert_eq!(remaining, expected, "the newest two remain");
    let published: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let current = wait_for("the newest run to be published", SOON, || async {
        let data = published.get_opt("docs-current").await.ok()??.data?;
        (data.get("collection") == Some(&newest[1])).then_some(data["collection"].clone())
    })
    .await;
    assert!(remaining.contains(&current), "the published one remains");
    let state = wait_for("the status to count two pruned", SOON, || async {
        let state = env.get("docs").await.status?.sync_state?;
        (state.pruned_collections == Some(2)).then_some(state)
    })
    .await;
    let record = state.collections.unwrap_or_default();
    let deleted: Vec<&str> = record
        .iter()
        .filter(|c| c.deleted)
        .map(|c| c.name.as_str())
        .collect();
    let oldest: Vec<String> = runs[..2].iter().map(collection).collect();
    assert!(
        deleted.iter().all(|d| oldest.iter().any(|o| o == d)),
        "only the oldest two are recorded as deleted: {deleted:?}"
    );
    wait_for("a CollectionsPruned Event", SOON, || async {
        let events = env.events("docs").await;
        events
            .iter()
            .any(|(r, n)| r == "CollectionsPruned" && n.contains(&oldest[0]))
            .then_some(())
    })
    .await;
    // At rest a while: no more deletes, none repeated (a 404 would show a repeat).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let deletes = env.standin.calls("delete_collection", "*");
    let identities = env.standin.calls("get_identity", "*");
    println!(
        "keepCollections=2 after 4 runs: delete calls {deletes} (200: {}, 404: {}), identity calls {identities}, remaining {:?}",
        env.standin.calls("delete_collection", "200"),
        env.standin.calls("delete_collection", "404"),
        env.standin.collections("docs")
    );
    assert_eq!(deletes, 2, "exactly two delete calls");
    assert_eq!(env.standin.calls("delete_collection", "200"), 2);
    assert_eq!(env.standin.collections("docs"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_collections_deletes_nothing_under_retain() {
    let env = Env::start("keep-retain").await;
    let mut spec = github("acme/keep-retain");
    spec["deletionPolicy"] = json!("Retain");
    spec["sync"] = json!({"targetCollectionName": "docs", "ref": {"branch": "main"},
                          "keepCollections": 1});
    let runs = four_runs(&env, spec).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let left = env.standin.collections("docs");
    println!(
        "Retain, keepCollections=1 after 4 runs: delete calls {}, remaining {left:?}",
        env.standin.calls("delete_collection", "*")
    );
    assert_eq!(env.standin.calls("delete_collection", "*"), 0, "no deletes");
    assert_eq!(left.len(), runs.len(), "every collection kept: {left:?}");
    let state = env.get("docs").await.status.unwrap().sync_state.unwrap();
    assert_eq!(state.pruned_collections, None);
}
