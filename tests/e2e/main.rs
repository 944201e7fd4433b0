//! End-to-end tests on the real kube-apiserver and etcd that `make test` starts, with the local
//! Chroma Sync stand-in and the operator binary. Each test has its own namespace.

mod chaos;
mod chroma_faults;
#[path = "../support/cli.rs"]
mod cli;
mod harness;
mod install;
mod kube_faults;
mod leader;
mod orphans;
mod proxy;
mod rbac;
mod runs;
mod sharding;

use chroma_sync_operator::crd::{CREATE_PENDING_ANNOTATION, FINALIZER};
use chroma_sync_operator::standin::{Faults, Tokens};
use harness::*;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

/// Every case of `tests/corpus/invalid/` is refused at admission with a message that names the
/// field (the case's `expect`). Prints the table of case -> outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_the_invalid_corpus_with_field_messages() {
    let env = Env::without_operator("admission").await;
    let raw: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<chroma_sync_operator::crd::SyncSource>(&()),
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the corpus has {} cases", files.len());
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for path in &files {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let expected = case["expect"].as_str().unwrap();
        let obj: kube::api::DynamicObject = serde_json::from_value(case["object"].clone()).unwrap();
        let outcome = match raw.create(&PostParams::default(), &obj).await {
            Ok(_) => "ACCEPTED".to_owned(),
            Err(kube::Error::Api(status)) => format!("{} {}", status.code, status.message),
            Err(e) => format!("error {e}"),
        };
        if !(outcome.starts_with("422 ") && outcome.contains(expected)) {
            wrong.push(format!(
                "{name}: expected 422 naming {expected:?}, got {outcome}"
            ));
        }
        let shown: String = outcome.chars().take(150).collect();
        table.push(format!("{name:<42} | {shown}"));
    }
    println!("case | outcome\n{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A valid object is accepted and reads as in progress, never ready, before the operator looks.
    let ok = env.create("valid", github("acme/valid")).await;
    assert_eq!(ok.status.unwrap().observed_generation, Some(-1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_records_the_source_id_and_then_rests() {
    let env = Env::start("create").await;
    env.create("docs", github("acme/docs")).await;
    let o = env.wait_reason("docs", "SourceReady", SOON).await;

    let ids = env.source_ids();
    assert_eq!(ids.len(), 1, "exactly one source");
    let status = o.status.clone().unwrap();
    assert_eq!(status.source_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(condition(&o, "Ready").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Stalled"), None);
    assert_eq!(condition(&o, "Reconciling"), None);
    assert!(o.finalizers().contains(&FINALIZER.to_owned()));
    assert!(o.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    assert_eq!(env.standin.calls("create_source", "*"), 1);
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "the normal path lists nothing"
    );

    // The payload that reached the service is the spec, in the service's spelling.
    let (_, body) = &env.standin.sources(DATABASE)[0];
    assert_eq!(
        body,
        &json!({"database_name": DATABASE, "github": {"repository": "acme/docs"}})
    );
    // The floor: one guarded metadata write (finalizer + mark), one status write, and no Event
    // (a create is recorded in status; Events are for what status does not say).
    let writes: Vec<_> = env
        .audited("docs")
        .await
        .into_iter()
        .filter(|(verb, _)| matches!(verb.as_str(), "patch" | "update"))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("patch".to_owned(), String::new()),
            ("patch".to_owned(), "status".to_owned())
        ]
    );
    let events: Vec<_> = env
        .audit("events")
        .await
        .into_iter()
        .filter(|e| e["verb"] == "create")
        .collect();
    assert!(events.is_empty(), "Events on the normal path: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_stalls_without_retrying() {
    let env = Env::start("conflict").await;
    env.standin
        .insert_source(json!({"database_name": DATABASE, "github": {"repository": "acme/taken"}}));
    env.create("taken", github("acme/taken")).await;
    let o = env.wait_reason("taken", "SourceExists", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Ready").as_deref(), Some("False"));
    let status = o.status.clone().unwrap();
    let last = status.last_error.unwrap();
    assert_eq!(last.http_status, Some(409));
    assert_eq!(last.message, "Source exists");
    assert_eq!(status.source_id, None);
    assert!(
        !o.annotations().contains_key(CREATE_PENDING_ANNOTATION),
        "a definite 409 clears the create mark"
    );
    env.wait_event("taken", "SourceExists", &["Source exists"])
        .await;
    // It waits for a spec change: no further calls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.standin.calls("create_source", "*"), 1);

    // A spec change that resolves the conflict goes through.
    env.merge_spec("taken", json!({"github": {"repository": "acme/free"}}))
        .await;
    let o = env.wait_reason("taken", "SourceReady", SOON).await;
    assert!(o.status.unwrap().last_error.is_none());
    assert_eq!(env.source_ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_recorded_as_invalid_spec() {
    let env = Env::start("invalid").await;
    env.standin.set_faults(Faults {
        fail_next: 1,
        error_status: 400,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("bad", github("acme/bad")).await;
    let o = env.wait_reason("bad", "InvalidSpec", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(o.status.unwrap().last_error.unwrap().http_status, Some(400));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.standin.calls("create_source", "*"), 1, "no retry loop");
    assert!(env.source_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_success_converge_to_one_source() {
    let env = Env::start("retry").await;
    env.standin.set_faults(Faults {
        fail_next: 3,
        error_status: 503,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("flaky", github("acme/flaky")).await;
    let o = env
        .wait_reason("flaky", "SourceReady", Duration::from_secs(60))
        .await;
    assert_eq!(env.source_ids(), vec![o.status.unwrap().source_id.unwrap()]);
    assert_eq!(env.standin.calls("create_source", "503"), 3);
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    // After an ambiguous 503 the operator looks before it creates again.
    assert_eq!(env.standin.calls("list_sources", "200"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_source_and_retain_keeps_it() {
    let env = Env::start("delete").await;
    env.create("gone", github("acme/gone")).await;
    let mut kept = github("acme/kept");
    kept["deletionPolicy"] = json!("Retain");
    env.create("kept", kept).await;
    env.wait_reason("gone", "SourceReady", SOON).await;
    let k = env.wait_reason("kept", "SourceReady", SOON).await;
    assert_eq!(env.source_ids().len(), 2);

    env.delete("gone").await;
    env.delete("kept").await;
    env.wait_gone("gone", SOON).await;
    env.wait_gone("kept", SOON).await;
    assert_eq!(env.source_ids(), vec![k.status.unwrap().source_id.unwrap()]);
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_object_that_never_got_a_source_does_not_hang() {
    let env = Env::start("never").await;
    env.standin
        .insert_source(json!({"database_name": DATABASE, "github": {"repository": "acme/other"}}));
    env.create("never", github("acme/other")).await;
    env.wait_reason("never", "SourceExists", SOON).await;
    env.delete("never").await;
    env.wait_gone("never", SOON).await;
    assert_eq!(
        env.source_ids().len(),
        1,
        "someone else's source is left alone"
    );
    assert_eq!(env.standin.calls("delete_source", "*"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_replaces_the_source() {
    let env = Env::start("replace").await;
    env.create(
        "site",
        json!({
            "databaseName": DATABASE,
            "webScrape": {"startingUrl": "https://docs.example.com", "maxDepth": 1},
            "tokenSecretRef": {"name": TOKEN_SECRET},
        }),
    )
    .await;
    let first = env.wait_reason("site", "SourceReady", SOON).await;
    let old = first.status.unwrap().source_id.unwrap();

    // A field that is not sent to the service changes nothing in Chroma.
    env.merge_spec("site", json!({"deletionPolicy": "Retain"}))
        .await;
    let same = env.wait_reason("site", "SourceReady", SOON).await;
    assert_eq!(
        same.status.unwrap().source_id.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(env.standin.calls("create_source", "*"), 1);

    env.merge_spec(
        "site",
        json!({"webScrape": {"maxDepth": 3}, "deletionPolicy": "Delete"}),
    )
    .await;
    let o = env.wait_reason("site", "SourceReady", SOON).await;
    let new = o.status.unwrap().source_id.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        env.source_ids(),
        vec![new.clone()],
        "never more than one live source"
    );
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "a replacement needs no search"
    );
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
    let (_, body) = &env.standin.sources(DATABASE)[0];
    assert_eq!(body["web_scrape"]["max_depth"], json!(3));
    env.wait_event("site", "Replaced", &[&old, &new]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_the_create_window_leaves_exactly_one_source() {
    let mut env = Env::start("crash").await;
    // The stand-in commits the source, then holds the answer: the operator dies in between.
    env.standin.set_faults(Faults {
        create_commit_delay_ms: 5_000,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("window", github("acme/window")).await;
    wait_for("the source to be committed", SOON, || async {
        (env.source_ids().len() == 1).then_some(())
    })
    .await;
    env.kill_operator();
    let o = env.get("window").await;
    assert!(o.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    assert_eq!(o.status.as_ref().and_then(|s| s.source_id.clone()), None);

    env.standin.set_faults(Faults::default());
    env.start_operator();
    let o = env.wait_reason("window", "SourceReady", SOON).await;
    let ids = env.source_ids();
    assert_eq!(ids.len(), 1, "no duplicate after the crash");
    assert_eq!(
        o.status.unwrap().source_id.as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "recovery creates nothing"
    );
    assert_eq!(
        env.standin.calls("list_sources", "200"),
        1,
        "recovery costs one list"
    );
    env.wait_event("window", "Adopted", &[&ids[0]]).await;
    let events = env.events("window").await;
    assert!(
        events.iter().all(|(r, _)| r != "MissingCredentials"),
        "a restart must not report an existing token missing: {events:?}"
    );

    // And the recovered source is the one deletion removes.
    env.delete("window").await;
    env.wait_gone("window", SOON).await;
    assert!(env.source_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_missing_wrong_then_rotated() {
    let env = Env::start("token").await;
    let mut spec = github("acme/tok");
    spec["tokenSecretRef"] = json!({"name": "later"});
    env.create("tok", spec).await;
    let o = env.wait_reason("tok", "MissingCredentials", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(env.standin.calls("create_source", "*"), 0);

    // The Secret appears, with a wrong token: 401, Stalled, retried only on the slow backoff
    // (and whenever the Secret changes). (A Secret of its own: switching the object to the
    // admin's Secret while rewriting that one would race the cache of its old value.)
    env.put_secret("later", "wrong-token").await;
    let o = env.wait_reason("tok", "Unauthorized", SOON).await;
    assert_eq!(o.status.unwrap().last_error.unwrap().http_status, Some(401));

    // A viewer's token: 403.
    env.put_secret("later", VIEWER_TOKEN).await;
    env.wait_reason("tok", "Forbidden", SOON).await;

    // Rotation to a good token takes effect at once, without a restart.
    env.put_secret("later", TOKEN).await;
    env.wait_reason("tok", "SourceReady", Duration::from_secs(20))
        .await;
    assert_eq!(env.source_ids().len(), 1);

    // No token value anywhere it could leak.
    let o = env.get("tok").await;
    let dump = serde_json::to_string(&o).unwrap();
    let log = env.operator_log();
    let events = format!("{:?}", env.events("tok").await);
    for t in [TOKEN, VIEWER_TOKEN, "wrong-token"] {
        assert!(
            !dump.contains(t) && !log.contains(t) && !events.contains(t),
            "{t} leaked"
        );
    }
    env.standin.set_tokens(Tokens::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_reported_and_retried_slowly() {
    let env = Env::start("nodb").await;
    let mut spec = github("acme/nodb");
    spec["databaseName"] = json!("missing");
    env.create("nodb", spec).await;
    let o = env.wait_reason("nodb", "DatabaseNotFound", SOON).await;
    assert_eq!(condition(&o, "Reconciling").as_deref(), Some("True"));
    assert_eq!(condition(&o, "Stalled"), None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.standin.calls("create_source", "*"),
        1,
        "long backoff, not a loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_rest_a_minute_passes_without_writes_or_calls() {
    let env = Env::start("rest").await;
    for i in 0..3 {
        env.create(&format!("r{i}"), github(&format!("acme/rest-{i}")))
            .await;
    }
    for i in 0..3 {
        env.wait_reason(&format!("r{i}"), "SourceReady", SOON).await;
    }
    let snapshot = |objs: Vec<chroma_sync_operator::crd::SyncSource>| {
        objs.into_iter()
            .map(|o| (o.name_any(), o.resource_version()))
            .collect::<Vec<_>>()
    };
    let before = snapshot(env.api().list(&Default::default()).await.unwrap().items);
    let calls_before = env.standin.all_calls();
    let events_before = env.events("r0").await.len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = snapshot(env.api().list(&Default::default()).await.unwrap().items);
    assert_eq!(before, after, "no object was written");
    assert_eq!(calls_before, env.standin.all_calls(), "no Chroma call");
    assert_eq!(events_before, env.events("r0").await.len(), "no event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_report_what_happened() {
    let env = Env::start("metrics").await;
    let base = env.metrics_url().await;
    chroma_sync_operator::chroma::install_crypto_provider();
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    wait_for("/readyz to answer 200", SOON, || async {
        (get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    env.create("m", github("acme/metrics")).await;
    env.wait_reason("m", "SourceReady", SOON).await;
    let (status, text) = get("/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        text.contains(
            r#"chroma_sync_operator_chroma_requests_total{endpoint="create_source",code="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("chroma_sync_operator_reconciles_total"),
        "{text}"
    );
    assert!(
        text.contains("chroma_sync_operator_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "no secret in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let env = Env::start("ratelimit").await;
    env.standin.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_secs: 4,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("rl", github("acme/ratelimited")).await;
    let o = env.wait_reason("rl", "RateLimited", SOON).await;
    assert_eq!(condition(&o, "Reconciling").as_deref(), Some("True"));
    let limited_at = std::time::Instant::now();
    env.wait_reason("rl", "SourceReady", SOON).await;
    let waited = limited_at.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "retried after {waited:?}, before Retry-After"
    );
    assert_eq!(env.standin.calls("create_source", "429"), 1);
    assert_eq!(env.standin.calls("create_source", "201"), 1);
    assert_eq!(
        env.standin.calls("list_sources", "*"),
        0,
        "a 429 created nothing: no search"
    );
    assert_eq!(env.source_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_create_in_flight_and_starts_no_other() {
    let mut env = Env::start("sigterm").await;
    env.standin.set_faults(Faults {
        latency_ms: 3_000,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_a_handover_without_duplicates() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = Env::without_operator("ha").await;
    let (log_a, log_b) = (env.log_path("a"), env.log_path("b"));
    let mut a = env.spawn_operator("replica-a", &log_a);
    wait_for("replica a to lead", SOON, || async {
        std::fs::read_to_string(&log_a)
            .ok()?
            .contains("acquired leadership")
            .then_some(())
    })
    .await;
    let mut b = env.spawn_operator("replica-b", &log_b);
    wait_for("replica b to stand by", SOON, || async {
        std::fs::read_to_string(&log_b)
            .ok()?
            .contains("standing by")
            .then_some(())
    })
    .await;

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
    env.standin.set_faults(Faults {
        create_commit_delay_ms: 3_000,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("two", github("acme/ha-two")).await;
    wait_for("the second create to commit", SOON, || async {
        (env.source_ids().len() == 2).then_some(())
    })
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = std::time::Instant::now();
    env.standin.set_faults(Faults::default());
    wait_for("replica b to lead", SOON, || async {
        std::fs::read_to_string(&log_b)
            .ok()?
            .contains("acquired leadership")
            .then_some(())
    })
    .await;
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
    kill_term(&b);
    assert!(b.wait().unwrap().success());
    let released = leases.get(&lease).await.unwrap();
    assert_eq!(released.spec.unwrap().holder_identity, None);
}

async fn lease_writes(env: &Env) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kubeconfig = std::path::PathBuf::from(std::env::var_os("KUBECONFIG").unwrap());
    let log = std::fs::read_to_string(kubeconfig.with_file_name("audit.log")).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["objectRef"]["resource"] == "leases"
                && e["objectRef"]["namespace"] == env.ns.as_str()
                && e["verb"] == "update"
        })
        .count()
}

fn kill_term(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_logs_at_trace_level_events_or_status() {
    use base64::Engine;
    let mut env = Env::without_operator("trace").await;
    env.log_filter = "trace".into();
    let wrong = "wrong-token-7f3a9c";
    env.put_token_secret(wrong).await;
    let env = env.with_operator();
    env.create("t", github("acme/trace")).await;
    env.wait_reason("t", "Unauthorized", SOON).await;
    // The Warning Event exists, so the search below looks at a real one.
    env.wait_event("t", "Unauthorized", &["401"]).await;
    env.put_token_secret(TOKEN).await;
    env.wait_reason("t", "SourceReady", SOON).await;
    env.delete("t").await;
    env.wait_gone("t", SOON).await;

    let log = env.operator_log();
    assert!(log.lines().count() > 200, "trace logging is on");
    let events = format!("{:?}", env.events("t").await);
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [TOKEN, wrong] {
        for form in [secret.to_owned(), b64.encode(secret)] {
            assert!(!log.contains(&form), "{form} is in the trace log");
            assert!(!events.contains(&form), "{form} is in an event");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_garbled_201_is_recovered_without_a_duplicate() {
    let env = Env::start("lost201").await;
    // The first create's connection is cut after the commit; the second's 201 is truncated JSON.
    env.standin.set_faults(Faults {
        drop_next: 1,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("cut", github("acme/cut")).await;
    let cut = env.wait_reason("cut", "SourceReady", SOON).await;
    env.standin.set_faults(Faults {
        garble_next: 1,
        endpoints: vec!["create_source".into()],
        ..Default::default()
    });
    env.create("garbled", github("acme/garbled")).await;
    let garbled = env.wait_reason("garbled", "SourceReady", SOON).await;

    let ids = env.source_ids();
    assert_eq!(ids.len(), 2, "one source each, no duplicate");
    for o in [cut, garbled] {
        let id = o.status.unwrap().source_id.unwrap();
        assert!(ids.contains(&id));
    }
    assert_eq!(
        env.standin.calls("create_source", "*"),
        2,
        "recovered by listing, not by creating again"
    );
    assert_eq!(env.standin.calls("list_sources", "200"), 2);
    env.wait_event("cut", "Adopted", &[]).await;
    env.wait_event("garbled", "Adopted", &[]).await;
}

/// On a control plane of its own: the apiserver, then etcd, restarted under a running operator;
/// RESTART_OBJECTS (1) objects are created after each restart and must become Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_apiserver_and_etcd_restarts() {
    let cluster = PrivateCluster::start("restarts");
    let mut env = Env::on_private_cluster("restarts", &cluster).await;
    // What rides out the outage here is the watches and reconciles. A Lease that cannot be
    // renewed for the renew deadline (10 s; an etcd restart can take that long) ends leadership
    // and the process, by design (the pod restarts): the silent-path test covers that.
    env.leader_election = false;
    let per_restart = setting("RESTART_OBJECTS", 1) as usize;
    let mut report = Report::new("apiserver + etcd restarts", None, &env.standin);
    report.set("objects", 1 + 2 * per_restart);
    report.set("deleted", 1);
    report.set(
        "invariant",
        "one source per object, objects made after each restart Ready, no operator restart",
    );
    env.start_operator();
    env.create("before", github("acme/before")).await;
    env.wait_reason("before", "SourceReady", SOON).await;

    // After each restart (the component is serving again when `restart` returns): new objects,
    // and how long until they are all Ready.
    let mut converge = Vec::new();
    for component in ["kube-apiserver", "etcd"] {
        cluster.restart(component);
        let back = std::time::Instant::now();
        let names: Vec<String> = (0..per_restart)
            .map(|i| format!("after-{component}-{i:03}"))
            .collect();
        futures::future::join_all(
            names
                .iter()
                .map(|n| env.create(n, github(&format!("acme/{n}")))),
        )
        .await;
        for n in &names {
            env.wait_reason(n, "SourceReady", Duration::from_secs(60))
                .await;
        }
        converge.push(back.elapsed().as_secs_f64());
        report.set(
            "converge_secs",
            converge.iter().copied().fold(0.0, f64::max),
        );
    }
    report.set("ready_after_restart_secs", &converge);
    env.delete("before").await;
    env.wait_gone("before", Duration::from_secs(60)).await;

    assert!(
        env.operator_running(),
        "the operator recovered without a restart of its own"
    );
    assert_eq!(env.source_ids().len(), 2 * per_restart);
    assert_eq!(
        env.standin.calls("create_source", "*") as usize,
        1 + 2 * per_restart,
        "no duplicate work"
    );
    report.pass();
    drop(env);
}

/// Someone who may create SyncSources but not read Secrets cannot use the operator to learn
/// one: a SyncSource names a Secret of its own namespace only (the field to name another does not
/// exist), and no field sends the token anywhere but the operator's Chroma URL. With strict field
/// validation (kubectl's default) such fields are refused; without it they are pruned, and the
/// operator, watching every namespace, still never uses another namespace's Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syncsource_cannot_borrow_another_namespaces_secret_or_redirect_the_token() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
    let cluster = PrivateCluster::start("borrow");
    let mut env = Env::on_private_cluster("borrow", &cluster).await;
    // The token lives only in the victim's namespace.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    secrets
        .delete(TOKEN_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let victim: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "victim"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": TOKEN_SECRET}, "stringData": {"token": TOKEN}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "victim")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let raw: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<chroma_sync_operator::crd::SyncSource>(&()),
    );
    let object = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
            "metadata": {"name": "borrow"}, "spec": spec
        }))
        .unwrap()
    };
    let mut borrowed = github("acme/borrow");
    borrowed["tokenSecretRef"] = json!({"name": TOKEN_SECRET, "namespace": "victim"});
    let mut redirected = github("acme/borrow");
    redirected["chromaUrl"] = json!("http://127.0.0.1:9/collect");
    // Server-side apply, as kubectl --server-side, Argo CD and Flux send it.
    let strict = PatchParams::apply("e2e-tests").validation_strict();
    for (spec, field) in [
        (&borrowed, ".spec.tokenSecretRef.namespace"),
        (&redirected, ".spec.chromaUrl"),
    ] {
        let refused = raw
            .patch("borrow", &strict, &Patch::Apply(&object(spec.clone())))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!("{field}: field not declared in schema")),
            "{refused}"
        );
    }
    let mut both = borrowed.clone();
    both["chromaUrl"] = redirected["chromaUrl"].clone();
    let object = object(both);
    // Without validation: stored, with both fields pruned.
    raw.create(&PostParams::default(), &object).await.unwrap();
    let stored = serde_json::to_value(env.get("borrow").await.spec).unwrap();
    assert_eq!(
        stored["tokenSecretRef"],
        json!({"name": TOKEN_SECRET, "key": "token"})
    );
    assert!(stored.get("chromaUrl").is_none(), "{stored}");

    env.watch_all_namespaces = true;
    env.start_operator();
    let o = env.wait_reason("borrow", "MissingCredentials", SOON).await;
    let message = ready(&o).unwrap().2;
    assert!(
        message.contains(&format!("{}/{TOKEN_SECRET}", env.ns)),
        "{message}"
    );
    let calls = env.standin.all_calls();
    assert!(
        calls.values().all(|&n| n == 0),
        "calls reached Chroma: {calls:?}"
    );
}
