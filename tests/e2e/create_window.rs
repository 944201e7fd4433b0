//! A create whose answer never arrives, because the operator was killed between the commit and
//! the answer, the connection was cut, or the 201 was truncated: the source is found by listing
//! and adopted, never created twice.

use crate::harness::*;
use chroma_sync_operator::crd::CREATE_PENDING_ANNOTATION;
use chroma_sync_standin::Faults;
use kube::ResourceExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_the_create_window_leaves_exactly_one_source() {
    let mut env = Env::start("crash").await;
    // The stand-in commits the source, then holds the answer: the operator dies in between.
    let hold = Duration::from_secs(5);
    env.create_and_hold_answer("window", github("acme/window"), hold)
        .await;
    env.kill_operator();
    let o = env.get("window").await;
    assert!(o.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(o.status.as_ref().and_then(|s| s.source_id.clone()), None);

    env.standin.set_faults(Faults::default());
    env.start_operator();
    let o = env.wait_reason("window", "SourceReady", SOON).await;
    let ids = env.source_ids();
    assert_eq!(ids.len(), 1, "no duplicate after the crash");
    assert_eq!(
        o.status.unwrap().source_id.as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "recovery creates nothing"
    );
    assert_eq!(
        env.standin.calls("list_sources", "200"),
        1,
        "recovery costs one list"
    );
    env.wait_event("window", "Adopted", &[&ids[0]]).await;
    let events = env.events("window").await;
    assert!(
        events.iter().all(|(r, _)| r != "MissingCredentials"),
        "a restart must not report an existing token missing: {events:?}"
    );

    // And the recovered source is the one deletion removes.
    env.delete("window").await;
    env.wait_gone("window", SOON).await;
    assert!(env.source_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_garbled_201_is_recovered_without_a_duplicate() {
    let env = Env::start("lost201").await;
    // The first create's connection is cut after the commit; the second's 201 is truncated JSON.
    env.standin.set_faults(on_creates(Faults {
        drop_next: 1,
        ..Default::default()
    }));
    env.create("cut", github("acme/cut")).await;
    let cut = env.wait_reason("cut", "SourceReady", SOON).await;
    env.standin.set_faults(on_creates(Faults {
        garble_next: 1,
        ..Default::default()
    }));
    env.create("garbled", github("acme/garbled")).await;
    let garbled = env.wait_reason("garbled", "SourceReady", SOON).await;

    let ids = env.source_ids();
    assert_eq!(ids.len(), 2, "one source each, no duplicate");
    for o in [cut, garbled] {
        let id = o.status.unwrap().source_id.unwrap();
        assert!(ids.contains(&id));
    }
    assert_eq!(
        env.standin.calls("create_source", "*"),
        2,
        "recovered by listing, not by creating again"
    );
    assert_eq!(env.standin.calls("list_sources", "200"), 2);
    env.wait_event("cut", "Adopted", &[]).await;
    env.wait_event("garbled", "Adopted", &[]).await;
}
