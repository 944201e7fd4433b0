//! What `kubectl get` shows, read back from the real apiserver: both kinds' Ready and Reason
//! columns, the `-o wide` ones, and the `chromasync` category that lists every kind at once.

use crate::harness::*;
use crate::support::control_plane::kubectl;
use chroma_sync_operator::crd::run::SyncRun;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

/// The header and the row of `name` in `kubectl get` output.
fn row<'a>(table: &'a str, name: &str) -> (&'a str, &'a str) {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n.ends_with(name))
        })
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"));
    (header, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_ready_reason_wide_columns_and_one_category_for_both_kinds() {
    let env = Env::start("kubectl").await;
    // A run whose source does not exist yet: it waits, and says so in its columns.
    let run: SyncRun = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "waiting"},
        "spec": {"sourceRef": {"name": "later"}, "targetCollectionName": "c",
                 "ref": {"branch": "main"}},
    }))
    .unwrap();
    let runs: Api<SyncRun> = Api::namespaced(env.client.clone(), &env.ns);
    runs.create(&PostParams::default(), &run).await.unwrap();
    env.create("docs", github("acme/kubectl")).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    let what = "the run to wait for its source";
    wait_for(what, SOON, || async {
        let run = runs.get("waiting").await.ok()?;
        let ready = run
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.reason == "WaitingForSource").then_some(())
    })
    .await;

    let (ok, sources) = kubectl(&["get", "syncsources", "-n", &env.ns]);
    assert!(ok, "{sources}");
    let (header, docs) = row(&sources, "docs");
    for column in ["SOURCE ID", "READY", "REASON", "AGE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        !header.contains("MESSAGE"),
        "wide columns only with -o wide: {header}"
    );
    assert!(
        docs.contains("True") && docs.contains("SourceReady"),
        "{docs}"
    );

    let (ok, wide) = kubectl(&["get", "syncsources", "-n", &env.ns, "-o", "wide"]);
    assert!(ok, "{wide}");
    let (header, docs) = row(&wide, "docs");
    for column in ["DATABASE", "LAST SYNC", "MESSAGE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        docs.contains("matches the spec"),
        "the Ready message: {docs}"
    );

    let (ok, runs_table) = kubectl(&["get", "syncruns", "-n", &env.ns, "-o", "wide"]);
    assert!(ok, "{runs_table}");
    let (header, waiting) = row(&runs_table, "waiting");
    for column in [
        "SOURCE",
        "PHASE",
        "READY",
        "REASON",
        "INVOCATION",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        waiting.contains("False") && waiting.contains("WaitingForSource"),
        "{waiting}"
    );
    assert!(
        waiting.contains("SyncSource later does not exist"),
        "{waiting}"
    );

    // One category for every kind of the project.
    let (ok, all) = kubectl(&["get", "chromasync", "-n", &env.ns]);
    assert!(ok, "{all}");
    assert!(all.contains("syncsource.chromasync.dev/docs"), "{all}");
    assert!(all.contains("syncrun.chromasync.dev/waiting"), "{all}");
}
