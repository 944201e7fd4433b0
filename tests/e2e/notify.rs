//! `--events-addr` on the real control plane: a SyncRun that fails posts exactly one event in
//! Flux's format (the body notification-controller reads) to a receiver on loopback, and a
//! restart of the operator posts none again (the failed run is reconciled anew, and announces
//! nothing: only the status write that made it Failed does).

use crate::harness::*;
use chroma_sync_operator::crd::run::SyncRun;
use chroma_sync_standin::RunPlan;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

/// A receiver of events on loopback (notification-controller answers 202); what it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body.0);
                http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_posts_one_flux_event_also_across_a_restart() {
    let (address, got) = receiver().await;
    let mut env = Env::without_operator("notify").await;
    env.extra_args = vec!["--events-addr".into(), address];
    env.start_operator();
    env.standin.set_run_plan(RunPlan {
        pending_ms: 300,
        processing_ms: 700,
        fail_with: Some("the repository could not be cloned".into()),
    });
    env.create("docs", github("acme/notify")).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    let runs: Api<SyncRun> = Api::namespaced(env.client.clone(), &env.ns);
    let run = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "breaks",
                     "annotations": {"event.toolkit.fluxcd.io/team": "search"}},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs",
                 "ref": {"branch": "main"}},
    }))
    .unwrap();
    let created = runs.create(&PostParams::default(), &run).await.unwrap();
    let events = || got.lock().unwrap().clone();
    wait_for("an event at the receiver", SOON, || async {
        (!events().is_empty()).then_some(())
    })
    .await;
    let failed = runs.get("breaks").await.unwrap();
    let status = failed.status.clone().unwrap();
    let event = &events()[0];
    let involved = &event["involvedObject"];
    assert_eq!(involved["kind"], "SyncRun");
    assert_eq!(involved["apiVersion"], "chromasync.dev/v1alpha1");
    assert_eq!(involved["name"], "breaks");
    assert_eq!(involved["namespace"], env.ns.as_str());
    assert_eq!(involved["uid"].as_str(), created.metadata.uid.as_deref());
    assert!(involved["resourceVersion"].is_string(), "{event}");
    assert_eq!(event["severity"], "error");
    assert_eq!(event["reason"], "RunFailed");
    assert_eq!(event["reportingController"], "chroma-sync-operator");
    assert_eq!(event["reportingInstance"], "operator-0");
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("could not be cloned"), "{message}");
    let invocation = status.invocation_id.unwrap();
    assert_eq!(
        event["metadata"],
        json!({
            "chromasync.dev/source": "docs",
            "chromasync.dev/invocation": invocation,
            "event.toolkit.fluxcd.io/team": "search",
        })
    );
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        env.scrape_metrics()
            .await
            .contains("chroma_sync_operator_notifications_total{result=\"sent\"} 1")
    );

    // A restart reconciles the failed run again: it posts nothing more.
    env.kill_operator();
    env.start_operator();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        events().len(),
        1,
        "one event per failed run: {:?}",
        events()
    );
    let metrics = env.scrape_metrics().await; // the restarted process's
    assert!(
        metrics.contains("chroma_sync_operator_leader 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("notifications_total{result="),
        "{metrics}"
    );
    println!("a failed run: 1 event posted; 0 more after a restart");
}
