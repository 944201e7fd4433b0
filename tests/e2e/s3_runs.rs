//! S3 runs happen exactly once per object key, even when the operator is SIGKILLed after the
//! stand-in received the create and before the invocation's id was recorded: after the restart
//! the run asks for the newest invocation of its key (`latest-by-keys`, one call, no listing),
//! adopts it, and follows it to the end. The service appends S3 runs (a key synced twice is
//! indexed twice), so a second invocation of a key would be real damage.

use crate::harness::*;
use crate::runs::{create_run, runs, wait_run};
use crate::support;
use chroma_sync_operator::crd::CREATE_PENDING_ANNOTATION;
use chroma_sync_standin::{Faults, RunPlan};
use kube::ResourceExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// An S3 SyncSource `files` of keys under `q3/`, which Chroma Sync also syncs by itself on S3
/// events (`autoSync: direct`), Ready; its source id.
async fn s3_source(env: &Env) -> String {
    env.create(
        "files",
        json!({"databaseName": DATABASE, "tokenSecretRef": {"name": TOKEN_SECRET},
            "s3": {"bucketName": "acme-files", "region": "eu-west-1",
                "collectionName": "reports", "awsCredentialId": 7, "pathPrefix": "q3/",
                "autoSync": "direct"}}),
    )
    .await;
    let source = env.wait_reason("files", "SourceReady", SOON).await;
    source.status.unwrap().source_id.unwrap()
}

fn run_of(key: &str) -> Value {
    json!({"sourceRef": {"name": "files"}, "objectKey": key})
}

/// The stand-in's invocations of `source_id`, counted by object key.
fn per_key(env: &Env, source_id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for job in env.standin.invocations(source_id) {
        let key = job["metadata"]["s3"]["object_key"].as_str().unwrap_or("?");
        *counts.entry(key.to_owned()).or_default() += 1;
    }
    counts
}

/// Every create of an invocation is committed, then its answer held for `hold`.
fn hold_creates(hold: Duration) -> Faults {
    Faults {
        endpoints: vec!["create_invocation".into()],
        create_commit_delay_ms: hold.as_millis() as u64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_run_killed_after_its_post_makes_exactly_one_invocation_for_its_key() {
    let mut env = Env::start("s3-once").await;
    let source_id = s3_source(&env).await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 1_000,
        processing_ms: 2_000,
        fail_with: None,
    });
    // The stand-in commits the invocation, then holds the answer: the operator dies in between.
    env.standin
        .set_faults(hold_creates(Duration::from_secs(10)));
    create_run(&env, "report", run_of("q3/report.pdf")).await;
    wait_for("the invocation to be committed", SOON, || async {
        (env.standin.invocations(&source_id).len() == 1).then_some(())
    })
    .await;
    env.kill_operator();
    let killed = runs(&env).get("report").await.unwrap();
    assert!(killed.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(
        killed.status.as_ref().and_then(|s| s.invocation_id.clone()),
        None,
        "killed before the id was recorded"
    );

    env.standin.set_faults(Faults::default());
    let before = env.standin.all_calls();
    env.start_operator();
    let done = wait_run(&env, "report", "Complete", Duration::from_secs(60)).await;
    let invocations = env.standin.invocations(&source_id);
    assert_eq!(
        per_key(&env, &source_id),
        [("q3/report.pdf".to_owned(), 1)].into(),
        "{invocations:?}"
    );
    assert_eq!(
        done.status.unwrap().invocation_id.as_deref(),
        invocations[0]["id"].as_str(),
        "the run records the one invocation"
    );
    let after = env.standin.all_calls();
    let since_restart = |endpoint: &str| {
        after.get(endpoint).copied().unwrap_or_default()
            - before.get(endpoint).copied().unwrap_or_default()
    };
    assert_eq!(env.standin.calls("create_invocation", "*"), 1);
    assert_eq!(
        since_restart("latest_invocations_by_keys"),
        1,
        "recovered by one call"
    );
    assert_eq!(since_restart("list_invocations"), 0, "and no listing");
    env.wait_event(
        "report",
        "Adopted",
        &[invocations[0]["id"].as_str().unwrap()],
    )
    .await;
    println!(
        "s3 kill after the POST: invocations for the key 1, create calls {}, latest-by-keys \
         calls {}, list calls {}, looks {}",
        env.standin.calls("create_invocation", "*"),
        since_restart("latest_invocations_by_keys"),
        since_restart("list_invocations"),
        since_restart("get_invocation"),
    );
}

/// Runs for several keys of one source, the operator killed while creates are held (some
/// committed and unanswered, some not yet sent): exactly one invocation per key, every run
/// Complete on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_for_several_keys_with_a_kill_in_the_middle_make_one_invocation_per_key() {
    let count = setting("S3_RUNS_KEYS", 8) as usize;
    let mut env = Env::start("s3-keys").await;
    let source_id = s3_source(&env).await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 500,
        processing_ms: 1_000,
        fail_with: None,
    });
    env.standin.set_faults(hold_creates(Duration::from_secs(3)));
    let names: Vec<String> = (0..count).map(|i| format!("k{i:02}")).collect();
    for name in &names {
        create_run(&env, name, run_of(&format!("q3/{name}.pdf"))).await;
    }
    // Killed once some creates are committed (their answers held), likely not all.
    wait_for("a first invocation to be committed", SOON, || async {
        (!env.standin.invocations(&source_id).is_empty()).then_some(())
    })
    .await;
    env.kill_operator();
    let committed_at_kill = env.standin.invocations(&source_id).len();
    let mut unrecorded = 0;
    for name in &names {
        let run = runs(&env).get(name).await.unwrap();
        let marked = run.annotations().contains_key(CREATE_PENDING_ANNOTATION);
        let recorded = run.status.and_then(|s| s.invocation_id).is_some();
        unrecorded += usize::from(marked && !recorded);
    }
    assert!(unrecorded >= 1, "the kill landed in a create window");

    env.standin.set_faults(Faults::default());
    let before = env.standin.all_calls();
    env.start_operator();
    let mut recorded = Vec::new();
    for name in &names {
        let run = wait_run(&env, name, "Complete", Duration::from_secs(90)).await;
        recorded.push(run.status.unwrap().invocation_id.unwrap());
    }
    let counts = per_key(&env, &source_id);
    let expected: BTreeMap<String, usize> =
        names.iter().map(|n| (format!("q3/{n}.pdf"), 1)).collect();
    assert_eq!(counts, expected, "exactly one invocation per key");
    recorded.sort();
    recorded.dedup();
    assert_eq!(recorded.len(), count, "each run its own invocation");
    let after = env.standin.all_calls();
    let since_restart = |endpoint: &str| {
        after.get(endpoint).copied().unwrap_or_default()
            - before.get(endpoint).copied().unwrap_or_default()
    };
    let by_keys = since_restart("latest_invocations_by_keys");
    assert!(
        by_keys as usize >= unrecorded,
        "each unrecorded run asked for its key: {by_keys} calls, {unrecorded} runs"
    );
    assert!(
        by_keys as usize <= count,
        "at most one call per marked run: {by_keys}"
    );
    println!(
        "s3 keys | runs {count} | committed at the kill {committed_at_kill} | unrecorded at \
         the kill {unrecorded} | create calls {} | latest-by-keys calls after the restart \
         {by_keys} | list calls after the restart {} | invocations per key: all 1",
        env.standin.calls("create_invocation", "*"),
        since_restart("list_invocations"),
    );
}

/// Runs Chroma Sync starts by itself (S3 auto-sync; here a run created at the stand-in by
/// another client) show in the SyncSource's `status.recentRuns` as `service`, beside the
/// SyncRuns' own as `operator`, and are counted by origin; it costs one list call per S3 source
/// per drift interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_service_starts_itself_show_in_recent_runs_and_metrics() {
    use chroma_sync_operator::crd::RunOrigin;
    let interval = Duration::from_secs(4);
    let mut env = Env::without_operator("s3-recent").await;
    env.extra_args = vec![
        "--drift-interval".into(),
        format!("{}s", interval.as_secs()),
    ];
    let env = env.with_operator();
    let source_id = s3_source(&env).await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 200,
        processing_ms: 300,
        fail_with: None,
    });
    create_run(&env, "ours", run_of("q3/ours.pdf")).await;
    let ours = wait_run(&env, "ours", "Complete", SOON).await;
    let ours_id = ours.status.unwrap().invocation_id.unwrap();
    // The service syncs an object on its own.
    let service = support::chroma::client(env.chroma_url.clone(), CHROMA_TIMEOUT, None);
    let token = chroma_sync_operator::chroma::Token::new(TOKEN).unwrap();
    let payload = chroma_sync_operator::chroma::wire::CreateJobPayload {
        object_key: Some("q3/auto.pdf".into()),
        ..Default::default()
    };
    let auto_id = service
        .create_invocation(&token, &source_id, &payload)
        .await
        .unwrap();

    let recent = wait_for("both runs in status.recentRuns", SOON, || async {
        let recent = env.get("files").await.status?.recent_runs;
        (recent.len() == 2 && recent.iter().all(|r| r.phase.is_some_and(|p| p.is_final())))
            .then_some(recent)
    })
    .await;
    let shown: Vec<(&str, Option<&str>, RunOrigin)> = recent
        .iter()
        .map(|r| (r.invocation_id.as_str(), r.object_key.as_deref(), r.origin))
        .collect();
    assert_eq!(
        shown,
        [
            (auto_id.as_str(), Some("q3/auto.pdf"), RunOrigin::Service),
            (ours_id.as_str(), Some("q3/ours.pdf"), RunOrigin::Operator),
        ],
        "newest first"
    );
    assert!(
        recent
            .iter()
            .all(|r| r.created_at.is_some() && r.finished_at.is_some())
    );
    let metrics = env.scrape_metrics().await;
    for origin in ["service", "operator"] {
        let series =
            format!("chroma_sync_operator_invocations_seen_total{{origin=\"{origin}\"}} 1");
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }

    // The cost: one list call per S3 source per interval, and no write while nothing changes.
    let lists = env.standin.calls("list_invocations", "*");
    let watched = Duration::from_secs(12);
    tokio::time::sleep(watched).await;
    let lists = env.standin.calls("list_invocations", "*") - lists;
    let intervals = (watched.as_secs_f64() / (interval.as_secs_f64() * 0.9)).ceil() as u64;
    assert!(
        (1..=intervals).contains(&lists),
        "{lists} list calls in {watched:?} at a {interval:?} interval"
    );
    assert_eq!(
        env.get("files").await.status.unwrap().recent_runs,
        recent,
        "unchanged"
    );
    println!(
        "recent runs: {} shown (service 1, operator 1); {lists} list calls in {} s at a {} s \
         drift interval",
        recent.len(),
        watched.as_secs(),
        interval.as_secs()
    );
}
