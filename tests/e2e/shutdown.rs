//! SIGTERM: the operator finishes what it has in flight, starts nothing new, and exits cleanly.

use crate::harness::*;
use chroma_sync_operator::crd::CREATE_PENDING_ANNOTATION;
use chroma_sync_standin::Faults;
use kube::ResourceExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_create_in_flight_and_starts_no_other() {
    let mut env = Env::start("sigterm").await;
    env.standin.set_faults(on_creates(Faults {
        latency_ms: 3_000,
        ..Default::default()
    }));
    env.create("first", github("acme/first")).await;
    wait_for("the first create to be in flight", SOON, || async {
        (env.standin.calls("create_source", "*") == 1).then_some(())
    })
    .await;
    env.sigterm_operator();
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.create("second", github("acme/second")).await;
    let exit = env.wait_operator_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "graceful exit, got {exit}");
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "no POST after SIGTERM"
    );
    let first = env.get("first").await;
    assert_eq!(
        first.status.and_then(|s| s.source_id),
        env.source_ids().first().cloned(),
        "the create in flight completed and was recorded"
    );
    let second = env.get("second").await;
    assert!(!second.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(second.status.unwrap().observed_generation, Some(-1));
}
