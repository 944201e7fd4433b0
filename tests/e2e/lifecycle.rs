//! A SyncSource's life on the normal path: created (at the floor of writes and calls), at rest,
//! its spec changed (the source replaced), and deleted (the source deleted, or kept with
//! `deletionPolicy: Retain`).

use crate::harness::*;
use chroma_sync_operator::crd::{CREATE_PENDING_ANNOTATION, FINALIZER};
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_records_the_source_id_and_then_rests() {
    let env = Env::start("create").await;
    env.create("docs", github("acme/docs")).await;
    let o = env.wait_reason("docs", "SourceReady", SOON).await;

    let ids = env.source_ids();
    assert_eq!(ids.len(), 1, "exactly one source");
    let status = o.status.clone().unwrap();
    assert_eq!(status.source_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(condition(&o, "Ready").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Stalled"), None);
    assert_eq!(condition(&o, "Reconciling"), None);
    assert!(o.finalizers().contains(&FINALIZER.to_owned()));
    assert!(o.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    assert_eq!(env.standin.calls("create_source", "*"), 1);
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "the normal path lists nothing"
    );

    // The payload that reached the service is the spec, in the service's spelling.
    let (_, body) = &env.standin.sources(DATABASE)[0];
    assert_eq!(
        body,
        &json!({"database_name": DATABASE, "github": {"repository": "acme/docs"}})
    );
    // The floor: one guarded metadata write (finalizer + mark), one status write, and no Event
    // (a create is recorded in status; Events are for what status does not say).
    let writes: Vec<_> = env
        .audited("docs")
        .await
        .into_iter()
        .filter(|(verb, _)| matches!(verb.as_str(), "patch" | "update"))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("patch".to_owned(), String::new()),
            ("patch".to_owned(), "status".to_owned())
        ]
    );
    let events: Vec<_> = env
        .audit("events")
        .await
        .into_iter()
        .filter(|e| e["verb"] == "create")
        .collect();
    assert!(events.is_empty(), "Events on the normal path: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_rest_a_minute_passes_without_writes_or_calls() {
    let env = Env::start("rest").await;
    for i in 0..3 {
        env.create(&format!("r{i}"), github(&format!("acme/rest-{i}")))
            .await;
    }
    for i in 0..3 {
        env.wait_reason(&format!("r{i}"), "SourceReady", SOON).await;
    }
    let snapshot = |objs: Vec<chroma_sync_operator::crd::SyncSource>| {
        objs.into_iter()
            .map(|o| (o.name_any(), o.resource_version()))
            .collect::<Vec<_>>()
    };
    let before = snapshot(env.api().list(&Default::default()).await.unwrap().items);
    let calls_before = env.standin.all_calls();
    let events_before = env.events("r0").await.len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = snapshot(env.api().list(&Default::default()).await.unwrap().items);
    assert_eq!(before, after, "no object was written");
    assert_eq!(calls_before, env.standin.all_calls(), "no Chroma call");
    assert_eq!(events_before, env.events("r0").await.len(), "no event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_replaces_the_source() {
    let env = Env::start("replace").await;
    env.create(
        "site",
        json!({
            "databaseName": DATABASE,
            "webScrape": {"startingUrl": "https://docs.example.com", "maxDepth": 1},
            "tokenSecretRef": {"name": TOKEN_SECRET},
        }),
    )
    .await;
    let first = env.wait_reason("site", "SourceReady", SOON).await;
    let old = first.status.unwrap().source_id.unwrap();

    // A field that is not sent to the service changes nothing in Chroma.
    env.merge_spec("site", json!({"deletionPolicy": "Retain"}))
        .await;
    let same = env.wait_reason("site", "SourceReady", SOON).await;
    assert_eq!(
        same.status.unwrap().source_id.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(env.standin.calls("create_source", "*"), 1);

    env.merge_spec(
        "site",
        json!({"webScrape": {"maxDepth": 3}, "deletionPolicy": "Delete"}),
    )
    .await;
    let o = env.wait_reason("site", "SourceReady", SOON).await;
    let new = o.status.unwrap().source_id.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        env.source_ids(),
        vec![new.clone()],
        "never more than one live source"
    );
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "a replacement needs no search"
    );
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
    let (_, body) = &env.standin.sources(DATABASE)[0];
    assert_eq!(body["web_scrape"]["max_depth"], json!(3));
    env.wait_event("site", "Replaced", &[&old, &new]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_source_and_retain_keeps_it() {
    let env = Env::start("delete").await;
    env.create("gone", github("acme/gone")).await;
    let mut kept = github("acme/kept");
    kept["deletionPolicy"] = json!("Retain");
    env.create("kept", kept).await;
    env.wait_reason("gone", "SourceReady", SOON).await;
    let k = env.wait_reason("kept", "SourceReady", SOON).await;
    assert_eq!(env.source_ids().len(), 2);

    env.delete("gone").await;
    env.delete("kept").await;
    env.wait_gone("gone", SOON).await;
    env.wait_gone("kept", SOON).await;
    assert_eq!(env.source_ids(), vec![k.status.unwrap().source_id.unwrap()]);
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_object_that_never_got_a_source_does_not_hang() {
    let env = Env::start("never").await;
    env.standin
        .insert_source(json!({"database_name": DATABASE, "github": {"repository": "acme/other"}}));
    env.create("never", github("acme/other")).await;
    env.wait_reason("never", "SourceExists", SOON).await;
    env.delete("never").await;
    env.wait_gone("never", SOON).await;
    assert_eq!(
        env.source_ids().len(),
        1,
        "someone else's source is left alone"
    );
    assert_eq!(env.standin.calls("delete_source", "*"), 0);
}
