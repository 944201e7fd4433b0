//! Each kind of error answer from Chroma, one at a time: what status records, and whether and
//! when the operator tries again. (Many at once, with deletions and restarts: chroma_faults.rs.)

use crate::harness::*;
use chroma_sync_operator::crd::CREATE_PENDING_ANNOTATION;
use chroma_sync_standin::Faults;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_stalls_without_retrying() {
    let env = Env::start("conflict").await;
    env.standin
        .insert_source(json!({"database_name": DATABASE, "github": {"repository": "acme/taken"}}));
    env.create("taken", github("acme/taken")).await;
    let o = env.wait_reason("taken", "SourceExists", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Ready").as_deref(), Some("False"));
    let status = o.status.clone().unwrap();
    let last = status.last_error.unwrap();
    assert_eq!(last.http_status, Some(409));
    assert_eq!(last.message, "Source exists");
    assert_eq!(status.source_id, None);
    assert!(
        !o.annotations().contains_key(CREATE_PENDING_ANNOTATION),
        "a definite 409 clears the create mark"
    );
    env.wait_event("taken", "SourceExists", &["Source exists"])
        .await;
    // It waits for a spec change: no further calls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.standin.calls("create_source", "*"), 1);

    // A spec change that resolves the conflict goes through.
    env.merge_spec("taken", json!({"github": {"repository": "acme/free"}}))
        .await;
    let o = env.wait_reason("taken", "SourceReady", SOON).await;
    assert!(o.status.unwrap().last_error.is_none());
    assert_eq!(env.source_ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_recorded_as_invalid_spec() {
    let env = Env::start("invalid").await;
    env.standin.set_faults(on_creates(Faults {
        fail_next: 1,
        error_status: 400,
        ..Default::default()
    }));
    env.create("bad", github("acme/bad")).await;
    let o = env.wait_reason("bad", "InvalidSpec", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(o.status.unwrap().last_error.unwrap().http_status, Some(400));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.standin.calls("create_source", "*"), 1, "no retry loop");
    assert!(env.source_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_success_converge_to_one_source() {
    let env = Env::start("retry").await;
    env.standin.set_faults(on_creates(Faults {
        fail_next: 3,
        error_status: 503,
        ..Default::default()
    }));
    env.create("flaky", github("acme/flaky")).await;
    let o = env
        .wait_reason("flaky", "SourceReady", Duration::from_secs(60))
        .await;
    assert_eq!(env.source_ids(), vec![o.status.unwrap().source_id.unwrap()]);
    assert_eq!(env.standin.calls("create_source", "503"), 3);
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    // After an ambiguous 503 the operator looks before it creates again.
    assert_eq!(env.standin.calls("list_sources", "200"), 3);
}

/// A 429 whose Retry-After the client will not wait out within one call (longer than
/// --chroma-timeout) reaches the reconcile: RateLimited, and the retry not before Retry-After.
/// (A shorter one the client waits out and retries itself: `a_429_is_retried_inside_the_client`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let env = Env::start("ratelimit").await;
    let retry_after = CHROMA_TIMEOUT + Duration::from_secs(1);
    env.standin.set_faults(on_creates(Faults {
        rate_limit_next: 1,
        retry_after_secs: retry_after.as_secs(),
        ..Default::default()
    }));
    env.create("rl", github("acme/ratelimited")).await;
    let o = env.wait_reason("rl", "RateLimited", SOON).await;
    assert_eq!(condition(&o, "Reconciling").as_deref(), Some("True"));
    let limited_at = std::time::Instant::now();
    env.wait_reason("rl", "SourceReady", SOON).await;
    let waited = limited_at.elapsed();
    assert!(
        waited >= retry_after - Duration::from_secs(1),
        "retried after {waited:?}, before Retry-After"
    );
    assert_eq!(env.standin.calls("create_source", "429"), 1);
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "a 429 created nothing: no search"
    );
    assert_eq!(env.source_ids().len(), 1);
}

/// A 429 with a short Retry-After never reaches the reconcile: the client pauses and sends the
/// create again itself (the service did not process it), and the object goes Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_inside_the_client() {
    let env = Env::start("ratelimit-inside").await;
    env.standin.set_faults(on_creates(Faults {
        rate_limit_next: 2,
        retry_after_secs: 1,
        ..Default::default()
    }));
    env.create("rl", github("acme/ratelimited-inside")).await;
    let o = env.wait_reason("rl", "SourceReady", SOON).await;
    assert_eq!(env.source_ids(), vec![o.status.unwrap().source_id.unwrap()]);
    assert_eq!(env.standin.calls("create_source", "429"), 2);
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    assert_eq!(env.standin.calls("list_sources", "*"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_reported_and_retried_slowly() {
    let env = Env::start("nodb").await;
    let mut spec = github("acme/nodb");
    spec["databaseName"] = json!("missing");
    env.create("nodb", spec).await;
    let o = env.wait_reason("nodb", "DatabaseNotFound", SOON).await;
    assert_eq!(condition(&o, "Reconciling").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Stalled"), None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "long backoff, not a loop"
    );
}
