//! Several replicas of the operator: one leads and the others stand by; after the leader's
//! SIGKILL a standby takes over within the lease and recovers its create in flight; a leader
//! stopped by SIGTERM hands the Lease back at once.

use crate::harness::*;
use chroma_sync_standin::Faults;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_a_handover_without_duplicates() {
    let env = Env::without_operator("ha").await;
    let (log_a, log_b) = (env.log_path("a"), env.log_path("b"));
    let mut a = env.spawn_operator("replica-a", &log_a);
    wait_log(&log_a, "replica a to lead", "acquired leadership").await;
    let mut b = env.spawn_operator("replica-b", &log_b);
    wait_log(&log_b, "replica b to stand by", "standing by").await;

    env.create("one", github("acme/ha-one")).await;
    env.wait_reason("one", "SourceReady", SOON).await;
    let b_log = std::fs::read_to_string(&log_b).unwrap();
    assert!(
        !b_log.contains("starting controller"),
        "the standby does not reconcile"
    );

    // At rest the leader renews every 5 s: count its Lease writes over 20 s.
    let leases: kube::Api<Lease> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let lease = format!("lease-{}", env.ns);
    let before = leases.get(&lease).await.unwrap().resource_version();
    let renewals_before = lease_writes(&env).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let renewals = lease_writes(&env).await - renewals_before;
    assert!(
        (3..=5).contains(&renewals),
        "{renewals} Lease writes in 20 s"
    );
    assert_ne!(leases.get(&lease).await.unwrap().resource_version(), before);

    // Kill the leader mid-create: the standby takes over within the lease duration and
    // recovers the create without a duplicate.
    let hold = Duration::from_secs(3);
    env.create_and_hold_answer("two", github("acme/ha-two"), hold)
        .await;
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    env.standin.set_faults(Faults::default());
    wait_log(&log_b, "replica b to lead", "acquired leadership").await;
    let handover = killed.elapsed();
    assert!(
        handover <= Duration::from_secs(15 + 3),
        "handover took {handover:?}"
    );
    let two = env.wait_reason("two", "SourceReady", SOON).await;
    assert_eq!(
        env.source_ids().len(),
        2,
        "no duplicate across the handover"
    );
    assert!(
        env.source_ids()
            .contains(&two.status.unwrap().source_id.unwrap())
    );
    assert_eq!(env.standin.calls("create_source", "*"), 2);
    let holder = leases.get(&lease).await.unwrap();
    assert_eq!(
        holder.spec.unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );
    println!(
        "leader handover after SIGKILL: {:.1} s; {renewals} renewals in 20 s at rest",
        handover.as_secs_f64()
    );

    // A graceful stop hands the Lease back at once.
    b.terminate();
    assert!(b.wait().unwrap().success());
    let released = leases.get(&lease).await.unwrap();
    assert_eq!(released.spec.unwrap().holder_identity, None);
}

/// Lease renewals (updates) in the test's namespace, from the audit log.
async fn lease_writes(env: &Env) -> usize {
    env.audit("leases")
        .await
        .iter()
        .filter(|e| e["verb"] == "update")
        .count()
}
