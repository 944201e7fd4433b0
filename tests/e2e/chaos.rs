//! SIGKILL storm: the operator is killed at seeded random moments while SyncSources are created
//! and deleted, with the stand-in holding every create's answer for a while (so kills land in
//! the create window). Afterwards: exactly one source per live object, recorded in its status;
//! none for deleted objects; no object stuck on its finalizer.
//!
//! `make test` runs a small storm; `make reliability` a large one (CHAOS_OBJECTS, CHAOS_KILLS,
//! CHAOS_SEED set the size and the schedule).

use crate::harness::*;
use chroma_sync_operator::standin::Faults;
use futures::future::join_all;
use kube::ResourceExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_leaves_exactly_one_source_per_object() {
    let seed = setting("CHAOS_SEED", 7);
    let objects = setting("CHAOS_OBJECTS", 60) as usize;
    let kills = setting("CHAOS_KILLS", 6) as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut env = Env::start("chaos").await;
    env.standin.set_faults(Faults {
        create_commit_delay_ms: 150,
        latency_ms: 10,
        ..Default::default()
    });

    let started = Instant::now();
    let mut live = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let per_batch = objects.div_ceil(kills + 1);
    let mut next = 0;
    for round in 0..=kills {
        let names: Vec<String> = (next..(next + per_batch).min(objects))
            .map(|i| format!("c{i:04}"))
            .collect();
        next += names.len();
        join_all(
            names
                .iter()
                .map(|n| env.create(n, github(&format!("chaos/{n}")))),
        )
        .await;
        live.extend(names);
        // Over the storm, delete about four in ten of the objects.
        let p = 0.5 / (kills + 1) as f64;
        let doomed: Vec<String> = live
            .iter()
            .filter(|_| rng.random_bool(p))
            .cloned()
            .collect();
        join_all(doomed.iter().map(|n| env.delete(n))).await;
        for n in doomed {
            live.remove(&n);
            deleted.insert(n);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        if round < kills {
            env.kill_operator();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            env.start_operator();
        }
    }
    env.standin.set_faults(Faults::default());

    let timeout = Duration::from_secs(60 + objects as u64 / 5);
    let recorded: BTreeMap<String, String> =
        wait_for("every object to settle", timeout, || async {
            let list = env.api().list(&Default::default()).await.ok()?;
            let mut ids = BTreeMap::new();
            for o in &list.items {
                let name = o.name_any();
                if deleted.contains(&name) {
                    return None; // still finalizing
                }
                let ready = ready(o).is_some_and(|r| r.0 == "True");
                let current = o.status.as_ref()?.observed_generation == o.metadata.generation;
                if !(ready && current) {
                    return None;
                }
                ids.insert(name, o.status.as_ref()?.source_id.clone()?);
            }
            (ids.len() == live.len()).then_some(ids)
        })
        .await;
    let converged = started.elapsed();

    // Every source in Chroma, by the object it was made for (repository chaos/<name>).
    let mut by_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, body) in env.standin.sources(DATABASE) {
        let repo = body["github"]["repository"].as_str().unwrap_or_default();
        let name = repo.trim_start_matches("chaos/").to_owned();
        by_object.entry(name).or_default().push(id);
    }
    for name in &live {
        assert_eq!(
            by_object.get(name),
            Some(&vec![recorded[name].clone()]),
            "{name}: exactly one source, the one in its status"
        );
    }
    for name in &deleted {
        assert_eq!(
            by_object.get(name),
            None,
            "{name} was deleted; its source must be too"
        );
    }
    assert_eq!(by_object.len(), live.len(), "no source without an object");

    let creates = env.standin.calls("create_source", "*");
    let committed = env.standin.created_total();
    println!(
        "chaos | seed {seed} | objects {objects} | kills {kills} | live {} | deleted {} | \
         create calls {creates} (committed {committed}, extra {}) | list calls {} | \
         delete calls {} | converged in {:.1} s",
        live.len(),
        deleted.len(),
        creates - committed,
        env.standin.calls("list_sources", "*"),
        env.standin.calls("delete_source", "*"),
        converged.as_secs_f64()
    );
}
