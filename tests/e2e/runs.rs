//! SyncRuns on the real control plane against the stand-in: one invocation per run, followed to
//! its end at a cost of a few looks, never looked at again once finished (not even after a
//! restart); waiting for its source; refused before any call when it does not fit its source;
//! a lost answer recovered without a second invocation; a pending run cancelled on delete.

use crate::harness::*;
use chroma_sync_operator::crd::run::{RunPhase, SyncRun};
use chroma_sync_standin::{Faults, RunPlan};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

pub(crate) fn runs(env: &Env) -> Api<SyncRun> {
    Api::namespaced(env.client.clone(), &env.ns)
}

pub(crate) async fn create_run(env: &Env, name: &str, spec: Value) -> SyncRun {
    let run = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    runs(env)
        .create(&PostParams::default(), &run)
        .await
        .expect("create the SyncRun")
}

/// Waits until the run's Ready condition has `reason` (for its current generation).
pub(crate) async fn wait_run(env: &Env, name: &str, reason: &str, timeout: Duration) -> SyncRun {
    let what = format!("SyncRun {name} to reach reason {reason}");
    wait_for(&what, timeout, || async {
        let run = runs(env).get(name).await.ok()?;
        let status = run.status.as_ref()?;
        let current = status.observed_generation == run.metadata.generation;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (current && ready.reason == reason).then_some(run)
    })
    .await
}

fn run_spec(collection: &str) -> Value {
    json!({"sourceRef": {"name": "docs"}, "targetCollectionName": collection,
           "ref": {"branch": "main"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_from_pending_to_complete_with_one_invocation_and_few_looks() {
    let mut env = Env::start("runs").await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 1_000,
        processing_ms: 3_000,
        fail_with: None,
    });
    // A run may come before its source: it waits, then runs.
    create_run(&env, "first", run_spec("docs-main")).await;
    wait_run(&env, "first", "WaitingForSource", SOON).await;
    assert_eq!(env.standin.calls("create_invocation", "*"), 0);
    env.create("docs", github("acme/runs")).await;
    let source = env.wait_reason("docs", "SourceReady", SOON).await;
    let source_id = source.status.unwrap().source_id.unwrap();
    let source_reads = |audit: Vec<Value>| {
        audit
            .iter()
            .filter(|e| e["verb"] == "get" && e["objectRef"]["name"] == "docs")
            .count()
    };
    let reads_at_ready = source_reads(env.audit("syncsources").await);

    let done = wait_run(&env, "first", "Complete", Duration::from_secs(60)).await;
    // Once its source is Ready, the run reads it from the operator's cache at every look.
    let reads = source_reads(env.audit("syncsources").await) - reads_at_ready;
    assert_eq!(reads, 0, "GETs of the Ready SyncSource while the run went");
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Complete));
    assert_eq!(status.source_id.as_deref(), Some(source_id.as_str()));
    let invocations = env.standin.invocations(&source_id);
    assert_eq!(invocations.len(), 1, "one invocation: {invocations:?}");
    assert_eq!(
        invocations[0]["id"].as_str(),
        status.invocation_id.as_deref()
    );
    assert!(status.duration_ms.is_some_and(|d| d >= 3_000), "{status:?}");
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let looks = env.standin.calls("get_invocation", "*");
    // A 4 s run: looks at about 2 s and 4 s (and one more if the first comes early).
    assert!((1..=4).contains(&looks), "{looks} looks at a 4 s run");
    assert_eq!(env.standin.calls("create_invocation", "*"), 1);

    // At rest, and after a restart: a finished run costs no call and no write.
    let writes = |audit: Vec<Value>| {
        audit
            .iter()
            .filter(|e| e["verb"] == "patch" || e["verb"] == "update")
            .count()
    };
    let writes_before = writes(env.audit("syncruns").await);
    env.kill_operator();
    env.start_operator();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(env.standin.calls("get_invocation", "*"), looks);
    assert_eq!(writes(env.audit("syncruns").await), writes_before);
    println!("a 4 s run: {looks} looks; 0 calls and 0 writes at rest and after a restart");

    // The same collection again: the service refuses a second finished sync (409), and the
    // run says so as Failed, without retrying.
    create_run(&env, "again", run_spec("docs-main")).await;
    let again = wait_run(&env, "again", "InvocationExists", SOON).await;
    assert_eq!(again.status.unwrap().phase, Some(RunPhase::Failed));
    assert_eq!(env.standin.calls("create_invocation", "409"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_do_not_fit_lost_answers_and_deletes_of_pending_runs() {
    let env = Env::start("runs-edge").await;
    env.create("docs", github("acme/runs-edge")).await;
    let source = env.wait_reason("docs", "SourceReady", SOON).await;
    let source_id = source.status.unwrap().source_id.unwrap();

    // Refused before any call, naming the field.
    create_run(
        &env,
        "no-ref",
        json!({"sourceRef": {"name": "docs"}, "targetCollectionName": "c"}),
    )
    .await;
    let refused = wait_run(&env, "no-ref", "InvalidSpec", SOON).await;
    let stalled = refused.status.unwrap().conditions;
    let message = &stalled
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message;
    assert!(message.contains("spec.ref"), "{message}");
    assert_eq!(env.standin.calls("create_invocation", "*"), 0);

    // The answer to the create is lost (the connection cut after the work): the run finds its
    // invocation by listing, and there is still exactly one.
    env.standin.set_run_plan(RunPlan {
        pending_ms: 60_000,
        processing_ms: 1_000,
        fail_with: None,
    });
    env.standin.set_faults(Faults {
        endpoints: vec!["create_invocation".into()],
        drop_next: 1,
        ..Default::default()
    });
    create_run(&env, "lost", run_spec("lost")).await;
    let lost = wait_run(&env, "lost", "Pending", SOON).await;
    assert_eq!(env.standin.invocations(&source_id).len(), 1);
    assert_eq!(env.standin.calls("create_invocation", "*"), 1);
    assert!(env.standin.calls("list_invocations", "200") >= 1);
    let id = lost.status.unwrap().invocation_id.unwrap();

    // Deleting a pending run cancels its invocation.
    runs(&env)
        .delete("lost", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the run to be gone", SOON, || async {
        runs(&env)
            .get_opt("lost")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let invocation = env.standin.invocations(&source_id).remove(0);
    assert_eq!(invocation["id"], id.as_str());
    assert_eq!(invocation["status"], "cancelled");
    assert_eq!(env.standin.calls("cancel_invocation", "202"), 1);
}

/// SIGKILL storm over a burst of runs: the operator is killed at seeded random moments while
/// SyncRuns are created, with the stand-in holding every create's answer for a while (so kills
/// land in the create window). Afterwards every run is Complete with exactly one invocation
/// (each run has a collection of its own, so a duplicate would show as a second invocation
/// there): 0 duplicates, 0 runs lost. `make reliability` runs a large one (RUNS_CHAOS_RUNS,
/// RUNS_CHAOS_KILLS, RUNS_CHAOS_SEED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_over_runs_leaves_exactly_one_invocation_per_run() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let seed = setting("RUNS_CHAOS_SEED", 5);
    let count = setting("RUNS_CHAOS_RUNS", 30) as usize;
    let kills = setting("RUNS_CHAOS_KILLS", 4) as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut env = Env::start("runs-chaos").await;
    let mut report = Report::new("SIGKILL storm over runs", Some(seed), &env.standin);
    report.set("objects", count);
    report.set("kills", kills);
    report.set("invariant", "one invocation per run, every run Complete");
    env.create("docs", github("acme/runs-chaos")).await;
    let source = env.wait_reason("docs", "SourceReady", SOON).await;
    let source_id = source.status.unwrap().source_id.unwrap();
    env.standin.set_run_plan(RunPlan {
        pending_ms: 500,
        processing_ms: 1_500,
        fail_with: None,
    });
    env.standin.set_faults(Faults {
        endpoints: vec!["create_invocation".into()],
        create_commit_delay_ms: 600,
        ..Default::default()
    });

    let started = std::time::Instant::now();
    let per_batch = count.div_ceil(kills + 1);
    let names: Vec<String> = (0..count).map(|i| format!("r{i:04}")).collect();
    for (round, batch) in names.chunks(per_batch).enumerate() {
        for name in batch {
            create_run(&env, name, run_spec(name)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        if round < kills {
            env.kill_operator();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            env.start_operator();
        }
    }
    env.standin.set_faults(Faults::default());
    let lists_before_settling = env.standin.calls("list_invocations", "*");

    let timeout = Duration::from_secs(60 + count as u64 / 5);
    let mut recorded = Vec::new();
    for name in &names {
        let run = wait_run(&env, name, "Complete", timeout).await;
        recorded.push(run.status.unwrap().invocation_id.unwrap());
    }
    let converged = started.elapsed();
    report.set("converge_secs", converged.as_secs_f64());

    let invocations = env.standin.invocations(&source_id);
    for name in &names {
        let theirs: Vec<&Value> = invocations
            .iter()
            .filter(|i| i["metadata"]["collection_name"] == name.as_str())
            .collect();
        assert_eq!(theirs.len(), 1, "{name}: invocations {theirs:?}");
    }
    assert_eq!(invocations.len(), count, "no invocation beyond one per run");
    let mut distinct = recorded.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        count,
        "no two runs record the same invocation"
    );
    let creates = env.standin.calls("create_invocation", "*");
    let lists = env.standin.calls("list_invocations", "*");
    let looks = env.standin.calls("get_invocation", "*");
    report.set("create_invocation_calls", creates);
    report.set("list_invocation_calls", lists);
    report.set("looks_per_run", looks as f64 / count as f64);
    println!(
        "runs chaos | seed {seed} | runs {count} | kills {kills} | create calls {creates} | \
         list calls {lists} ({lists_before_settling} during the storm) | looks {looks} \
         ({:.1} per run) | all Complete in {:.1} s",
        looks as f64 / count as f64,
        converged.as_secs_f64()
    );
    report.pass();
}

/// After a SIGKILL every unfinished run looks at its invocation at once: the runs of one
/// source share a paged listing of its invocations instead of a GET each. The invocations all
/// move on while the operator is down, so each run's first look after the restart shows in its
/// status (Processing); the calls made until then are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_unfinished_runs_are_refreshed_by_listing_not_a_get_each() {
    let count = setting("RUNS_REFRESH_RUNS", 40) as usize;
    let mut env = Env::start("runs-refresh").await;
    let pending = Duration::from_secs(15);
    env.standin.set_run_plan(RunPlan {
        pending_ms: pending.as_millis() as u64,
        processing_ms: 600_000,
        fail_with: None,
    });
    env.create("docs", github("acme/refresh")).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    let names: Vec<String> = (0..count).map(|i| format!("r{i:03}")).collect();
    for name in &names {
        create_run(&env, name, run_spec(name)).await;
    }
    for name in &names {
        wait_run(&env, name, "Pending", SOON).await;
    }
    let created = std::time::Instant::now();
    env.kill_operator();
    // Every invocation has started while the operator was down.
    tokio::time::sleep(pending + Duration::from_secs(1)).await;
    let standin = env.standin.clone();
    let calls = |endpoint| standin.calls(endpoint, "*");
    let (gets, lists) = (calls("get_invocation"), calls("list_invocations"));
    env.start_operator();
    for name in &names {
        wait_run(&env, name, "Processing", SOON).await;
    }
    let refreshed = created.elapsed();
    let gets = calls("get_invocation") - gets;
    let lists = calls("list_invocations") - lists;
    println!(
        "{count} unfinished runs of one source after a SIGKILL: {lists} list calls and {gets} \
         GETs until every run showed its new phase ({:.1} s after the kill)",
        refreshed.as_secs_f64()
    );
    // One page per 100 runs, a few passes as the runs come from the watch (more on a loaded
    // machine, where they trickle in); a GET only for a run that looked alone. Either way far
    // fewer calls than a GET per run.
    assert!(lists <= 6, "{lists} list calls");
    assert!(
        gets + lists < (count as u64) / 4,
        "{gets} GETs, {lists} lists"
    );
}

/// `spec.sync`: a new source starts one run (owned by it, writing a collection of its own);
/// a GitOps-style bump of `ref.sha` starts exactly one more; the history limit prunes the older
/// one; `status.lastSync` follows the newest; and once every run is finished the SyncSource is
/// at rest again (no write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_sync_starts_one_run_per_change_and_keeps_the_history_short() {
    let env = Env::start("sync").await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 500,
        processing_ms: 1_000,
        fail_with: None,
    });
    let mut spec = github("acme/sync");
    spec["sync"] = json!({"targetCollectionName": "docs", "ref": {"branch": "main"},
                          "successfulRunsHistoryLimit": 1});
    env.create("docs", spec).await;
    let source = env.wait_reason("docs", "SourceReady", SOON).await;
    let source_id = source.status.unwrap().source_id.unwrap();

    let last_sync = |phase: RunPhase| {
        let env = &env;
        async move {
            let status = env.get("docs").await.status?;
            let last = status.last_sync?;
            (last.phase == Some(phase)).then_some(last)
        }
    };
    let first = wait_for(
        "the first sync run to complete",
        Duration::from_secs(60),
        || last_sync(RunPhase::Complete),
    )
    .await;
    let run = runs(&env).get(&first.name).await.unwrap();
    let owner = &run.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SyncSource", "docs")
    );
    assert_eq!(owner.controller, Some(true));
    let collection = first.collection_name.clone().unwrap();
    assert!(collection.starts_with("docs-"), "{collection}");
    assert_eq!(env.standin.invocations(&source_id).len(), 1);

    // A GitOps user bumps the commit: exactly one new run, into a collection of its own.
    env.merge_spec(
        "docs",
        json!({"sync": {"ref": {"branch": null, "sha": "0a1b2c3d"}}}),
    )
    .await;
    let second = wait_for(
        "the second sync run to complete",
        Duration::from_secs(60),
        || {
            let first = first.name.clone();
            let last = last_sync(RunPhase::Complete);
            async move { last.await.filter(|l| l.name != first) }
        },
    )
    .await;
    assert_ne!(second.collection_name, first.collection_name);
    assert_eq!(
        env.standin.invocations(&source_id).len(),
        2,
        "one run per change"
    );
    assert_eq!(env.standin.calls("create_invocation", "409"), 0);
    // History limit 1: the older complete run goes.
    wait_for("the older run to be pruned", SOON, || async {
        runs(&env)
            .get_opt(&first.name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let names: Vec<String> = runs(&env)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    assert_eq!(names, std::slice::from_ref(&second.name));

    // At rest: nothing is written to the SyncSource any more.
    let writes = |audit: Vec<Value>| audit.iter().filter(|e| e["verb"] == "patch").count();
    let before = writes(env.audit("syncsources").await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(writes(env.audit("syncsources").await), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_can_be_paused_and_asked_to_look_now() {
    use chroma_sync_operator::crd::{PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION};
    use kube::api::{Patch, PatchParams};
    let env = Env::start("runs-intent").await;
    env.standin.set_run_plan(RunPlan {
        pending_ms: 500,
        processing_ms: 1_000,
        fail_with: None,
    });
    env.create("docs", github("acme/intent")).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    create_run(&env, "r", run_spec("docs-intent")).await;
    wait_run(&env, "r", "Complete", Duration::from_secs(60)).await;
    let annotate = |key: &'static str, value: Option<&'static str>| {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        let runs = runs(&env);
        async move {
            runs.patch("r", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("annotate the run")
        }
    };

    // Reconcile-now on a finished run: one look, and the token echoed.
    let looks = env.standin.calls("get_invocation", "*");
    annotate(RECONCILE_REQUEST_ANNOTATION, Some("look-1")).await;
    wait_for("the run to echo look-1", SOON, || async {
        let run = runs(&env).get("r").await.ok()?;
        (run.status?.last_handled_reconcile_at.as_deref() == Some("look-1")).then_some(())
    })
    .await;
    assert_eq!(env.standin.calls("get_invocation", "*"), looks + 1);

    // Paused: the status says so (Ready as it was), and a request is not acted on.
    annotate(PAUSED_ANNOTATION, Some("true")).await;
    let paused = wait_run(&env, "r", "Paused", SOON).await;
    let ready = paused.status.as_ref().unwrap().conditions[0].clone();
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );
    let calls = env.standin.all_calls();
    annotate(RECONCILE_REQUEST_ANNOTATION, Some("look-2")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.standin.all_calls(), calls, "no call while paused");
    let run = runs(&env).get("r").await.unwrap();
    assert_eq!(
        run.status.unwrap().last_handled_reconcile_at.as_deref(),
        Some("look-1")
    );

    // Resumed: the request is handled and the run reads Complete again.
    annotate(PAUSED_ANNOTATION, None).await;
    wait_run(&env, "r", "Complete", SOON).await;
    wait_for("the run to echo look-2", SOON, || async {
        let run = runs(&env).get("r").await.ok()?;
        (run.status?.last_handled_reconcile_at.as_deref() == Some("look-2")).then_some(())
    })
    .await;
}
