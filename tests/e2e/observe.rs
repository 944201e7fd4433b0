//! Keeping the declared state true after creation: drift detection (a source deleted behind
//! the operator's back), adoption of existing sources (`spec.sourceId`, `onConflict: Adopt`),
//! pause, and reconcile-now.

use crate::harness::*;
use chroma_sync_operator::crd::{PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION, SyncSource};
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;

const DRIFT_INTERVAL: Duration = Duration::from_secs(4);

fn with_drift_interval(mut env: Env) -> Env {
    env.extra_args = vec![
        "--drift-interval".into(),
        format!("{}s", DRIFT_INTERVAL.as_secs()),
    ];
    env.with_operator()
}

fn source_id(o: &SyncSource) -> String {
    o.status.as_ref().unwrap().source_id.clone().unwrap()
}

/// The operator's writes to `name` (patches, whatever their subresource).
async fn writes(env: &Env, name: &str) -> usize {
    env.audited(name)
        .await
        .into_iter()
        .filter(|(verb, _)| matches!(verb.as_str(), "patch" | "update"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_deleted_behind_the_operators_back_is_recreated_within_one_interval() {
    let env = with_drift_interval(Env::without_operator("drift").await);
    for name in ["a", "b", "c"] {
        env.create(name, github(&format!("acme/{name}"))).await;
    }
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(source_id(&env.wait_reason(name, "SourceReady", SOON).await));
    }
    let (writes_b, writes_c) = (writes(&env, "b").await, writes(&env, "c").await);

    // Nothing drifted: a whole interval and more lists, and neither gets nor writes.
    tokio::time::sleep(DRIFT_INTERVAL * 2).await;
    assert!(
        env.standin.calls("list_sources", "200") >= 1,
        "the check ran"
    );
    assert_eq!(env.standin.calls("get_source", "*"), 0);
    assert_eq!(writes(&env, "a").await, writes(&env, "b").await);

    assert!(
        env.standin.remove_source(&ids[0]),
        "deleted in the dashboard"
    );
    let what = "a's source to be created again";
    let recreated = wait_for(what, DRIFT_INTERVAL * 3, || async {
        let o = env.get("a").await;
        let id = o.status.as_ref()?.source_id.clone()?;
        (id != ids[0] && ready(&o)?.1 == "SourceReady").then_some(id)
    })
    .await;
    assert!(env.source_ids().contains(&recreated));
    assert_eq!(env.source_ids().len(), 3, "one source each, no duplicate");
    assert_eq!(env.standin.calls("create_source", "201"), 4);
    assert_eq!(
        env.standin.calls("get_source", "404"),
        1,
        "one look confirmed it"
    );
    env.wait_event("a", "Recreated", &[&ids[0], &recreated])
        .await;
    let events: Vec<_> = env.events("a").await;
    assert_eq!(events.len(), 1, "one Event: {events:?}");
    assert_eq!(writes(&env, "b").await, writes_b, "b untouched");
    assert_eq!(writes(&env, "c").await, writes_c, "c untouched");
    let metrics = env.scrape_metrics().await;
    assert!(
        metrics.contains("chroma_sync_operator_sources_missing_total{action=\"recreated\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_keeps_a_missing_source_missing() {
    let env = with_drift_interval(Env::without_operator("drift-report").await);
    let mut spec = github("acme/report");
    spec["onSourceMissing"] = json!("Report");
    env.create("r", spec).await;
    let id = source_id(&env.wait_reason("r", "SourceReady", SOON).await);
    env.standin.remove_source(&id);
    let o = env
        .wait_reason("r", "SourceMissing", DRIFT_INTERVAL * 3)
        .await;
    assert_eq!(condition(&o, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(source_id(&o), id, "status still names the lost source");
    assert!(ready(&o).unwrap().2.contains(&id));
    assert_eq!(env.standin.calls("create_source", "*"), 1, "not recreated");

    // Opting back in creates it again.
    env.merge_spec("r", json!({"onSourceMissing": "Recreate"}))
        .await;
    let o = env.wait_reason("r", "SourceReady", SOON).await;
    assert_ne!(source_id(&o), id);
    assert_eq!(env.standin.calls("create_source", "201"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_made_source_is_adopted_with_zero_creates_and_deleted_with_its_object() {
    let env = Env::start("adopt").await;
    let made = env.standin.insert_source(json!({
        "database_name": DATABASE,
        "github": {"repository": "acme/made", "include_globs": ["*.md"]}
    }));
    let mut spec = github("acme/made");
    spec["github"]["includeGlobs"] = json!(["*.md"]);
    spec["sourceId"] = json!(made);
    env.create("made", spec).await;
    let o = env.wait_reason("made", "SourceReady", SOON).await;
    assert_eq!(source_id(&o), made);
    assert_eq!(env.standin.calls("create_source", "*"), 0, "zero creates");
    assert_eq!(env.standin.calls("get_source", "200"), 1);
    env.wait_event("made", "Adopted", &[&made]).await;

    // sourceId cannot change once set (admission says so).
    let changed = env
        .api()
        .patch(
            "made",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"spec": {"sourceId": "another"}})),
        )
        .await;
    let refused = format!("{changed:?}");
    assert!(refused.contains("sourceId cannot be changed"), "{refused}");
    assert!(
        refused.contains("spec.sourceId"),
        "the rule names its field: {refused}"
    );

    // The deletion policy applies to an adopted source as to any other.
    env.delete("made").await;
    env.wait_gone("made", SOON).await;
    assert!(env.source_ids().is_empty(), "deleted with its object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_differs_stalls_naming_the_field_and_nothing_changes() {
    let env = Env::start("mismatch").await;
    let made = env.standin.insert_source(json!({
        "database_name": DATABASE,
        "github": {"repository": "acme/differs", "include_globs": ["*.md"]}
    }));
    let mut spec = github("acme/differs");
    spec["github"]["includeGlobs"] = json!(["*.rs"]);
    spec["sourceId"] = json!(made);
    env.create("differs", spec).await;
    let o = env.wait_reason("differs", "SourceMismatch", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    let message = ready(&o).unwrap().2;
    assert!(message.contains("github.includeGlobs"), "{message}");
    assert!(message.contains(&made), "{message}");
    assert_eq!(o.status.unwrap().source_id, None, "not recorded");
    let all = env.standin.all_calls();
    let changing: Vec<_> = all
        .keys()
        .filter(|k| k.starts_with("create_") || k.starts_with("delete_"))
        .collect();
    assert!(
        changing.is_empty(),
        "no call that changes anything: {all:?}"
    );

    // Made to match, it is adopted.
    env.merge_spec("differs", json!({"github": {"includeGlobs": ["*.md"]}}))
        .await;
    let o = env.wait_reason("differs", "SourceReady", SOON).await;
    assert_eq!(source_id(&o), made);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflict_adopt_takes_over_the_existing_source() {
    let env = Env::start("conflict-adopt").await;
    let made = env.standin.insert_source(json!({
        "database_name": DATABASE, "github": {"repository": "acme/exists"}
    }));
    let mut spec = github("acme/exists");
    spec["onConflict"] = json!("Adopt");
    env.create("exists", spec).await;
    let o = env.wait_reason("exists", "SourceReady", SOON).await;
    assert_eq!(source_id(&o), made);
    assert_eq!(env.standin.calls("create_source", "409"), 1);
    assert_eq!(env.standin.calls("create_source", "201"), 0);
    env.wait_event("exists", "Adopted", &[&made, "onConflict"])
        .await;

    // Without Adopt, the same conflict stalls as before.
    env.standin.insert_source(json!({
        "database_name": DATABASE, "github": {"repository": "acme/taken"}
    }));
    env.create("taken", github("acme/taken")).await;
    env.wait_reason("taken", "SourceExists", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_object_makes_no_call_and_no_write_until_resumed() {
    let env = Env::start("pause").await;
    env.create("p", github("acme/paused")).await;
    let id = source_id(&env.wait_reason("p", "SourceReady", SOON).await);
    env.annotate("p", PAUSED_ANNOTATION, Some("true")).await;
    let o = env.wait_reason("p", "Paused", SOON).await;
    assert_eq!(
        condition(&o, "Ready").as_deref(),
        Some("True"),
        "Ready as it was, reason Paused"
    );
    assert_eq!(condition(&o, "Reconciling"), None);
    assert_eq!(condition(&o, "Stalled"), None);
    let (calls, written) = (env.standin.all_calls(), writes(&env, "p").await);

    // The stand-in changes under it, the spec changes, a reconcile is asked for, and the object
    // is deleted: nothing reaches Chroma and nothing is written.
    env.standin.remove_source(&id);
    env.merge_spec("p", json!({"github": {"includeGlobs": ["*.md"]}}))
        .await;
    env.annotate("p", RECONCILE_REQUEST_ANNOTATION, Some("now"))
        .await;
    env.delete("p").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.standin.all_calls(), calls, "zero calls while paused");
    let ours = writes(&env, "p").await - written;
    assert_eq!(
        ours, 2,
        "only the test's own two patches (spec, annotation)"
    );
    let o = env.get("p").await;
    assert!(o.metadata.deletion_timestamp.is_some(), "deletion waits");
    assert!(
        !o.finalizers().is_empty(),
        "the finalizer stays while paused"
    );

    // Resumed, the deletion goes on as deletionPolicy says.
    env.annotate("p", PAUSED_ANNOTATION, None).await;
    env.wait_gone("p", SOON).await;
    assert!(env.standin.calls("delete_source", "*") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_now_looks_once_and_echoes_its_token() {
    let env = Env::start("reconcile-now").await;
    env.create("n", github("acme/now")).await;
    let id = source_id(&env.wait_reason("n", "SourceReady", SOON).await);
    let calls = env.standin.all_calls();
    env.annotate(
        "n",
        RECONCILE_REQUEST_ANNOTATION,
        Some("2026-12-02T10:00:00Z"),
    )
    .await;
    let what = "the token echoed in status.lastHandledReconcileAt";
    wait_for(what, SOON, || async {
        let o = env.get("n").await;
        let handled = o.status?.last_handled_reconcile_at?;
        (handled == "2026-12-02T10:00:00Z").then_some(())
    })
    .await;
    let mut expected = calls.clone();
    *expected.entry("get_source".into()).or_default() += 1;
    assert_eq!(env.standin.all_calls(), expected, "one GET, nothing else");
    assert_eq!(source_id(&env.get("n").await), id);

    // The source gone, a request finds it so and creates it again.
    env.standin.remove_source(&id);
    env.annotate("n", RECONCILE_REQUEST_ANNOTATION, Some("second"))
        .await;
    let what = "a new source after the second request";
    wait_for(what, SOON, || async {
        let o = env.get("n").await;
        let s = o.status?;
        (s.last_handled_reconcile_at.as_deref() == Some("second")
            && s.source_id.as_deref().is_some_and(|x| x != id))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_metrics_not_ready_shows_only_the_objects_alerts_read() {
    let mut env = Env::without_operator("condscope").await;
    env.extra_args = vec!["--condition-metrics".into(), "not-ready".into()];
    let env = env.with_operator();
    env.create("fine", github("acme/fine")).await;
    let mut spec = github("acme/broken");
    spec["tokenSecretRef"] = serde_json::json!({"name": "absent"});
    env.create("broken", spec).await;
    env.wait_reason("fine", "SourceReady", SOON).await;
    env.wait_reason("broken", "MissingCredentials", SOON).await;
    let metrics = env.scrape_metrics().await;
    let about = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("chroma_sync_operator_condition{"))
            .filter(|l| l.contains(&format!("name=\"{name}\"")))
            .count()
    };
    assert_eq!(about("fine"), 0, "a Ready object has no series:\n{metrics}");
    assert_eq!(
        about("broken"),
        2,
        "Ready=False and Stalled=True:\n{metrics}"
    );
}
