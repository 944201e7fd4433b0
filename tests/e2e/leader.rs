//! Leader election against the real apiserver, driven through the library: a renewal that
//! conflicts with a write of its own keeps leadership; a Lease taken by another replica ends it
//! at once.

use crate::harness::*;
use chroma_sync_operator::leader::{self, Settings};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_renewal_keeps_the_lease_and_a_taken_lease_ends_leadership() {
    let env = Env::without_operator("leader").await;
    let settings = Settings {
        lease_duration: Duration::from_secs(6),
        renew_every: Duration::from_millis(500),
        renew_deadline: Duration::from_secs(4),
        retry_every: Duration::from_millis(200),
        ..Settings::new(env.ns.clone(), "lease".into(), "replica-a".into())
    };
    let mut leadership = leader::acquire(env.client.clone(), settings, || {})
        .await
        .expect("acquire the free Lease");
    let held = tokio::spawn(async move { leadership.hold().await });

    // Change the Lease under the holder without taking it, as its own renewal does when the
    // answer is lost: renewals conflict. For two renew deadlines it must hold on.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let until = Instant::now() + Duration::from_secs(8);
    let mut bumps = 0;
    while Instant::now() < until {
        let patch = json!({"metadata": {"annotations": {"bump": bumps.to_string()}}});
        leases
            .patch("lease", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
        bumps += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !held.is_finished(),
        "leadership was given up over conflicts with a Lease it still held ({bumps} changes)"
    );
    let holder = |l: Lease| l.spec.unwrap().holder_identity.unwrap_or_default();
    assert_eq!(holder(leases.get("lease").await.unwrap()), "replica-a");

    // Another replica takes the Lease: the holder must notice at its next renewal (every 0.5 s),
    // not only at its renew deadline (4 s).
    let mut taken = leases.get("lease").await.unwrap();
    taken.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    leases
        .replace("lease", &PostParams::default(), &taken)
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the holder kept leading after another replica took the Lease")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "noticed only after {:?}",
        started.elapsed()
    );
    assert_eq!(holder(leases.get("lease").await.unwrap()), "replica-b");
}
