//! Leader election against the real apiserver: through the library, a renewal that conflicts
//! with a write of its own keeps leadership and a Lease taken by another replica ends it at
//! once; with two operator processes, a leader cut off by a silent network path stops before
//! the standby takes over.

use crate::harness::*;
use crate::proxy::{Proxy, server_addr};
use chroma_sync_operator::leader::{self, Settings};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_renewal_keeps_the_lease_and_a_taken_lease_ends_leadership() {
    let env = Env::without_operator("leader").await;
    let settings = Settings {
        lease_duration: Duration::from_secs(6),
        renew_every: Duration::from_millis(500),
        renew_deadline: Duration::from_secs(4),
        retry_every: Duration::from_millis(200),
        ..Settings::new(
            env.ns.clone(),
            "lease".into(),
            "replica-a".into(),
            Default::default(),
        )
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

/// The path between the leader and the apiserver goes silent: packets dropped, connections kept
/// open, no reset. kube's client has no read timeout, so only the leader's own deadline can end
/// its leadership. It must stop before its Lease can expire for the standby: the standby takes
/// over and reconciles, no write of the old leader lands after the new leader's first (the
/// audit log tells them apart by User-Agent), and no source is duplicated or leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_behind_a_silent_path_stops_before_the_standby_takes_over() {
    chroma_sync_operator::chroma::install_crypto_provider();
    let kubeconfig = kubeconfig_path();
    let proxy = Proxy::start(server_addr(&kubeconfig)).await;
    let mut env = Env::without_operator("silent").await;
    let mut report = Report::new("silent path to the apiserver", None, &env.standin);
    report.set("objects", 2);
    report.set(
        "invariant",
        "old leader stops before the standby leads, no write of it after the new leader's first",
    );
    let (log_a, log_b) = (env.log_path("a"), env.log_path("b"));
    env.operator_kubeconfig = Some(proxy.kubeconfig(&kubeconfig, log_a.parent().unwrap()));
    let mut a = env.spawn_operator("replica-a", &log_a);
    let logged = |path: &std::path::Path, words: &str| {
        std::fs::read_to_string(path).is_ok_and(|log| log.contains(words))
    };
    wait_for("replica a to lead", SOON, || async {
        logged(&log_a, "acquired leadership").then_some(())
    })
    .await;
    env.operator_kubeconfig = None;
    let mut b = env.spawn_operator("replica-b", &log_b);
    wait_for("replica b to stand by", SOON, || async {
        logged(&log_b, "standing by").then_some(())
    })
    .await;
    env.create("before", github("acme/silent-before")).await;
    env.wait_reason("before", "SourceReady", SOON).await;

    proxy.set_silent(true);
    let silenced = Instant::now();
    env.create("after", github("acme/silent-after")).await;
    let (mut a_exit, mut b_lead) = (None, None);
    while a_exit.is_none() || b_lead.is_none() {
        assert!(
            silenced.elapsed() < Duration::from_secs(60),
            "after 60 s: old leader exited {a_exit:?}, standby leads {b_lead:?}"
        );
        if a_exit.is_none() && a.try_wait().unwrap().is_some() {
            a_exit = Some(silenced.elapsed());
        }
        if b_lead.is_none() && logged(&log_b, "acquired leadership") {
            b_lead = Some(silenced.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a_exit, b_lead) = (a_exit.unwrap(), b_lead.unwrap());
    println!(
        "silent path: old leader stopped after {:.1} s, standby led after {:.1} s",
        a_exit.as_secs_f64(),
        b_lead.as_secs_f64()
    );
    report.set("stopped_secs", a_exit.as_secs_f64());
    report.set("converge_secs", b_lead.as_secs_f64());
    assert!(
        a_exit < b_lead,
        "the old leader ran until {a_exit:?}, after the standby took over at {b_lead:?}"
    );
    assert!(
        !a.wait().unwrap().success(),
        "lost leadership is an error exit"
    );

    let after = env.wait_reason("after", "SourceReady", SOON).await;
    let before = env.get("before").await;
    let mut recorded = [before, after].map(|o| o.status.unwrap().source_id.unwrap());
    recorded.sort();
    let mut ids = env.source_ids();
    ids.sort();
    assert_eq!(ids, recorded, "one source per object, none duplicated");
    assert_eq!(env.standin.calls("create_source", "*"), 2);

    // The apiserver's own record: every write, by whom, and when it was received.
    let mut writes: Vec<(jiff::Timestamp, String)> = Vec::new();
    for resource in ["syncsources", "leases", "events"] {
        for e in env.audit(resource).await {
            let verb = e["verb"].as_str().unwrap_or_default();
            if !matches!(verb, "create" | "update" | "patch" | "delete") {
                continue;
            }
            let at = e["requestReceivedTimestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let agent = e["userAgent"].as_str().unwrap_or_default().to_owned();
            writes.push((at, agent));
        }
    }
    writes.sort();
    let by = |replica: &str| {
        let tag = format!("({replica})");
        move |w: &&(jiff::Timestamp, String)| w.1.contains(&tag)
    };
    let first_b = writes
        .iter()
        .find(by("replica-b"))
        .expect("replica b wrote")
        .0;
    let last_a = writes
        .iter()
        .rfind(by("replica-a"))
        .expect("replica a wrote")
        .0;
    assert!(
        last_a < first_b,
        "replica a wrote at {last_a}, after replica b's first write at {first_b}"
    );

    b.kill().unwrap();
    b.wait().unwrap();
    report.pass();
}
