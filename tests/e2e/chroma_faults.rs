//! A storm of Chroma faults: SyncSources are created (and some deleted) while the stand-in
//! answers with a mix of 500, 502 and 503 at a given rate, 429 with Retry-After, connections
//! cut after the work (lost 201s), truncated JSON after the work, and answers later than the
//! operator's timeout (before the work, and after a committed create). Afterwards: exactly one
//! source per live object, recorded in its status, all Ready; none for deleted objects; no
//! create ever answered 409 (nothing was created twice); and a bounded cost: each faulty answer
//! costs at most the call again and one lookup (when it left unknown whether a source was
//! made). A lookup lists every source created in the 5 minutes before the create's mark, 100 a
//! page, so here (every source is that recent) it takes up to ceil(sources / 100) list calls.
//!
//! `make test` runs a small storm; `make reliability` a large one (STORM_OBJECTS,
//! STORM_ERROR_PERCENT, STORM_SEED).

use crate::harness::*;
use chroma_sync_standin::Faults;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The kinds of phase the storm cycles through, each with new objects arriving in it, and the
/// stand-in's name for the fault each one injects.
const PHASES: [(&str, &str); 6] = [
    ("5xx", "fail"),
    ("429", "rate_limit"),
    ("drop", "drop"),
    ("garble", "garble"),
    ("late", "latency"),
    ("late-after-commit", "commit_delay"),
];

/// The faults of one phase. 5xx answers come at `rate` in the first four kinds; a late phase
/// has nothing else, so that every faulty request has exactly one fault and the stand-in's
/// count of injected faults is a count of faulty requests.
fn phase(kind: &str, rate: f64, rng: &mut StdRng) -> Faults {
    let late = (CHROMA_TIMEOUT + Duration::from_millis(500)).as_millis() as u64;
    let mut f = Faults {
        error_rate: rate,
        error_status: [500, 502, 503][rng.random_range(0..3)],
        ..Default::default()
    };
    match kind {
        "5xx" => {}
        "429" => {
            f.rate_limit_next = rng.random_range(1..=3);
            f.retry_after_secs = rng.random_range(1..=2);
        }
        "drop" => f.drop_next = rng.random_range(1..=3),
        "garble" => f.garble_next = rng.random_range(1..=3),
        "late" => {
            f = Faults {
                latency_ms: late,
                ..Default::default()
            }
        }
        "late-after-commit" => {
            f = Faults {
                create_commit_delay_ms: late,
                ..Default::default()
            }
        }
        other => unreachable!("phase {other}"),
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_chroma_faults_leaves_exactly_one_source_per_object() {
    let seed = setting("STORM_SEED", 5);
    let objects = setting("STORM_OBJECTS", 40) as usize;
    let rate = setting("STORM_ERROR_PERCENT", 30) as f64 / 100.0;
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::start("storm").await;
    let mut report = Report::new("Chroma fault storm", Some(seed), &env.standin);
    report.set("objects", objects);
    report.set("error_rate", rate);
    report.set(
        "invariant",
        "one source per live object, none per deleted one, all Ready, no 409, \
         extra <= (1 + list pages) per faulty answer",
    );

    // At least ten phases (each kind at least once), about ten new objects in each.
    let phases = (objects / 10).max(10);
    let per_phase = objects.div_ceil(phases);
    let mut kinds = Vec::new();
    while kinds.len() < phases {
        let mut round = PHASES.to_vec();
        round.shuffle(&mut rng);
        kinds.extend(round);
    }
    let mut churn = Churn::default();
    let mut next = 0;
    for (kind, injects) in &kinds[..phases] {
        let landed = |standin: &chroma_sync_standin::StandIn| {
            standin
                .injected()
                .get(*injects)
                .copied()
                .unwrap_or_default()
        };
        let before = landed(&env.standin);
        env.standin.set_faults(phase(kind, rate, &mut rng));
        let names: Vec<String> = (next..(next + per_phase).min(objects))
            .map(|i| format!("s{i:04}"))
            .collect();
        next += names.len();
        // Over the storm, delete about a fifth of the objects, some before they are Ready.
        let p = 0.4 / phases as f64;
        churn.round(&env, names, "storm", p, &mut rng).await;
        // A phase lasts until its fault has landed (a busy operator may reach the stand-in
        // only later), and a little longer.
        let phase_start = Instant::now();
        while landed(&env.standin) == before && phase_start.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..700))).await;
    }
    env.standin.set_faults(Faults::default());
    let storm_over = Instant::now();
    report.set("deleted", churn.deleted.len());
    report.set("phases", phases);

    let timeout = Duration::from_secs(60 + objects as u64 / 5);
    let recorded = settle(&env, &churn.live, &churn.deleted, timeout).await;
    report.set("converge_secs", storm_over.elapsed().as_secs_f64());
    assert_one_source_each(&env, "storm", &recorded, &churn.deleted);

    let injected = env.standin.injected();
    let faulty: u64 = injected.values().sum();
    let (floor, extra) = calls_beyond_floor(&env.standin);
    println!(
        "storm | seed {seed} | objects {objects} | live {} | deleted {} | error rate {rate} | \
         injected {injected:?} | calls {:?} | floor {floor} | extra {extra} | \
         converged {:.1} s after the storm",
        churn.live.len(),
        churn.deleted.len(),
        env.standin.all_calls(),
        storm_over.elapsed().as_secs_f64(),
    );
    // The storm was the mix it claims to be.
    for kind in [
        "fail",
        "rate_limit",
        "drop",
        "garble",
        "latency",
        "commit_delay",
    ] {
        assert!(
            injected.get(kind).is_some_and(|&n| n > 0),
            "no {kind} fault landed: {injected:?}"
        );
    }
    let statuses: BTreeMap<&str, u64> = ["500", "502", "503"]
        .into_iter()
        .map(|s| {
            let n = ["create_source", "list_sources", "delete_source"]
                .iter()
                .map(|e| env.standin.calls(e, s))
                .sum();
            (s, n)
        })
        .collect();
    report.set("server_errors", &statuses);
    // A create that meets an existing source would be a second create for one object.
    assert_eq!(
        env.standin.calls("create_source", "409"),
        0,
        "a create met a source that already existed"
    );
    let pages = env.standin.created_total().div_ceil(100).max(1);
    report.set("pages_per_lookup", pages);
    assert!(
        extra <= ((1 + pages) * faulty) as i64,
        "{extra} calls beyond the floor of {floor} for {faulty} faulty answers \
         ({pages} pages per lookup)"
    );
    report.pass();
}

/// The path to Chroma goes silent (packets dropped, connection kept open) while a create is in
/// flight, after the service committed it. The client's own timeout ends the call (status
/// Timeout within CHROMA_TIMEOUT), every retry while silent times out the same way without a
/// second create, and once the path is back the lookup finds the committed source: one source,
/// one POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_path_to_chroma_mid_create_times_out_and_duplicates_nothing() {
    let mut env = Env::without_operator("silent-chroma").await;
    let mut report = Report::new("silent path to Chroma mid-create", None, &env.standin);
    report.set("objects", 1);
    report.set(
        "invariant",
        "client timeout ends the call; one POST, one source",
    );
    let upstream = env
        .chroma_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = crate::proxy::Proxy::start(upstream).await;
    env.chroma_url = format!("http://{}", proxy.addr);
    env.start_operator();
    let hold = Duration::from_secs(1);
    env.create_and_hold_answer("docs", github("acme/silent-chroma"), hold)
        .await;
    proxy.set_silent(true);
    let silenced = Instant::now();
    env.wait_reason("docs", "Timeout", Duration::from_secs(30))
        .await;
    let waited = silenced.elapsed();
    report.set("timeout_secs", waited.as_secs_f64());
    assert!(
        waited <= CHROMA_TIMEOUT + Duration::from_secs(3),
        "the call outlived the client's timeout: {waited:?}"
    );
    // A retry or two while the path is still silent.
    tokio::time::sleep(CHROMA_TIMEOUT * 2).await;
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "no create while silent"
    );

    proxy.set_silent(false);
    env.standin.set_faults(Faults::default());
    let back = Instant::now();
    let docs = env
        .wait_reason("docs", "SourceReady", Duration::from_secs(60))
        .await;
    assert_eq!(env.source_ids(), [docs.status.unwrap().source_id.unwrap()]);
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "one POST in all"
    );
    report.set("converge_secs", back.elapsed().as_secs_f64());
    println!(
        "silent path to Chroma: Timeout after {:.1} s",
        waited.as_secs_f64()
    );
    report.pass();
}
