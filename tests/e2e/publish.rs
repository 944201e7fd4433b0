//! `spec.sync.publishTo` on the real control plane against the stand-in: the ConfigMap follows
//! the newest completed run, run after run; a failed run leaves it as it was; it is owned by the
//! SyncSource (the test control plane runs no garbage collector, so its deletion with the
//! SyncSource is asserted as the controller ownerReference that makes it); a ConfigMap the
//! SyncSource does not own is never written (`PublishConflict`); and at rest nothing is written.

use crate::harness::*;
use chroma_sync_operator::crd::run::RunPhase;
use chroma_sync_operator::crd::{LastSync, RECONCILE_REQUEST_ANNOTATION};
use chroma_sync_standin::RunPlan;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(60);

fn config_maps(env: &Env) -> Api<ConfigMap> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// `status.lastSync`, once it is a run other than `not` in `phase`.
async fn wait_last_sync(env: &Env, phase: RunPhase, not: &[&LastSync]) -> LastSync {
    let what = format!("a new sync run to reach {phase:?}");
    wait_for(&what, RUN, || async {
        let last = *env.get("docs").await.status?.last_sync?;
        let new = not.iter().all(|n| n.name != last.name);
        (new && last.phase == Some(phase)).then_some(last)
    })
    .await
}

/// The ConfigMap's data once it names `run`'s collection.
async fn wait_published(env: &Env, name: &str, run: &LastSync) -> BTreeMap<String, String> {
    let what = format!("ConfigMap {name} to publish {}", run.name);
    let collection = run.collection_name.clone().unwrap();
    wait_for(&what, SOON, || async {
        let data = config_maps(env).get_opt(name).await.ok()??.data?;
        (data.get("collection") == Some(&collection)).then_some(data)
    })
    .await
}

fn expected(run: &LastSync) -> BTreeMap<String, String> {
    let finished = serde_json::to_value(run.finished_at.as_ref().unwrap()).unwrap();
    [
        ("collection", run.collection_name.clone().unwrap()),
        ("database", "docs".to_owned()),
        ("invocationId", run.invocation_id.clone().unwrap()),
        ("finishedAt", finished.as_str().unwrap().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn writes(audit: &[Value]) -> usize {
    audit
        .iter()
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .count()
}

/// Runs that take a second, and fail with `fail_with` if given.
fn runs_of_a_second(fail_with: Option<&str>) -> RunPlan {
    RunPlan {
        pending_ms: 300,
        processing_ms: 700,
        fail_with: fail_with.map(str::to_owned),
    }
}

/// A SyncSource `docs` on GitHub `repo` with `spec.sync` (runs of a second), once its first run
/// completed: its source id and that run.
async fn synced_source(env: &Env, repo: &str) -> (String, LastSync) {
    env.standin.set_run_plan(runs_of_a_second(None));
    let mut spec = github(repo);
    spec["sync"] = json!({"targetCollectionName": "docs", "ref": {"branch": "main"}});
    env.create("docs", spec).await;
    let source = env.wait_reason("docs", "SourceReady", SOON).await;
    let source_id = source.status.unwrap().source_id.unwrap();
    (
        source_id,
        wait_last_sync(env, RunPhase::Complete, &[]).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_follows_the_newest_complete_run_and_never_a_failed_one() {
    let env = Env::start("publish").await;
    env.standin.set_run_plan(runs_of_a_second(None));
    let mut spec = github("acme/publish");
    spec["sync"] = json!({"targetCollectionName": "docs", "ref": {"branch": "main"},
                          "publishTo": {"configMapName": "docs-current"}});
    let created = env.create("docs", spec).await;
    env.wait_reason("docs", "SourceReady", SOON).await;

    // Three runs in a row (a new commit each), the ConfigMap following each one.
    let mut done: Vec<LastSync> = Vec::new();
    for sha in [None, Some("0a1b2c3d"), Some("4e5f6a7b")] {
        if let Some(sha) = sha {
            env.merge_spec(
                "docs",
                json!({"sync": {"ref": {"branch": null, "sha": sha}}}),
            )
            .await;
        }
        let seen: Vec<&LastSync> = done.iter().collect();
        let run = wait_last_sync(&env, RunPhase::Complete, &seen).await;
        let data = wait_published(&env, "docs-current", &run).await;
        assert_eq!(data, expected(&run), "published {}", run.name);
        done.push(run);
    }
    let collections: std::collections::BTreeSet<_> =
        done.iter().map(|r| r.collection_name.clone()).collect();
    assert_eq!(
        collections.len(),
        3,
        "a collection per run: {collections:?}"
    );

    // Owned by the SyncSource as its controller: the garbage collector deletes it with it.
    let cm = config_maps(&env).get("docs-current").await.unwrap();
    let owners = cm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("SyncSource", "docs")
    );
    assert_eq!(Some(&owners[0].uid), created.metadata.uid.as_ref());
    assert_eq!(owners[0].controller, Some(true));
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert_eq!(
        managers,
        [(
            Some("chroma-sync-operator".to_owned()),
            Some("Apply".to_owned())
        )],
        "written by server-side apply under the operator's field manager"
    );
    // One write per completed run, no more.
    let audit = env.audit("configmaps").await;
    assert_eq!(writes(&audit), 3, "one write per completed run");

    // A failed run changes nothing.
    env.standin
        .set_run_plan(runs_of_a_second(Some("the repository could not be cloned")));
    env.merge_spec("docs", json!({"sync": {"ref": {"sha": "8c9d0e1f"}}}))
        .await;
    let seen: Vec<&LastSync> = done.iter().collect();
    let failed = wait_last_sync(&env, RunPhase::Failed, &seen).await;
    let newest = done.last().unwrap();
    let data = config_maps(&env).get("docs-current").await.unwrap().data;
    assert_eq!(data.unwrap(), expected(newest), "after {}", failed.name);

    // At rest: nothing written, to the ConfigMap or to the SyncSource.
    let configmap_writes = writes(&env.audit("configmaps").await);
    assert_eq!(configmap_writes, 3, "the failed run wrote nothing");
    let source_writes = writes(&env.audit("syncsources").await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(writes(&env.audit("configmaps").await), configmap_writes);
    assert_eq!(writes(&env.audit("syncsources").await), source_writes);

    // A ConfigMap that is not the SyncSource's is never written: PublishConflict, Ready kept.
    let theirs: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "taken"}, "data": {"owner": "someone else"},
    }))
    .unwrap();
    config_maps(&env)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    env.merge_spec(
        "docs",
        json!({"sync": {"publishTo": {"configMapName": "taken"}}}),
    )
    .await;
    let refused = wait_for("the PublishConflict condition", SOON, || async {
        let status = env.get("docs").await.status?;
        let c = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Published")?;
        (c.status == "False" && c.reason == "PublishConflict").then_some(c)
    })
    .await;
    assert!(refused.message.contains("taken"), "{}", refused.message);
    env.wait_event("docs", "PublishConflict", &["taken"]).await;
    env.wait_reason("docs", "SourceReady", SOON).await;
    let kept = config_maps(&env).get("taken").await.unwrap();
    assert_eq!(
        kept.data.unwrap(),
        BTreeMap::from([("owner".to_owned(), "someone else".to_owned())])
    );
    assert!(kept.metadata.owner_references.is_none());
    assert_eq!(
        writes(&env.audit("configmaps").await),
        configmap_writes + 1,
        "only the test's own create of it"
    );

    // Once the name is free, it publishes (a reconcile request to look now).
    config_maps(&env)
        .delete("taken", &Default::default())
        .await
        .unwrap();
    env.annotate("docs", RECONCILE_REQUEST_ANNOTATION, Some("after-conflict"))
        .await;
    let data = wait_published(&env, "taken", newest).await;
    assert_eq!(data, expected(newest));
    wait_for("the Published condition to go", SOON, || async {
        let status = env.get("docs").await.status?;
        (!status.conditions.iter().any(|c| c.type_ == "Published")).then_some(())
    })
    .await;
}

/// Reconcile-now requests on a SyncSource with `spec.sync`: each new value of
/// `chromasync.dev/reconcile-requested-at` or of Flux's `reconcile.fluxcd.io/requestedAt` starts
/// exactly one run; the same value again (removed and set back) starts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_reconcile_request_starts_exactly_one_run() {
    use chroma_sync_operator::crd::FLUX_REQUEST_ANNOTATION;
    let env = Env::start("requests").await;
    let (source_id, first) = synced_source(&env, "acme/requests").await;
    let invocations = || env.standin.invocations(&source_id).len();
    assert_eq!(invocations(), 1);

    let mut done = vec![first];
    for (key, value) in [
        (RECONCILE_REQUEST_ANNOTATION, "t1"),
        (FLUX_REQUEST_ANNOTATION, "push-1"),
    ] {
        env.annotate("docs", key, Some(value)).await;
        let seen: Vec<&LastSync> = done.iter().collect();
        let run = wait_last_sync(&env, RunPhase::Complete, &seen).await;
        assert_eq!(invocations(), done.len() + 1, "one run for {key}={value}");
        let status = env.get("docs").await.status.unwrap();
        let state = status.sync_state.unwrap();
        let handled = if key == FLUX_REQUEST_ANNOTATION {
            state.handled_requested_at
        } else {
            state.handled_reconcile_requested_at
        };
        assert_eq!(handled.as_deref(), Some(value));
        done.push(run);

        // The same value again: removed and set back (each a reconcile), nothing starts.
        env.annotate("docs", key, None).await;
        env.annotate("docs", key, Some(value)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(invocations(), done.len(), "no run for {key}={value} again");
        let last = env.get("docs").await.status.unwrap().last_sync.unwrap();
        assert_eq!(last.name, done.last().unwrap().name);
    }
    assert_eq!(invocations(), 3);
}

/// A push trigger across a restart: Flux's `reconcile.fluxcd.io/requestedAt` set while the
/// operator is down, and another set just before it is killed, each start exactly one run once
/// it is back (the request is handled from what status records, not from a watch event seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_the_operator_is_down_starts_one_run_after_it_restarts() {
    use chroma_sync_operator::crd::FLUX_REQUEST_ANNOTATION;
    let mut env = Env::start("requests-restart").await;
    let (source_id, first) = synced_source(&env, "acme/requests-restart").await;
    let mut done = vec![first];
    let invocations = |env: &Env| env.standin.invocations(&source_id).len();
    assert_eq!(invocations(&env), 1);

    for (value, kill_after) in [("while-down", None), ("then-killed", Some(300))] {
        match kill_after {
            None => {
                env.kill_operator();
                env.annotate("docs", FLUX_REQUEST_ANNOTATION, Some(value))
                    .await;
            }
            Some(ms) => {
                env.annotate("docs", FLUX_REQUEST_ANNOTATION, Some(value))
                    .await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                env.kill_operator();
            }
        }
        env.start_operator();
        let seen: Vec<&LastSync> = done.iter().collect();
        let run = wait_last_sync(&env, RunPhase::Complete, &seen).await;
        done.push(run);
        // Nothing more comes of the same value (the restart's reconciles included).
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            invocations(&env),
            done.len(),
            "one run for requestedAt={value}"
        );
        let state = env.get("docs").await.status.unwrap().sync_state.unwrap();
        assert_eq!(state.handled_requested_at.as_deref(), Some(value));
    }
    assert_eq!(invocations(&env), 3);
}

/// A Flux Receiver's push, as notification-controller makes it, under
/// deploy/flux/notifications/receiver-access.yaml applied as the README says: its ServiceAccount
/// reads the SyncSource and merge-patches `reconcile.fluxcd.io/requestedAt` with the time
/// (`metav1.Now().String()`, what its handler writes), which is what `kubectl annotate` does;
/// each push starts exactly one run. The same account may not delete the SyncSource, read its
/// runs or Secrets, or annotate a SyncSource of a namespace the binding is not in (RBAC), nor
/// change its spec, labels, finalizers or other annotations (the admission policy; asked with
/// server-side dry runs, so nothing changes even before the policy is in force).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_receiver_push_starts_one_run_and_may_do_nothing_else() {
    use crate::support::control_plane::kubectl;
    use chroma_sync_operator::crd::FLUX_REQUEST_ANNOTATION;
    const CONTROLLER: &str = "system:serviceaccount:flux-system:notification-controller";
    let env = Env::start("receiver").await;

    let access = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/flux/notifications/receiver-access.yaml"
    );
    let (ok, out) = kubectl(&["apply", "-n", &env.ns, "-f", access]);
    assert!(ok, "{out}");
    let (source_id, first) = synced_source(&env, "acme/pushed").await;
    let mut done = vec![first];
    let invocations = || env.standin.invocations(&source_id).len();
    assert_eq!(invocations(), 1);

    // As that account, a server-side dry run of `args` on the SyncSource.
    let dry_run = |args: &[&str]| {
        let mut all = vec!["--as", CONTROLLER, "-n", &env.ns];
        all.extend_from_slice(args);
        all.push("--dry-run=server");
        kubectl(&all)
    };
    let denied = |(ok, out): (bool, String)| {
        !ok && out.contains("denied request") && out.contains("may only set")
    };
    let spec_change = [
        "patch",
        "syncsource",
        "docs",
        "--type=merge",
        "-p",
        r#"{"spec":{"databaseName":"elsewhere"}}"#,
    ];
    wait_for("the admission policy to be in force", SOON, || async {
        denied(dry_run(&spec_change)).then_some(())
    })
    .await;
    for change in [
        &["label", "syncsource", "docs", "team=other"][..],
        &[
            "annotate",
            "syncsource",
            "docs",
            "chromasync.dev/paused=true",
        ],
        &[
            "patch",
            "syncsource",
            "docs",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    ] {
        let answer = dry_run(change);
        assert!(denied(answer.clone()), "{change:?}: {answer:?}");
    }

    let push = |ns: &str, value: &str| {
        kubectl(&[
            "--as",
            CONTROLLER,
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "syncsource",
            "docs",
            &format!("{FLUX_REQUEST_ANNOTATION}={value}"),
        ])
    };
    for value in [
        "2026-12-04 22:41:07.123456789 +0000 UTC m=+3.100000001",
        "2026-12-04 22:43:12.5 +0000 UTC m=+128.476543210",
    ] {
        let (ok, out) = push(&env.ns, value);
        assert!(ok, "the Receiver's patch, the policy in force: {out}");
        let seen: Vec<&LastSync> = done.iter().collect();
        done.push(wait_last_sync(&env, RunPhase::Complete, &seen).await);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(invocations(), done.len(), "one run for the push at {value}");
        let state = env.get("docs").await.status.unwrap().sync_state.unwrap();
        assert_eq!(state.handled_requested_at.as_deref(), Some(value));
    }
    assert_eq!(invocations(), 3);

    // Nothing beyond get, list and patch of SyncSources, and only where it is bound.
    for (verb, what) in [
        ("delete", "syncsource/docs"),
        ("get", "syncruns"),
        ("get", "secrets"),
        ("get", "configmaps"),
    ] {
        let (ok, out) = kubectl(&["--as", CONTROLLER, "-n", &env.ns, verb, what]);
        assert!(!ok && out.contains("Forbidden"), "{verb} {what}: {out}");
    }
    let (ok, out) = kubectl(&["create", "namespace", &format!("{}-unbound", env.ns)]);
    assert!(ok, "{out}");
    let (ok, out) = push(&format!("{}-unbound", env.ns), "elsewhere");
    assert!(!ok && out.contains("Forbidden"), "{out}");
    assert_eq!(env.get("docs").await.metadata.deletion_timestamp, None);
}
