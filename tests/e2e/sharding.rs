//! The way past one process: operators over disjoint namespaces, each with a Lease of its own,
//! sharing nothing (as several releases of the chart with disjoint `watchNamespaces` do). Both
//! lead at once, each reconciles only its own namespace's objects, and no object is reconciled
//! by both (the apiserver's audit log tells them apart by User-Agent).

use crate::harness::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::Value;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);
const PER_SHARD: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_over_disjoint_namespaces_split_the_work() {
    let shards = [
        Env::without_operator("shard-a").await,
        Env::without_operator("shard-b").await,
    ];
    let names = ["shard-a", "shard-b"];
    let mut operators: Vec<_> = shards
        .iter()
        .zip(names)
        .map(|(env, name)| env.spawn_operator(name, &env.log_path(name)))
        .collect();
    for (env, shard) in shards.iter().zip(names) {
        for i in 0..PER_SHARD {
            env.create(
                &format!("{shard}-{i}"),
                github(&format!("acme/{shard}-{i}")),
            )
            .await;
        }
    }
    for (env, shard) in shards.iter().zip(names) {
        for i in 0..PER_SHARD {
            env.wait_reason(&format!("{shard}-{i}"), "SourceReady", SOON)
                .await;
        }
        // One create per object, in this shard's Chroma and nowhere else.
        assert_eq!(env.standin.calls("create_source", "*"), PER_SHARD as u64);
        let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
        let lease = leases.get(&format!("lease-{}", env.ns)).await.unwrap();
        let holder = lease.spec.unwrap().holder_identity.unwrap_or_default();
        assert_eq!(holder, shard, "each shard leads its own Lease");
    }
    for (env, shard) in shards.iter().zip(names) {
        let writes: Vec<Value> = env
            .audit("syncsources")
            .await
            .into_iter()
            .filter(|e| e["verb"] == "patch")
            .collect();
        assert!(writes.len() >= 2 * PER_SHARD, "{} writes", writes.len());
        let strangers: Vec<&str> = writes
            .iter()
            .map(|e| e["userAgent"].as_str().unwrap_or_default())
            .filter(|agent| !agent.ends_with(&format!("({shard})")))
            .collect();
        assert!(
            strangers.is_empty(),
            "{shard}'s objects written by {strangers:?}"
        );
    }
    for operator in &mut operators {
        operator.kill().unwrap();
        operator.wait().unwrap();
    }
}
