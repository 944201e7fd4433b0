//! An object the apiserver lets go with the operator's finalizer still on
//! (kubernetes/kubernetes#77988) while its create is unrecorded: the operator was killed after
//! the create and before the status write. Its source must be found by the create-pending mark
//! and the natural key, and deleted.
//!
//! The bypass itself is a race inside the apiserver; the test makes it happen on purpose by
//! deleting the object's key in etcd, which the apiserver's watch reports exactly as it reports
//! the race: a Delete whose last state still has the finalizer.

use crate::harness::*;
use chroma_sync_operator::crd::{CREATE_PENDING_ANNOTATION, FINALIZER};
use chroma_sync_standin::Faults;
use kube::ResourceExt;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_let_go_with_an_unrecorded_create_has_its_source_deleted() {
    let mut env = Env::start("orphan").await;
    let mut report = Report::new(
        "object let go mid-create (kubernetes#77988)",
        None,
        &env.standin,
    );
    report.set("objects", 2);
    report.set("kills", 1);
    report.set(
        "invariant",
        "the unrecorded source is deleted, the other kept",
    );
    env.create("kept", github("acme/orphan-kept")).await;
    let kept = env.wait_reason("kept", "SourceReady", SOON).await;
    let kept_id = kept.status.unwrap().source_id.unwrap();

    // The create commits in Chroma, and the operator is killed before the answer comes.
    env.standin.set_faults(Faults {
        endpoints: vec!["create_source".into()],
        create_commit_delay_ms: 60_000,
        ..Default::default()
    });
    env.create("doomed", github("acme/orphan-doomed")).await;
    wait_for("the create to commit", SOON, || async {
        (env.source_ids().len() == 2).then_some(())
    })
    .await;
    env.kill_operator();
    let doomed = env.get("doomed").await;
    assert!(doomed.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert!(doomed.finalizers().iter().any(|f| f == FINALIZER));
    assert_eq!(doomed.status.and_then(|s| s.source_id), None);

    // The next operator cannot recover it yet (every lookup fails), so the create stays
    // unrecorded while the object is let go.
    env.standin.set_faults(Faults {
        endpoints: vec!["list_sources".into()],
        error_rate: 1.0,
        ..Default::default()
    });
    env.start_operator();
    env.wait_reason("doomed", "ServerError", SOON).await;
    etcd_delete(&format!(
        "/registry/chromasync.dev/syncsources/{}/doomed",
        env.ns
    ))
    .await;
    env.standin.set_faults(Faults::default());
    let let_go = std::time::Instant::now();

    wait_for("the unrecorded source to be deleted", SOON, || async {
        (env.source_ids() == [kept_id.clone()]).then_some(())
    })
    .await;
    report.set("converge_secs", let_go.elapsed().as_secs_f64());
    assert_eq!(
        env.standin.calls("create_source", "*"),
        2,
        "no second create"
    );
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
    assert!(env.api().get_opt("doomed").await.unwrap().is_none());
    assert_eq!(
        env.get("kept").await.status.unwrap().source_id,
        Some(kept_id),
        "the other object's source is untouched"
    );
    report.pass();
}

/// Deletes one key from the test control plane's etcd through its JSON gateway (the kubeconfig's
/// directory holds the control plane's ports).
async fn etcd_delete(key: &str) {
    use base64::Engine;
    let state = std::fs::read_to_string(kubeconfig_path().with_file_name("state.env"))
        .expect("the control plane's state.env");
    let port = state
        .lines()
        .find_map(|l| l.strip_prefix("etcd_port="))
        .expect("etcd_port in state.env");
    let b64 = base64::engine::general_purpose::STANDARD;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v3/kv/deleterange"))
        .json(&serde_json::json!({ "key": b64.encode(key) }))
        .send()
        .await
        .expect("etcd answers")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(answer["deleted"], "1", "etcd deleted {key}: {answer}");
}
