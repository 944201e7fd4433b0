//! SIGKILL storm: the operator is killed at seeded random moments while SyncSources are created
//! and deleted, with the stand-in holding every create's answer for a while (so kills land in
//! the create window). Afterwards: exactly one source per live object, recorded in its status;
//! none for deleted objects; no object stuck on its finalizer.
//!
//! `make test` runs a small storm; `make reliability` a large one (CHAOS_OBJECTS, CHAOS_KILLS,
//! CHAOS_SEED set the size and the schedule).

use crate::harness::*;
use chroma_sync_standin::Faults;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_leaves_exactly_one_source_per_object() {
    let seed = setting("CHAOS_SEED", 7);
    let objects = setting("CHAOS_OBJECTS", 60) as usize;
    let kills = setting("CHAOS_KILLS", 6) as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut env = Env::start("chaos").await;
    env.spread_over_two_connections().await;
    let mut report = Report::new("SIGKILL storm", Some(seed), &env.standin);
    report.set("objects", objects);
    report.set("connections", 2);
    report.set("kills", kills);
    report.set(
        "invariant",
        "one source per live object, none per deleted one, none stuck",
    );
    env.standin.set_faults(Faults {
        create_commit_delay_ms: 150,
        latency_ms: 10,
        ..Default::default()
    });

    let started = Instant::now();
    let mut churn = Churn::default();
    let per_batch = objects.div_ceil(kills + 1);
    let mut next = 0;
    let mut last_restart = Instant::now();
    for round in 0..=kills {
        let names: Vec<String> = (next..(next + per_batch).min(objects))
            .map(|i| format!("c{i:04}"))
            .collect();
        next += names.len();
        // Over the storm, delete about four in ten of the objects.
        let p = 0.5 / (kills + 1) as f64;
        churn.round(&env, names, "chaos", p, &mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        if round < kills {
            env.kill_operator();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            env.start_operator();
            last_restart = Instant::now();
        }
    }
    env.standin.set_faults(Faults::default());
    report.set("deleted", churn.deleted.len());

    let timeout = Duration::from_secs(60 + objects as u64 / 5);
    let recorded = settle(&env, &churn.live, &churn.deleted, timeout).await;
    let converged = started.elapsed();
    // From the last restart after a kill (the last batch of objects arrives after it).
    report.set("converge_secs", last_restart.elapsed().as_secs_f64());
    assert_one_source_each(&env, "chaos", &recorded, &churn.deleted);

    let creates = env.standin.calls("create_source", "*");
    let committed = env.standin.created_total();
    let lists = env.standin.calls("list_sources", "*");
    // The lookups of unrecorded creates after each restart are what lists cost here.
    let lists_per_restart = lists as f64 / kills.max(1) as f64;
    report.set("lists_per_restart", lists_per_restart);
    println!(
        "chaos | seed {seed} | objects {objects} | kills {kills} | live {} | deleted {} | \
         create calls {creates} (committed {committed}, extra {}) | list calls {lists} \
         ({lists_per_restart:.1} per restart) | delete calls {} | converged in {:.1} s",
        churn.live.len(),
        churn.deleted.len(),
        creates - committed,
        env.standin.calls("delete_source", "*"),
        converged.as_secs_f64()
    );
    report.pass();
}
