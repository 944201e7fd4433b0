//! The SyncRun flows against a mock apiserver and the Chroma stand-in, as the SyncSource flows
//! are tested (`source/flows.rs`): each Kubernetes request asserted and answered in order, the
//! Chroma calls read from the stand-in's counters.

use super::{Next, Reason, Runs, reconcile};
use crate::chroma::Token;
use crate::chroma::wire::CreateSourcePayload;
use crate::crd::run::{RUN_FINALIZER, SyncRun};
use crate::kernel::driver::{self, Driver};
use crate::kernel::fixtures::{self, ADMIN, ApiServer, Chroma, DATABASE, NS, OBJECT_PATH};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

const RUN_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns/docs-run";
const RUN_STATUS_PATH: &str =
    "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns/docs-run/status";

fn runs(client: kube::Client, chroma: &Chroma) -> Arc<Driver<Runs>> {
    let ctx = fixtures::context(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();
    Driver::new(Runs::new(ctx))
}

/// A run of the `docs` SyncSource's GitHub source, as the apiserver would hand it over.
fn run() -> SyncRun {
    serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncRun",
        "metadata": {
            "name": "docs-run", "namespace": NS, "uid": "2f7e5a5c-0b7e-4a53-9d8e-5f0c1d2e3a4b",
            "resourceVersion": "1", "generation": 1,
        },
        "spec": {
            "sourceRef": {"name": "docs"},
            "targetCollectionName": "docs-main",
            "ref": {"branch": "main"},
        },
    }))
    .expect("a SyncRun")
}

/// The `docs` SyncSource, Ready with source `id` recorded.
fn ready_source(id: &str) -> Value {
    json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncSource",
        "metadata": {"name": "docs", "namespace": NS, "resourceVersion": "3", "generation": 1},
        "spec": {"databaseName": DATABASE, "github": {"repository": "acme/docs"}},
        "status": {
            "observedGeneration": 1,
            "sourceId": id,
            "conditions": [{"type": "Ready", "status": "True", "reason": "SourceReady",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1}],
        },
    })
}

/// A source in the stand-in for the runs to run on.
async fn a_source(chroma: &Chroma) -> String {
    let payload: CreateSourcePayload = serde_json::from_value(
        json!({"database_name": DATABASE, "github": {"repository": "acme/docs"}}),
    )
    .expect("a payload");
    let token = Token::new(ADMIN).expect("a token");
    chroma
        .client
        .create_source(&token, &payload)
        .await
        .expect("the source is created")
}

/// A 409 on the guarded mark means the cached run was stale: the driver reads it afresh and
/// decides again at once (as it does for SyncSources), and the run gets exactly one invocation.
/// The reconcile is counted under its kind.
#[tokio::test]
async fn a_conflict_on_the_mark_decides_again_on_a_fresh_read_and_creates_once() {
    let chroma = Chroma::start().await;
    let source_id = a_source(&chroma).await;
    let obj = run();
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = tokio::spawn(driver::reconcile(Arc::new(obj), runs.clone()));

    let source = ready_source(&source_id);
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .reply(StatusCode::OK, &source);
    api.expect(Method::PATCH, RUN_PATH)
        .await
        .refuse(409, "Conflict");
    assert_eq!(chroma.standin.calls("create_invocation", "*"), 0);
    api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!("5");

    api.get_at(RUN_PATH).await;
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .reply(StatusCode::OK, &source);
    let mark = api.patch(RUN_PATH).await;
    assert_eq!(
        mark["metadata"]["resourceVersion"], "5",
        "on the fresh read"
    );
    assert_eq!(mark["metadata"]["finalizers"], json!([RUN_FINALIZER]));
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["sourceId"], json!(source_id));
    let invocation = status["status"]["invocationId"].as_str().expect("an id");

    flow.await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert_eq!(chroma.standin.calls("create_invocation", "*"), 1);
    assert!(!invocation.is_empty());
    let metrics = runs.metrics.render();
    assert!(
        metrics.contains(r#"chroma_sync_operator_reconciles_total{kind="SyncRun"} 1"#),
        "{metrics}"
    );
    api.assert_idle();
}

/// Releasing the finalizer under a busy writer re-reads and writes again (as for SyncSources)
/// instead of failing the cleanup, which would run it again.
#[tokio::test]
async fn the_finalizer_is_released_under_a_busy_writer() {
    let chroma = Chroma::start().await;
    let mut obj = run();
    obj.metadata.finalizers = Some(vec![RUN_FINALIZER.into()]);
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    obj.status = Some(
        serde_json::from_value(json!({"invocationId": "inv-1", "phase": "Complete"}))
            .expect("a status"),
    );
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = {
        let (obj, runs) = (obj.clone(), runs.clone());
        tokio::spawn(async move { reconcile::cleanup(&obj, &runs).await })
    };
    for version in ["2", "3"] {
        api.expect(Method::PATCH, RUN_PATH)
            .await
            .refuse(409, "Conflict");
        api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!(version);
        api.get_at(RUN_PATH).await;
    }
    let release = api.patch(RUN_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(release["metadata"]["resourceVersion"], "3");
    let next = flow.await.expect("the flow ran").expect("it succeeded");
    assert_eq!(next, Next::Settled);
    assert!(
        chroma.standin.all_calls().is_empty(),
        "a finished run: no cancel"
    );
    api.assert_idle();
}

/// A run whose source is not Ready waits, and says so, without a call.
#[tokio::test]
async fn a_run_waits_for_its_source_without_a_call() {
    let chroma = Chroma::start().await;
    let obj = run();
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = {
        let (obj, runs) = (obj.clone(), runs.clone());
        tokio::spawn(async move { reconcile::apply(&obj, &runs).await })
    };
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .refuse(404, "NotFound");
    let status = api.patch(RUN_STATUS_PATH).await;
    let reasons: Vec<&str> = status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert_eq!(reasons, [Reason::WaitingForSource.as_str(); 2]);
    let next = flow.await.expect("the flow ran").expect("it succeeded");
    assert!(matches!(next, Next::LookAgainIn(_)), "{next:?}");
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
}
