//! The reconcile flows against a mock apiserver and the Chroma stand-in: every Kubernetes
//! request a flow makes is asserted (method, path, body) and answered in order, and the Chroma
//! calls are read from the stand-in's counters. The end-to-end suite runs the same flows on a
//! real control plane; these pin their exact writes and calls, in milliseconds.

use super::payload;
use super::reconcile::{self, Namesake};
use super::status::{self, Recorded, State};
use super::sync::{self, SYNC_SOURCE_LABEL};
use super::{Next, Reason, Sources};
use crate::crd::{
    CREATE_PENDING_ANNOTATION, ConflictPolicy, DeletionPolicy, FINALIZER, MissingPolicy,
    RECONCILE_REQUEST_ANNOTATION, SyncSource, SyncState,
};
use crate::kernel::driver::{self, Driver};
use crate::kernel::fixtures::{
    self, ADMIN, ApiServer, Chroma, DATABASE, OBJECT_PATH, STATUS_PATH, VIEWER, conditions, source,
    standin_body,
};
use crate::kernel::{Error, Retry};
use chroma_sync_standin::Faults;
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The SyncSource flows, and their driver, on the kernel's test context.
fn sources(
    client: kube::Client,
    chroma: crate::chroma::ChromaClient,
    token: Option<&str>,
) -> Arc<Driver<Sources>> {
    Driver::new(Sources::new(fixtures::context(client, chroma, token)))
}

fn apply(obj: &SyncSource, ctx: &Arc<Driver<Sources>>) -> JoinHandle<Result<Next, Error>> {
    let (obj, ctx) = (obj.clone(), ctx.clone());
    tokio::spawn(async move { reconcile::apply(&obj, &ctx).await })
}

fn cleanup(obj: &SyncSource, ctx: &Arc<Driver<Sources>>) -> JoinHandle<Result<Next, Error>> {
    let (obj, ctx) = (obj.clone(), ctx.clone());
    tokio::spawn(async move { reconcile::cleanup(&obj, &ctx).await })
}

async fn outcome(flow: JoinHandle<Result<Next, Error>>) -> Next {
    flow.await
        .expect("the flow ran")
        .expect("the flow succeeded")
}

fn ready() -> Vec<(String, String, String)> {
    vec![("Ready".into(), "True".into(), "SourceReady".into())]
}

fn failing(abnormal: &str, reason: &str) -> Vec<(String, String, String)> {
    vec![
        ("Ready".into(), "False".into(), reason.into()),
        (abnormal.into(), "True".into(), reason.into()),
    ]
}

fn hash_of(obj: &SyncSource) -> String {
    payload::fingerprint(&payload::build(&obj.spec).expect("a valid spec"))
}

/// `obj` as a previous reconcile left it: finalizer on, `id` recorded with `hash`, Ready.
fn recorded(mut obj: SyncSource, id: &str, hash: &str) -> SyncSource {
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let rec = Recorded {
        id: id.into(),
        payload_hash: Some(hash.into()),
        connection: None,
    };
    let at = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
    obj.status = Some(status::next(
        &Default::default(),
        1,
        Some(&rec),
        &State::Ready,
        at,
    ));
    obj
}

fn marked(mut obj: SyncSource, at: jiff::Timestamp) -> SyncSource {
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    obj.metadata.annotations = Some([(CREATE_PENDING_ANNOTATION.into(), at.to_string())].into());
    obj
}

fn deleting(mut obj: SyncSource) -> SyncSource {
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    obj
}

/// Asserts the guarded finalizer-and-mark write: resourceVersion, our finalizer, a fresh mark.
fn assert_mark(patch: &Value) {
    let meta = &patch["metadata"];
    assert_eq!(meta["finalizers"], json!([FINALIZER]));
    assert!(meta["resourceVersion"].is_string(), "guarded: {patch}");
    let mark: jiff::Timestamp = meta["annotations"][CREATE_PENDING_ANNOTATION]
        .as_str()
        .expect("a mark")
        .parse()
        .expect("the mark is a timestamp");
    let age = jiff::Timestamp::now().duration_since(mark);
    assert!(age.as_secs() < 60, "the mark is the time of the write");
    assert_eq!(meta.as_object().unwrap().len(), 3, "nothing else: {patch}");
}

/// A first create of [`source`] with an admin token, past its guarded mark: the flow goes on to
/// the create call.
async fn past_the_mark() -> (Chroma, ApiServer, JoinHandle<Result<Next, Error>>) {
    let chroma = Chroma::start().await;
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    (chroma, api, flow)
}

#[tokio::test]
async fn first_create_marks_then_creates_once_then_records() {
    let obj = source();
    let chroma = Chroma::start().await;
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let mark = api.patch(OBJECT_PATH).await;
    assert_mark(&mark);
    assert_eq!(mark["metadata"]["resourceVersion"], "1");
    assert_eq!(
        chroma.standin.calls("create_source", "*"),
        0,
        "no create before the mark"
    );
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);

    let created = chroma.standin.sources(DATABASE);
    assert_eq!(created.len(), 1);
    assert_eq!(status["status"]["sourceId"], json!(created[0].0));
    assert_eq!(status["status"]["payloadHash"], json!(hash_of(&obj)));
    assert_eq!(status["status"]["observedGeneration"], json!(1));
    assert_eq!(status["status"]["lastError"], Value::Null);
    assert_eq!(conditions(&status), ready());
    assert_eq!(
        chroma.standin.all_calls(),
        [("create_source".into(), 1)].into()
    );
    assert_eq!(chroma.standin.calls("create_source", "201"), 1);
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![],
        "a first create is in status alone"
    );
}

#[tokio::test]
async fn at_rest_makes_no_call_and_no_write() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = recorded(source(), &id, &hash_of(&source()));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    assert_eq!(outcome(apply(&obj, &ctx)).await, Next::Settled);
    api.assert_idle();
    assert!(
        chroma.standin.all_calls().is_empty(),
        "no Chroma call at rest"
    );
    assert_eq!(api.events(&ctx).await, vec![]);
}

#[tokio::test]
async fn at_rest_without_the_finalizer_puts_it_back_and_calls_nothing() {
    let chroma = Chroma::start().await;
    let mut obj = recorded(source(), "kept", &hash_of(&source()));
    obj.metadata.finalizers = None;
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let patch = api.patch(OBJECT_PATH).await;
    assert_eq!(
        patch,
        json!({ "metadata": { "resourceVersion": "1", "finalizers": [FINALIZER] } })
    );
    assert_eq!(outcome(flow).await, Next::Settled);
    api.assert_idle();
    assert!(chroma.standin.all_calls().is_empty());
}

#[tokio::test]
async fn a_payload_change_deletes_the_old_source_before_creating_the_new() {
    let chroma = Chroma::start().await;
    let old = chroma.standin.insert_source(standin_body());
    let obj = recorded(source(), &old, "the hash of an older spec");
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let replacing = api.patch(STATUS_PATH).await;
    assert_eq!(
        chroma.standin.calls("delete_source", "204"),
        1,
        "deleted first"
    );
    assert!(chroma.standin.sources(DATABASE).is_empty());
    assert_eq!(
        replacing["status"]["sourceId"],
        Value::Null,
        "the old id is forgotten"
    );
    assert_eq!(conditions(&replacing), failing("Reconciling", "Replacing"));
    assert_mark(&api.patch(OBJECT_PATH).await);
    let ready_patch = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);

    let now = chroma.standin.sources(DATABASE);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].0, old);
    assert_eq!(ready_patch["status"]["sourceId"], json!(now[0].0));
    assert_eq!(conditions(&ready_patch), ready());
    let calls = [("create_source".into(), 1), ("delete_source".into(), 1)];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_idle();
    let events = api.events(&ctx).await;
    assert_eq!(
        events,
        vec![
            ("Normal".into(), "Replacing".into()),
            ("Normal".into(), "Replaced".into())
        ]
    );
}

#[tokio::test]
async fn a_mark_without_an_id_adopts_the_listed_source_and_creates_nothing() {
    let chroma = Chroma::start().await;
    let obj = marked(source(), jiff::Timestamp::now());
    // The create of an earlier attempt, whose answer was lost.
    let id = chroma.standin.insert_source(standin_body());
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(status["status"]["sourceId"], json!(id));
    assert_eq!(status["status"]["payloadHash"], json!(hash_of(&obj)));
    assert_eq!(conditions(&status), ready());
    assert_eq!(
        chroma.standin.all_calls(),
        [("list_sources".into(), 1)].into()
    );
    assert_eq!(chroma.standin.created_total(), 1, "no second source");
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![("Normal".into(), "Adopted".into())]
    );
}

#[tokio::test]
async fn a_source_made_long_before_the_mark_is_not_adopted() {
    // A source of the same key made long before the mark is someone else's: not adopted, and
    // the create meets the service's 409.
    let chroma = Chroma::start().await;
    chroma.standin.insert_source(standin_body());
    let long_after = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let obj = marked(source(), long_after);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    let cleared = api.patch(OBJECT_PATH).await;
    assert_eq!(
        cleared,
        json!({ "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: null } } })
    );
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(conditions(&status), failing("Stalled", "SourceExists"));
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::OnChange,
            reason: Reason::SourceExists
        }
    );
    assert_eq!(chroma.standin.calls("list_sources", "200"), 1);
    assert_eq!(chroma.standin.calls("create_source", "409"), 1);
    api.assert_idle();
}

#[tokio::test]
async fn cleanup_deletes_the_source_then_releases_the_finalizer() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = deleting(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(
        chroma.standin.calls("delete_source", "204"),
        1,
        "deleted first"
    );
    assert_eq!(
        release,
        json!({ "metadata": { "resourceVersion": "1", "finalizers": [] } })
    );
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(chroma.standin.sources(DATABASE).is_empty());
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![],
        "no Event about a vanishing object"
    );
}

#[tokio::test]
async fn cleanup_with_retain_releases_the_finalizer_and_deletes_nothing() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let mut obj = deleting(recorded(source(), &id, &hash_of(&source())));
    obj.spec.deletion_policy = DeletionPolicy::Retain;
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    assert_eq!(
        chroma.standin.sources(DATABASE).len(),
        1,
        "the source stays"
    );
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![("Normal".into(), "Retained".into())]
    );
}

/// A deleted SyncSource with a recorded source, reconciled through the driver (which asks
/// whether the deletion is the CRD's): the stand-in holding the source, the mock apiserver, the
/// driver, the reconcile, and the source's id.
async fn deleted_through_the_driver(
    seen: Option<crate::kernel::crds::Seen>,
) -> (
    Chroma,
    ApiServer,
    Arc<Driver<Sources>>,
    JoinHandle<Result<kube::runtime::controller::Action, Error>>,
    String,
) {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let mut obj = deleting(recorded(source(), &id, &hash_of(&source())));
    obj.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    let (client, api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();
    if let Some(seen) = seen {
        ctx.crds.saw("syncsources.chromasync.dev", seen);
    }
    let flow = {
        let (obj, ctx) = (Arc::new(obj), ctx.clone());
        tokio::spawn(driver::reconcile(obj, ctx))
    };
    (chroma, api, ctx, flow, id)
}

/// The object is let go with its CRD: the finalizer released, no Chroma call, the source kept,
/// one Warning Event naming it.
async fn assert_kept(
    chroma: Chroma,
    mut api: ApiServer,
    ctx: Arc<Driver<Sources>>,
    flow: JoinHandle<Result<kube::runtime::controller::Action, Error>>,
    id: &str,
) {
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(
        release,
        json!({ "metadata": { "resourceVersion": "1", "finalizers": [] } })
    );
    let action = flow
        .await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    assert_eq!(
        chroma.standin.sources(DATABASE).len(),
        1,
        "the source stays"
    );
    api.assert_done(&ctx, &[("Warning", "RetainedOnCrdDeletion")])
        .await;
    let notes = api.event_notes(&ctx).await;
    assert!(
        notes[0].contains(id) && notes[0].contains("syncsources.chromasync.dev"),
        "{notes:?}"
    );
}

/// The apiserver deletes every SyncSource when their CRD is deleted. The CRD's watch has not
/// shown that yet (it is another stream than the objects'), so the driver reads the CRD, finds
/// it being deleted, and lets the object go without deleting its source.
#[tokio::test]
async fn a_deletion_by_the_crds_deletion_keeps_the_source_even_before_the_crd_watch_shows_it() {
    let fine = crate::kernel::crds::Seen::Present {
        deleting_since: None,
    };
    let (chroma, mut api, ctx, flow, id) = deleted_through_the_driver(Some(fine)).await;
    api.crd(fixtures::SOURCES_CRD_PATH, fixtures::Crd::Deleting)
        .await;
    assert_kept(chroma, api, ctx, flow, &id).await;
}

#[tokio::test]
async fn a_deletion_whose_crd_is_gone_keeps_the_source() {
    let (chroma, mut api, ctx, flow, id) = deleted_through_the_driver(None).await;
    api.crd(fixtures::SOURCES_CRD_PATH, fixtures::Crd::Gone)
        .await;
    assert_kept(chroma, api, ctx, flow, &id).await;
}

/// The CRD's watch already showed it being deleted since before the object was made: no read.
#[tokio::test]
async fn a_crd_seen_being_deleted_keeps_the_source_without_a_read() {
    let deleting = crate::kernel::crds::Seen::Present {
        deleting_since: Some("2026-01-02T00:00:00Z".parse().unwrap()),
    };
    let (chroma, api, ctx, flow, id) = deleted_through_the_driver(Some(deleting)).await;
    assert_kept(chroma, api, ctx, flow, &id).await;
}

/// The normal path: a CRD that is fine means the object alone is deleted, so its source is.
#[tokio::test]
async fn a_deletion_under_a_crd_that_is_fine_deletes_the_source() {
    let (chroma, mut api, ctx, flow, _) = deleted_through_the_driver(None).await;
    api.crd(fixtures::SOURCES_CRD_PATH, fixtures::Crd::Fine)
        .await;
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    flow.await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
    assert!(chroma.standin.sources(DATABASE).is_empty());
    api.assert_done(&ctx, &[]).await;
}

/// A CRD that cannot be read: neither the delete call nor the finalizer's release; the deletion
/// waits (an error, so the backoff) and the metric says why.
#[tokio::test]
async fn a_crd_that_cannot_be_read_keeps_the_deletion_waiting_with_no_call_and_no_write() {
    let (chroma, mut api, ctx, flow, _) = deleted_through_the_driver(None).await;
    api.expect(Method::GET, fixtures::SOURCES_CRD_PATH)
        .await
        .refuse(403, "Forbidden");
    let failed = flow.await.expect("the reconcile ran");
    assert!(
        matches!(&failed, Err(Error::CrdUnreadable { crd, .. }) if crd == "syncsources.chromasync.dev"),
        "{failed:?}"
    );
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    assert_eq!(chroma.standin.sources(DATABASE).len(), 1);
    api.assert_done(&ctx, &[]).await;
    let metrics = ctx.metrics.render();
    assert!(metrics.contains("CrdUnreadable"), "{metrics}");
}

/// An object that never started a create costs no read of the CRD: its cleanup calls nothing.
#[tokio::test]
async fn a_deletion_with_nothing_created_does_not_read_the_crd() {
    let chroma = Chroma::start().await;
    let mut obj = deleting(source());
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();
    let flow = tokio::spawn(driver::reconcile(Arc::new(obj), ctx.clone()));
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    flow.await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_done(&ctx, &[]).await;
}

#[tokio::test]
async fn a_source_already_gone_counts_as_deleted() {
    let chroma = Chroma::start().await;
    let obj = deleting(recorded(source(), "gone-already", &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(chroma.standin.calls("delete_source", "404"), 1);
    api.assert_idle();
}

#[tokio::test]
async fn an_object_gone_at_finalizer_release_is_done() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = deleting(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    api.expect(Method::PATCH, OBJECT_PATH)
        .await
        .refuse(404, "NotFound");
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(chroma.standin.calls("delete_source", "204"), 1);
    api.assert_idle();
}

#[tokio::test]
async fn cleanup_of_a_mark_without_an_id_finds_and_deletes_the_source() {
    let chroma = Chroma::start().await;
    let obj = deleting(marked(source(), jiff::Timestamp::now()));
    chroma.standin.insert_source(standin_body());
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(chroma.standin.sources(DATABASE).is_empty());
    let calls = [("delete_source".into(), 1), ("list_sources".into(), 1)];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_idle();
}

#[tokio::test]
async fn a_conflict_on_finalizer_release_rereads_and_deletes_once() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = deleting(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    api.expect(Method::PATCH, OBJECT_PATH)
        .await
        .refuse(409, "Conflict");
    // Someone else wrote meanwhile.
    let stored = api.stored.as_mut().unwrap();
    stored["metadata"]["resourceVersion"] = json!("7");
    api.get().await;
    let release = api.patch(OBJECT_PATH).await;
    assert_eq!(release["metadata"]["resourceVersion"], "7");
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
    api.assert_idle();
}

#[tokio::test]
async fn an_object_deleted_before_its_status_write_has_its_new_source_deleted() {
    let (chroma, mut api, flow) = past_the_mark().await;
    // kubernetes#77988: a delete that read the object before the mark removes it anyway.
    api.stored = None;
    api.expect(Method::PATCH, STATUS_PATH)
        .await
        .refuse(404, "NotFound");
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(chroma.standin.created_total(), 1);
    assert!(chroma.standin.sources(DATABASE).is_empty(), "not leaked");
    let calls = [("create_source".into(), 1), ("delete_source".into(), 1)];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_idle();
}

#[tokio::test]
async fn a_conflict_on_the_mark_rereads_the_object_and_creates_once() {
    let chroma = Chroma::start().await;
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();

    let flow = {
        let (obj, ctx) = (Arc::new(obj.clone()), ctx.clone());
        tokio::spawn(driver::reconcile(obj, ctx))
    };
    api.expect(Method::PATCH, OBJECT_PATH)
        .await
        .refuse(409, "Conflict");
    assert_eq!(chroma.standin.calls("create_source", "*"), 0);
    api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!("5");
    api.get().await;
    let mark = api.patch(OBJECT_PATH).await;
    assert_eq!(
        mark["metadata"]["resourceVersion"], "5",
        "guarded by the fresh read"
    );
    api.patch(STATUS_PATH).await;
    let action = flow.await.unwrap().expect("reconciled");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(
        chroma.standin.all_calls(),
        [("create_source".into(), 1)].into()
    );
    api.assert_idle();
}

/// Another client writes the object between the create and its status write (a label, here):
/// the recording write meets a conflict, reads the object afresh and writes again at once,
/// guarded by the fresh copy, with no lookup (list) and no second create, and keeps the label.
#[tokio::test]
async fn a_conflict_on_recording_the_source_writes_it_again_on_a_fresh_read() {
    let (chroma, mut api, flow) = past_the_mark().await;
    let stored = api.stored.as_mut().unwrap();
    stored["metadata"]["labels"] = json!({"team": "search"});
    stored["metadata"]["resourceVersion"] = json!("9");
    let stale = api.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(stale.body["metadata"]["resourceVersion"], "2");
    stale.refuse(409, "Conflict");
    api.get().await;
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(status["metadata"]["resourceVersion"], "9", "guarded afresh");
    assert_eq!(outcome(flow).await, Next::Settled);

    let created = chroma.standin.sources(DATABASE);
    assert_eq!(status["status"]["sourceId"], json!(created[0].0));
    assert_eq!(conditions(&status), ready());
    assert_eq!(
        api.stored.as_ref().unwrap()["metadata"]["labels"]["team"],
        "search"
    );
    assert_eq!(
        chroma.standin.all_calls(),
        [("create_source".into(), 1)].into(),
        "one create, no lookup"
    );
    api.assert_idle();
}

/// The fresh read after a conflict on recording no longer shows the create this reconcile made
/// (here, its mark was replaced): the conflict goes back to the full decision, nothing is
/// written over what the reconcile did not see.
#[tokio::test]
async fn a_conflict_on_recording_a_changed_create_goes_back_to_the_decision() {
    let (chroma, mut api, flow) = past_the_mark().await;
    let stored = api.stored.as_mut().unwrap();
    stored["metadata"]["annotations"][CREATE_PENDING_ANNOTATION] = json!("2020-01-01T00:00:00Z");
    stored["metadata"]["resourceVersion"] = json!("9");
    api.expect(Method::PATCH, STATUS_PATH)
        .await
        .refuse(409, "Conflict");
    api.get().await; // the fresh read: another create's mark
    api.get().await; // is the object gone? (then its new source would be deleted)
    let result = flow.await.expect("the flow ends");
    assert!(
        matches!(result, Err(ref e) if e.is_conflict()),
        "{result:?}"
    );
    assert_eq!(chroma.standin.created_total(), 1);
    api.assert_idle();
}

#[tokio::test]
async fn a_spec_that_cannot_become_a_payload_stalls_without_a_call() {
    let chroma = Chroma::start().await;
    let mut obj = source();
    obj.spec.github = None;
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(conditions(&status), failing("Stalled", "InvalidSpec"));
    let next = outcome(flow).await;
    assert_eq!(
        next,
        Next::Retry {
            retry: Retry::OnChange,
            reason: Reason::InvalidSpec
        }
    );
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![("Warning".into(), "InvalidSpec".into())]
    );
}

#[tokio::test]
async fn no_token_stalls_on_missing_credentials_without_a_call() {
    let chroma = Chroma::start().await;
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), None);

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        conditions(&status),
        failing("Stalled", "MissingCredentials")
    );
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Slow,
            reason: Reason::MissingCredentials
        }
    );
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
    assert_eq!(
        api.events(&ctx).await,
        vec![("Warning".into(), "MissingCredentials".into())]
    );
}

#[tokio::test]
async fn an_s3_source_without_its_aws_key_secret_stalls_without_a_call() {
    let chroma = Chroma::start().await;
    let mut obj = source();
    obj.spec.github = None;
    obj.spec.s3 = Some(
        serde_json::from_value(
            json!({"bucketName": "b", "region": "r", "collectionName": "c",
            "autoSync": "direct", "credentialsSecretRef": {"name": "aws"}}),
        )
        .unwrap(),
    );
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        conditions(&status),
        failing("Stalled", "MissingCredentials")
    );
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("Secret") && message.contains("/aws (s3.credentialsSecretRef)"),
        "{message}"
    );
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Slow,
            reason: Reason::MissingCredentials
        }
    );
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
}

/// How a failed first create is expected to end.
struct Expected {
    abnormal: &'static str,
    reason: Reason,
    retry: Retry,
    http_status: Option<u16>,
    /// The create certainly made nothing, so the mark is cleared before the status write.
    clears_mark: bool,
}

/// A first create whose POST fails as `chroma` is set up to fail it (the stand-in with
/// `faults`): the mark, the POST, then (when nothing was created) the mark cleared, the status
/// and the retry.
async fn failed_create(chroma: Chroma, token: &str, faults: Faults, expected: Expected) {
    chroma.standin.set_faults(faults);
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(token));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    if expected.clears_mark {
        let cleared = api.patch(OBJECT_PATH).await;
        assert_eq!(
            cleared,
            json!({ "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: null } } })
        );
    }
    let status = api.patch(STATUS_PATH).await;
    let next = outcome(flow).await;

    let reason = expected.reason;
    assert_eq!(
        conditions(&status),
        failing(expected.abnormal, reason.as_str()),
        "{reason}"
    );
    assert_eq!(status["status"]["sourceId"], Value::Null, "{reason}");
    let last_error = &status["status"]["lastError"];
    assert_eq!(
        last_error["httpStatus"],
        json!(expected.http_status),
        "{reason}"
    );
    assert!(last_error["message"].is_string(), "{reason}: {last_error}");
    assert_eq!(
        next,
        Next::Retry {
            retry: expected.retry,
            reason
        }
    );
    assert_eq!(chroma.standin.calls("create_source", "*"), 1, "{reason}");
    assert_eq!(chroma.standin.all_calls().len(), 1, "{reason}: create only");
    let stored = api.stored.as_ref().unwrap();
    let mark = stored["metadata"]["annotations"].get(CREATE_PENDING_ANNOTATION);
    assert_eq!(mark.is_some(), !expected.clears_mark, "{reason}: the mark");
    api.assert_idle();
    let warned = if expected.abnormal == "Stalled" {
        "Warning"
    } else {
        "Normal"
    };
    assert_eq!(
        api.events(&ctx).await,
        vec![(warned.into(), reason.as_str().into())],
        "{reason}"
    );
}

fn fail_next(status: u16) -> Faults {
    Faults {
        fail_next: 1,
        error_status: status,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_create_refused_as_invalid_stalls_until_the_spec_changes() {
    let expected = Expected {
        abnormal: "Stalled",
        reason: Reason::InvalidSpec,
        retry: Retry::OnChange,
        http_status: Some(400),
        clears_mark: true,
    };
    failed_create(Chroma::start().await, ADMIN, fail_next(400), expected).await;
}

#[tokio::test]
async fn an_unknown_token_stalls_as_unauthorized_and_retries_slowly() {
    let expected = Expected {
        abnormal: "Stalled",
        reason: Reason::Unauthorized,
        retry: Retry::Slow,
        http_status: Some(401),
        clears_mark: true,
    };
    let chroma = Chroma::start().await;
    failed_create(chroma, "not-a-known-token", Faults::default(), expected).await;
}

#[tokio::test]
async fn a_viewer_token_stalls_as_forbidden_and_retries_slowly() {
    let expected = Expected {
        abnormal: "Stalled",
        reason: Reason::Forbidden,
        retry: Retry::Slow,
        http_status: Some(403),
        clears_mark: true,
    };
    failed_create(Chroma::start().await, VIEWER, Faults::default(), expected).await;
}

#[tokio::test]
async fn a_missing_database_reconciles_slowly() {
    let expected = Expected {
        abnormal: "Reconciling",
        reason: Reason::DatabaseNotFound,
        retry: Retry::Slow,
        http_status: Some(404),
        clears_mark: true,
    };
    let chroma = Chroma::start_with(&[], Duration::from_secs(5)).await;
    failed_create(chroma, ADMIN, Faults::default(), expected).await;
}

#[tokio::test]
async fn a_source_of_the_same_key_stalls_as_source_exists() {
    let expected = Expected {
        abnormal: "Stalled",
        reason: Reason::SourceExists,
        retry: Retry::OnChange,
        http_status: Some(409),
        clears_mark: true,
    };
    let chroma = Chroma::start().await;
    chroma.standin.insert_source(standin_body());
    failed_create(chroma, ADMIN, Faults::default(), expected).await;
}

#[tokio::test]
async fn rate_limiting_retries_soon_but_not_before_retry_after() {
    let expected = Expected {
        abnormal: "Reconciling",
        reason: Reason::RateLimited,
        retry: Retry::Soon {
            not_before: Some(Duration::from_secs(7)),
        },
        http_status: Some(429),
        clears_mark: true,
    };
    let faults = Faults {
        rate_limit_next: 1,
        retry_after_secs: 7,
        ..Default::default()
    };
    failed_create(Chroma::start().await, ADMIN, faults, expected).await;
}

#[tokio::test]
async fn a_server_error_keeps_the_mark_and_retries_soon() {
    let expected = Expected {
        abnormal: "Reconciling",
        reason: Reason::ServerError,
        retry: Retry::Soon { not_before: None },
        http_status: Some(503),
        clears_mark: false,
    };
    failed_create(Chroma::start().await, ADMIN, fail_next(503), expected).await;
}

#[tokio::test]
async fn a_timeout_keeps_the_mark_and_retries_soon() {
    let expected = Expected {
        abnormal: "Reconciling",
        reason: Reason::Timeout,
        retry: Retry::Soon { not_before: None },
        http_status: None,
        clears_mark: false,
    };
    let faults = Faults {
        latency_ms: 2_000,
        ..Default::default()
    };
    let chroma = Chroma::start_with(&[DATABASE], Duration::from_millis(200)).await;
    failed_create(chroma, ADMIN, faults, expected).await;
}

#[tokio::test]
async fn an_unreadable_answer_keeps_the_mark_and_retries_soon() {
    let expected = Expected {
        abnormal: "Reconciling",
        reason: Reason::InvalidResponse,
        retry: Retry::Soon { not_before: None },
        http_status: Some(201),
        clears_mark: false,
    };
    let faults = Faults {
        garble_next: 1,
        ..Default::default()
    };
    let chroma = Chroma::start().await;
    let standin = chroma.standin.clone();
    failed_create(chroma, ADMIN, faults, expected).await;
    assert_eq!(
        standin.created_total(),
        1,
        "the create did happen: the mark stays"
    );
}

#[tokio::test]
async fn a_refused_connection_clears_the_mark_and_retries_soon() {
    // A port nothing listens on: the request never left.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let chroma = fixtures::client_for(&base, Duration::from_secs(5));
    let ctx = sources(client, chroma, Some(ADMIN));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    let cleared = api.patch(OBJECT_PATH).await;
    assert_eq!(
        cleared["metadata"]["annotations"][CREATE_PENDING_ANNOTATION],
        Value::Null
    );
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        conditions(&status),
        failing("Reconciling", "ConnectionFailed")
    );
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Soon { not_before: None },
            reason: Reason::ConnectionFailed
        }
    );
    api.assert_idle();
}

#[tokio::test]
async fn a_failed_delete_of_the_replaced_source_records_the_failure_and_creates_nothing() {
    let chroma = Chroma::start().await;
    let old = chroma.standin.insert_source(standin_body());
    let obj = recorded(source(), &old, "the hash of an older spec");
    chroma.standin.set_faults(fail_next(503));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(conditions(&status), failing("Reconciling", "ServerError"));
    assert_eq!(status["status"]["sourceId"], json!(old), "still recorded");
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Soon { not_before: None },
            reason: Reason::ServerError
        }
    );
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
    assert_eq!(chroma.standin.sources(DATABASE).len(), 1);
    api.assert_idle();
}

#[tokio::test]
async fn a_failed_delete_at_cleanup_keeps_the_finalizer() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = deleting(recorded(source(), &id, &hash_of(&source())));
    chroma.standin.set_faults(fail_next(500));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = cleanup(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(conditions(&status), failing("Reconciling", "ServerError"));
    assert_eq!(status["status"]["sourceId"], json!(id));
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Soon { not_before: None },
            reason: Reason::ServerError
        }
    );
    let stored = api.stored.as_ref().unwrap();
    assert_eq!(stored["metadata"]["finalizers"], json!([FINALIZER]));
    api.assert_idle();
}

#[tokio::test]
async fn the_source_of_an_object_gone_meanwhile_is_deleted_through_failures() {
    // The status write fails without saying why, the reads that follow fail and then find the
    // object gone; the delete of its new source is refused once, with a Retry-After.
    let chroma = Chroma::start().await;
    chroma.standin.set_faults(Faults {
        endpoints: vec!["delete_source".into()],
        rate_limit_next: 1,
        retry_after_secs: 1,
        ..Default::default()
    });
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    api.stored = None;
    api.expect(Method::PATCH, STATUS_PATH)
        .await
        .refuse(500, "InternalError");
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .refuse(503, "ServiceUnavailable");
    let started = std::time::Instant::now();
    api.get().await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the service's Retry-After is honoured"
    );
    assert_eq!(chroma.standin.calls("delete_source", "429"), 1);
    assert_eq!(chroma.standin.calls("delete_source", "204"), 1);
    assert!(chroma.standin.sources(DATABASE).is_empty(), "not leaked");
    api.assert_idle();
}

#[tokio::test]
async fn an_ambiguous_create_of_an_object_gone_meanwhile_is_found_and_deleted() {
    // The create's answer is lost (5xx after the commit would look the same); the object is
    // gone by the status write: the source is found by its mark and deleted.
    let chroma = Chroma::start().await;
    chroma.standin.set_faults(Faults {
        garble_next: 1,
        ..Default::default()
    });
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    api.stored = None;
    api.expect(Method::PATCH, STATUS_PATH)
        .await
        .refuse(404, "NotFound");
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(chroma.standin.created_total(), 1);
    assert!(chroma.standin.sources(DATABASE).is_empty(), "not leaked");
    let calls = [
        ("create_source".into(), 1),
        ("delete_source".into(), 1),
        ("list_sources".into(), 1),
    ];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_idle();
}

/// An object the apiserver let go with our finalizer still on (kubernetes#77988), with `status`
/// as its last known state.
fn let_go(obj: SyncSource) -> SyncSource {
    let mut obj = obj;
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    obj
}

#[tokio::test]
async fn an_object_let_go_has_its_recorded_source_deleted() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = let_go(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    reconcile::orphaned(&ctx, &obj, Namesake::None).await;
    assert!(chroma.standin.sources(DATABASE).is_empty());
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
    api.assert_idle();
}

#[tokio::test]
async fn an_object_let_go_with_an_unrecorded_create_has_that_source_found_and_deleted() {
    let chroma = Chroma::start().await;
    let obj = let_go(marked(source(), jiff::Timestamp::now()));
    chroma.standin.insert_source(standin_body());
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    reconcile::orphaned(&ctx, &obj, Namesake::None).await;
    assert!(chroma.standin.sources(DATABASE).is_empty());
    let calls = [("delete_source".into(), 1), ("list_sources".into(), 1)];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_idle();
}

#[tokio::test]
async fn an_unrecorded_create_is_left_when_a_live_object_declares_the_same_source() {
    let chroma = Chroma::start().await;
    let obj = let_go(marked(source(), jiff::Timestamp::now()));
    chroma.standin.insert_source(standin_body());
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    reconcile::orphaned(&ctx, &obj, Namesake::Declared).await;
    assert!(
        chroma.standin.all_calls().is_empty(),
        "no lookup, no delete"
    );
    assert_eq!(chroma.standin.sources(DATABASE).len(), 1);
    api.assert_idle();
}

#[tokio::test]
async fn an_object_let_go_with_retain_or_without_a_create_costs_no_call() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let mut retained = let_go(recorded(source(), &id, &hash_of(&source())));
    retained.spec.deletion_policy = DeletionPolicy::Retain;
    let never_created = let_go(source());
    let (client, mut api) = ApiServer::start(&retained);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    reconcile::orphaned(&ctx, &retained, Namesake::None).await;
    reconcile::orphaned(&ctx, &never_created, Namesake::None).await;
    assert!(chroma.standin.all_calls().is_empty());
    assert_eq!(chroma.standin.sources(DATABASE).len(), 1);
    api.assert_idle();
}

/// Waits until the stand-in holds no source in the database, or panics.
async fn until_no_source(chroma: &Chroma) {
    for _ in 0..100 {
        if chroma.standin.sources(DATABASE).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the source of the object let go was not deleted");
}

#[tokio::test]
async fn a_watch_delete_with_our_finalizer_on_deletes_the_source() {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = let_go(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    let cache = Writer::<SyncSource>::default();
    let mut orphans = super::orphans::Orphans::new(cache.as_reader(), ctx);

    orphans.observe(&Event::Delete(obj));
    api.crd(fixtures::SOURCES_CRD_PATH, fixtures::Crd::Fine)
        .await;
    until_no_source(&chroma).await;
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
}

#[tokio::test]
async fn an_object_missing_from_a_relist_with_our_finalizer_on_has_its_source_deleted() {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = let_go(recorded(source(), &id, &hash_of(&source())));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    let mut cache = Writer::<SyncSource>::default();
    cache.apply_watcher_event(&Event::Apply(obj));
    let mut orphans = super::orphans::Orphans::new(cache.as_reader(), ctx);

    // The watch was down while the apiserver let the object go: the relist lacks it.
    orphans.observe(&Event::Init);
    orphans.observe(&Event::InitDone);
    api.crd(fixtures::SOURCES_CRD_PATH, fixtures::Crd::Fine)
        .await;
    until_no_source(&chroma).await;
    assert_eq!(
        chroma.standin.all_calls(),
        [("delete_source".into(), 1)].into()
    );
}

/// An object let go with the finalizer on while its CRD is being deleted (or is gone) keeps its
/// source, as a deletion does; so does one whose CRD cannot be read (nothing asks again).
#[tokio::test]
async fn an_object_let_go_while_its_crd_is_deleted_keeps_its_source() {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    for answer in [
        Some(fixtures::Crd::Deleting),
        Some(fixtures::Crd::Gone),
        None,
    ] {
        let chroma = Chroma::start().await;
        let id = chroma.standin.insert_source(standin_body());
        let obj = let_go(recorded(source(), &id, &hash_of(&source())));
        let (client, mut api) = ApiServer::start(&obj);
        let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
        let cache = Writer::<SyncSource>::default();
        let mut orphans = super::orphans::Orphans::new(cache.as_reader(), ctx.clone());

        orphans.observe(&Event::Delete(obj));
        match answer {
            Some(crd) => api.crd(fixtures::SOURCES_CRD_PATH, crd).await,
            None => {
                api.expect(Method::GET, fixtures::SOURCES_CRD_PATH)
                    .await
                    .refuse(403, "Forbidden");
            }
        }
        // The source would be deleted within milliseconds (the test above): give it a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(chroma.standin.all_calls().is_empty(), "{answer:?}");
        assert_eq!(chroma.standin.sources(DATABASE).len(), 1, "{answer:?}");
        api.assert_done(&ctx, &[]).await;
    }
}

/// A status decided on a stale copy (the cache has not seen the recorded id yet) names the
/// copy's resourceVersion, so the apiserver refuses it (409, and the wrapper reads afresh)
/// instead of erasing the id it never saw.
#[tokio::test]
async fn a_status_decided_on_a_stale_copy_is_refused_not_written() {
    let chroma = Chroma::start().await;
    let at = jiff::Timestamp::now();
    let stale = marked(source(), at);
    let mut stored = recorded(marked(source(), at), "src-1", &hash_of(&stale));
    stored.metadata.resource_version = Some("7".into());
    let (client, mut api) = ApiServer::start(&stored);
    // A token the service refuses: the lookup fails, and a failure status follows.
    let ctx = sources(client, chroma.client.clone(), Some("not-a-token"));

    let flow = apply(&stale, &ctx);
    let call = api.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(call.body["metadata"]["resourceVersion"], json!("1"));
    call.refuse(409, "Conflict");
    let result = flow.await.expect("the flow ends");
    assert!(
        matches!(result, Err(ref e) if e.is_conflict()),
        "{result:?}"
    );
    assert_eq!(chroma.standin.created_total(), 0, "nothing created");
}

/// `spec.sync`'s status write is guarded like every other: a decision made on a stale copy
/// meets a 409 and is made again on a fresh read, so it cannot overwrite a newer `lastSync`.
#[tokio::test]
async fn the_sync_status_write_is_guarded_and_a_conflict_decides_again_on_a_fresh_read() {
    const RUNS_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns";
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let mut obj = recorded(source(), &id, &hash_of(&source()));
    obj.spec.sync = Some(Box::new(
        serde_json::from_value(json!({"targetCollectionName": "docs", "ref": {"branch": "main"}}))
            .expect("a sync policy"),
    ));
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();
    let flow = {
        let (obj, ctx) = (Arc::new(obj.clone()), ctx.clone());
        tokio::spawn(driver::reconcile(obj, ctx))
    };
    let no_runs = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRunList",
        "metadata": {"resourceVersion": "1"}, "items": []});
    api.expect(Method::GET, RUNS_PATH)
        .await
        .reply(http::StatusCode::OK, &no_runs);
    let post = api.expect(Method::POST, RUNS_PATH).await;
    let run = post.body.clone();
    post.reply(http::StatusCode::CREATED, &run);
    // The decision was made on resourceVersion 1; another writer has moved the object on.
    let stale = api.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(
        stale.body["metadata"]["resourceVersion"], "1",
        "guarded: {}",
        stale.body
    );
    assert!(stale.body["status"]["syncState"]["startedFor"].is_string());
    stale.refuse(409, "Conflict");
    api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!("7");

    // Decided again on the fresh object: the run it started is found (AlreadyExists), and the
    // status written against the fresh resourceVersion.
    api.get().await;
    api.expect(Method::GET, RUNS_PATH)
        .await
        .reply(http::StatusCode::OK, &no_runs);
    api.expect(Method::POST, RUNS_PATH)
        .await
        .refuse(409, "AlreadyExists");
    let patch = api.patch(STATUS_PATH).await;
    assert_eq!(patch["metadata"]["resourceVersion"], "7");
    flow.await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert_eq!(chroma.standin.all_calls().len(), 0, "no Chroma call");
}

// Sources made or lost outside the operator (`reconcile/outside.rs`), and `spec.sync`.

/// `obj` naming source `id` in `spec.sourceId`.
fn pinned(mut obj: SyncSource, id: &str) -> SyncSource {
    obj.spec.source_id = Some(id.into());
    obj
}

/// `spec.sourceId` names a source made outside the operator that matches the spec: one read,
/// the finalizer, the record and an Event, no create; at rest after it, with no second read.
#[tokio::test]
async fn a_source_named_by_spec_source_id_that_matches_is_adopted_after_one_read() {
    let chroma = Chroma::start().await;
    let id = chroma.standin.insert_source(standin_body());
    let obj = pinned(source(), &id);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let finalizer = api.patch(OBJECT_PATH).await;
    assert_eq!(
        finalizer,
        json!({ "metadata": { "resourceVersion": "1", "finalizers": [FINALIZER] } })
    );
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(status["status"]["sourceId"], json!(id));
    assert_eq!(status["status"]["payloadHash"], json!(hash_of(&obj)));
    assert_eq!(conditions(&status), ready());

    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    assert_eq!(outcome(apply(&stored, &ctx)).await, Next::Settled);
    assert_eq!(
        chroma.standin.all_calls(),
        [("get_source".into(), 1)].into()
    );
    assert_eq!(chroma.standin.created_total(), 1, "no create");
    api.assert_done(&ctx, &[("Normal", "Adopted")]).await;
}

/// One apply of `obj` that stalls with `reason` until the object changes: its one status
/// write, a Warning, no other request. The write and its Ready message.
async fn stalls(chroma: &Chroma, obj: &SyncSource, reason: Reason) -> (Value, String) {
    let (client, mut api) = ApiServer::start(obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    let flow = apply(obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    let stalled = Next::Retry {
        retry: Retry::OnChange,
        reason,
    };
    assert_eq!(outcome(flow).await, stalled);
    assert_eq!(conditions(&status), failing("Stalled", reason.as_str()));
    api.assert_done(&ctx, &[("Warning", reason.as_str())]).await;
    let message = status["status"]["conditions"][0]["message"].as_str();
    let message = message.expect("a message").to_owned();
    (status, message)
}

/// A named source that differs from the spec is reported, naming the field, and left as it is:
/// one read, nothing changed in Chroma, no finalizer.
#[tokio::test]
async fn a_source_named_by_spec_source_id_that_differs_stalls_naming_the_field() {
    let chroma = Chroma::start().await;
    let theirs = json!({ "database_name": DATABASE, "github": { "repository": "acme/other" } });
    let id = chroma.standin.insert_source(theirs.clone());
    let obj = pinned(source(), &id);

    let (status, message) = stalls(&chroma, &obj, Reason::SourceMismatch).await;
    let field = r#"github.repository (spec: "acme/docs", Chroma: "acme/other")"#;
    assert!(message.contains(field), "{message}");
    assert_eq!(status["status"]["sourceId"], Value::Null);
    let read = [("get_source".into(), 1)].into();
    assert_eq!(chroma.standin.all_calls(), read);
    assert_eq!(chroma.standin.sources(DATABASE), vec![(id, theirs)]);
}

/// A `spec.sourceId` other than the source status records: reported without a call, the
/// recorded source kept.
#[tokio::test]
async fn a_source_id_other_than_the_recorded_one_stalls_without_a_call() {
    let chroma = Chroma::start().await;
    let recorded = recorded(source(), "src-kept", &hash_of(&source()));
    let obj = pinned(recorded, "src-named");

    let (status, message) = stalls(&chroma, &obj, Reason::SourceMismatch).await;
    assert_eq!(status["status"]["sourceId"], "src-kept");
    assert!(
        message.contains("status records source src-kept"),
        "{message}"
    );
    assert!(
        message.contains("spec.sourceId names src-named"),
        "{message}"
    );
    assert!(chroma.standin.all_calls().is_empty());
}

/// A first create with `onConflict: Adopt` that meets a source of the same key (`existing`):
/// the mark, the 409, the mark cleared, the listing that finds it and the read that compares
/// it, then the status write. That write, the outcome and the Events.
async fn adopt_after_a_conflict(
    obj: SyncSource,
    existing: Value,
    events: &[(&str, &str)],
) -> (Value, Next) {
    let chroma = Chroma::start().await;
    chroma.standin.insert_source(existing);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    assert_mark(&api.patch(OBJECT_PATH).await);
    api.clear_mark(OBJECT_PATH).await;
    let status = api.patch(STATUS_PATH).await;
    let next = outcome(flow).await;
    assert_eq!(chroma.standin.calls("create_source", "409"), 1);
    let calls = [
        ("create_source".into(), 1),
        ("get_source".into(), 1),
        ("list_sources".into(), 1),
    ];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    assert_eq!(chroma.standin.created_total(), 1, "no second source");
    api.assert_done(&ctx, events).await;
    (status, next)
}

fn on_conflict_adopt() -> SyncSource {
    let mut obj = source();
    obj.spec.on_conflict = ConflictPolicy::Adopt;
    obj
}

#[tokio::test]
async fn on_conflict_adopt_takes_the_existing_source_after_the_409() {
    let adopted = [("Normal", "Adopted")];
    let (status, next) =
        adopt_after_a_conflict(on_conflict_adopt(), standin_body(), &adopted).await;
    assert_eq!(next, Next::Settled);
    assert_eq!(conditions(&status), ready());
    assert!(status["status"]["sourceId"].is_string(), "{status}");
}

/// The existing source has the spec's key but not its settings: reported, not adopted.
#[tokio::test]
async fn on_conflict_adopt_reports_an_existing_source_that_differs() {
    let mut obj = on_conflict_adopt();
    let github = obj.spec.github.as_mut().unwrap();
    github.include_globs = Some(vec!["docs/**".into()]);
    let reported = [("Warning", "SourceMismatch")];
    let (status, next) = adopt_after_a_conflict(obj, standin_body(), &reported).await;
    let stalled = Next::Retry {
        retry: Retry::OnChange,
        reason: Reason::SourceMismatch,
    };
    assert_eq!(next, stalled);
    assert_eq!(conditions(&status), failing("Stalled", "SourceMismatch"));
    assert_eq!(status["status"]["sourceId"], Value::Null);
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("github.includeGlobs"), "{message}");
}

/// A recorded source that the stand-in no longer holds, with `policy`, and a reconcile-now
/// request (which makes the flow look at it).
fn gone_and_asked(policy: MissingPolicy) -> SyncSource {
    let mut obj = recorded(source(), "gone-source", &hash_of(&source()));
    obj.spec.on_source_missing = policy;
    let asked = [(RECONCILE_REQUEST_ANNOTATION.into(), "now-1".into())];
    obj.metadata.annotations = Some(asked.into());
    obj
}

/// Reconcile-now finds the recorded source gone (deleted outside the operator): the id is
/// forgotten first, then the source is created again once, with a Warning naming both ids.
#[tokio::test]
async fn a_source_found_gone_by_reconcile_now_is_created_again_once() {
    let chroma = Chroma::start().await;
    let obj = gone_and_asked(MissingPolicy::Recreate);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let missing = api.patch(STATUS_PATH).await;
    assert_eq!(
        conditions(&missing),
        failing("Reconciling", "SourceMissing")
    );
    assert_eq!(
        missing["status"]["sourceId"],
        Value::Null,
        "forgotten first"
    );
    assert_eq!(missing["status"]["lastHandledReconcileAt"], "now-1");
    assert_mark(&api.patch(OBJECT_PATH).await);
    let recreated = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);

    let now = chroma.standin.sources(DATABASE);
    assert_eq!(now.len(), 1);
    assert_eq!(recreated["status"]["sourceId"], json!(now[0].0));
    assert_eq!(conditions(&recreated), ready());
    assert_eq!(chroma.standin.calls("get_source", "404"), 1);
    let calls = [("create_source".into(), 1), ("get_source".into(), 1)];
    assert_eq!(chroma.standin.all_calls(), calls.into());
    api.assert_done(&ctx, &[("Warning", "Recreated")]).await;
}

#[tokio::test]
async fn a_source_found_gone_with_on_source_missing_report_stalls_and_creates_nothing() {
    let chroma = Chroma::start().await;
    let obj = gone_and_asked(MissingPolicy::Report);

    let (status, message) = stalls(&chroma, &obj, Reason::SourceMissing).await;
    assert_eq!(status["status"]["sourceId"], "gone-source", "kept");
    assert_eq!(status["status"]["lastHandledReconcileAt"], "now-1");
    assert!(message.contains("onSourceMissing: Report"), "{message}");
    let read = [("get_source".into(), 1)].into();
    assert_eq!(chroma.standin.all_calls(), read);
    assert!(chroma.standin.sources(DATABASE).is_empty());
}

const SYNC_RUNS_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns";

/// A Ready source with `spec.sync`, at rest in the stand-in.
fn synced(chroma: &Chroma) -> (SyncSource, String) {
    let id = chroma.standin.insert_source(standin_body());
    let mut obj = recorded(source(), &id, &hash_of(&source()));
    obj.spec.sync = Some(Box::new(
        serde_json::from_value(json!({"targetCollectionName": "docs", "ref": {"branch": "main"}}))
            .expect("a sync policy"),
    ));
    (obj, id)
}

/// Answers `spec.sync`'s read of the runs it owns (by their label) with `items`.
async fn owned_runs(api: &mut ApiServer, items: Value) {
    let call = api.expect(Method::GET, SYNC_RUNS_PATH).await;
    let selector = "labelSelector=chromasync.dev%2Fsync-source%3Ddocs";
    assert!(call.query.contains(selector), "{}", call.query);
    call.reply(http::StatusCode::OK, &fixtures::run_list(items));
}

/// With no run yet, the settings start exactly one: named after them, labelled, owned by the
/// SyncSource (so it goes with it), writing a collection of its own; status records what it was
/// started for, and the source looks at it again soon.
#[tokio::test]
async fn a_ready_source_with_sync_and_no_runs_starts_exactly_one_owned_run() {
    let chroma = Chroma::start().await;
    let (obj, id) = synced(&chroma);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([])).await;
    let post = api.expect(Method::POST, SYNC_RUNS_PATH).await;
    let run = post.body.clone();
    post.reply(http::StatusCode::CREATED, &run);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(10))
    );

    let started_for = sync::fingerprint(&id, obj.spec.sync.as_deref().unwrap());
    let name = format!("docs-{started_for}");
    let meta = &run["metadata"];
    assert_eq!(meta["name"], json!(name));
    assert_eq!(meta["labels"], json!({ SYNC_SOURCE_LABEL: "docs" }));
    assert_eq!(
        meta["annotations"],
        json!({"chromasync.dev/started-by": "settings"})
    );
    let owner = json!([{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
        "name": "docs", "uid": obj.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    assert_eq!(meta["ownerReferences"], owner);
    let spec = json!({"sourceRef": {"name": "docs"}, "targetCollectionName": name,
        "ref": {"branch": "main"}});
    assert_eq!(run["spec"], spec);
    assert_eq!(
        status["status"]["syncState"],
        json!({ "startedFor": started_for })
    );
    assert_eq!(status["metadata"]["resourceVersion"], "1", "guarded");
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    api.assert_idle();
}

/// A run it started is still going while the settings have changed since: no second run (never
/// two at once); status summarizes the run going, once; the next look writes nothing.
#[tokio::test]
async fn a_run_going_is_summarized_in_status_and_no_second_run_starts() {
    let chroma = Chroma::start().await;
    let (mut obj, _) = synced(&chroma);
    let older = SyncState {
        started_for: Some("older-settings".into()),
        ..Default::default()
    };
    obj.status.as_mut().unwrap().sync_state = Some(Box::new(older));
    let going = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "docs-older", "namespace": "ns",
            "labels": {SYNC_SOURCE_LABEL: "docs"},
            "ownerReferences": [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "name": "docs", "uid": obj.metadata.uid, "controller": true}]},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-older"},
        "status": {"invocationId": "inv-1", "phase": "Processing"}});
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([going])).await;
    let status = api.patch(STATUS_PATH).await;
    let soon = Next::LookAgainIn(Duration::from_secs(10));
    assert_eq!(outcome(flow).await, soon);
    let summary = json!({"name": "docs-older", "collectionName": "docs-older",
        "invocationId": "inv-1", "phase": "Processing"});
    assert_eq!(status["status"]["lastSync"], summary);
    assert_eq!(
        status["status"]["syncState"],
        json!({"startedFor": "older-settings"})
    );

    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let flow = apply(&stored, &ctx);
    owned_runs(&mut api, json!([going])).await;
    assert_eq!(outcome(flow).await, soon);
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    api.assert_idle();
}

/// A ClusterChromaSyncConnection `platform`, Ready, admitting namespaces labelled `team=a`.
fn platform() -> Value {
    let ready = json!({"type": "Ready", "status": "True", "reason": "Connected", "message": "",
        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"});
    json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "ClusterChromaSyncConnection",
        "metadata": {"name": "platform", "generation": 1},
        "spec": {"url": "https://sync.example", "tokenSecretRef": {"name": "t", "namespace": "ops"},
                 "namespaceSelector": {"matchLabels": {"team": "a"}}},
        "status": {"observedGeneration": 1, "conditions": [ready]}})
}

#[tokio::test]
async fn a_cluster_connection_that_does_not_admit_the_namespace_refuses_with_no_call() {
    let chroma = Chroma::start().await;
    let mut routing = fixtures::Routing::default();
    routing.put(platform());
    routing.put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": fixtures::NS, "labels": {"team": "b"}}}));
    let mut obj = source();
    obj.spec.connection_ref = Some(
        serde_json::from_value(json!({
            "kind": "ClusterChromaSyncConnection", "name": "platform"
        }))
        .unwrap(),
    );
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = fixtures::context_routed(client, chroma.client.clone(), Some(ADMIN), &routing);
    let ctx = Driver::new(Sources::new(ctx));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    let reason = Reason::ConnectionNotPermitted;
    let next = Next::Retry {
        retry: Retry::Slow,
        reason,
    };
    assert_eq!(outcome(flow).await, next);
    assert_eq!(
        conditions(&status),
        failing("Stalled", "ConnectionNotPermitted")
    );
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("platform") && message.contains(fixtures::NS),
        "{message}"
    );
    assert!(
        chroma.standin.all_calls().is_empty(),
        "no call while refused"
    );
    api.assert_idle();
}

#[tokio::test]
async fn a_source_made_through_one_connection_is_never_reached_through_another() {
    let chroma = Chroma::start().await;
    let mut routing = fixtures::Routing::default();
    routing.put(platform());
    routing.put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": fixtures::NS, "labels": {"team": "a"}}}));
    let id = chroma.standin.insert_source(standin_body());
    // Made through the operator's own settings (no status.connection), now naming `platform`.
    let mut obj = deleting(recorded(source(), &id, &hash_of(&source())));
    obj.spec.connection_ref = Some(
        serde_json::from_value(json!({
            "kind": "ClusterChromaSyncConnection", "name": "platform"
        }))
        .unwrap(),
    );
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = fixtures::context_routed(client, chroma.client.clone(), Some(ADMIN), &routing);
    let ctx = Driver::new(Sources::new(ctx));

    // Being deleted: the delete would go through `platform`; it is refused, and nothing goes.
    let flow = cleanup(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    let reason = Reason::ConnectionChanged;
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::OnChange,
            reason
        }
    );
    assert_eq!(conditions(&status), failing("Stalled", "ConnectionChanged"));
    assert_eq!(
        status["status"]["sourceId"],
        json!(id),
        "the source stays recorded"
    );
    assert!(chroma.standin.all_calls().is_empty());
    assert_eq!(chroma.standin.sources(DATABASE).len(), 1, "nothing deleted");
    api.assert_idle();
}

#[tokio::test]
async fn a_connection_not_checked_yet_leaves_the_object_waiting_with_no_call() {
    let chroma = Chroma::start().await;
    let mut routing = fixtures::Routing::default();
    // The namespace's `default` connection, not checked by the operator yet.
    routing.put(
        json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "ChromaSyncConnection",
        "metadata": {"name": "default", "namespace": fixtures::NS, "generation": 1},
        "spec": {"url": "https://sync.example", "tokenSecretRef": {"name": "t"}}}),
    );
    let obj = source();
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = fixtures::context_routed(client, chroma.client.clone(), Some(ADMIN), &routing);
    let ctx = Driver::new(Sources::new(ctx));

    let flow = apply(&obj, &ctx);
    let status = api.patch(STATUS_PATH).await;
    let reason = Reason::ConnectionNotReady;
    assert_eq!(
        outcome(flow).await,
        Next::Retry {
            retry: Retry::Slow,
            reason
        }
    );
    assert_eq!(
        conditions(&status),
        failing("Reconciling", "ConnectionNotReady")
    );
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("ChromaSyncConnection/default"),
        "{message}"
    );
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
}

const CONFIG_MAPS_PATH: &str = "/api/v1/namespaces/ns/configmaps";

/// A Ready source with `spec.sync.publishTo: docs-current` whose newest run (`docs-c1`) is
/// complete, and that run as the apiserver lists it.
fn published_source(chroma: &Chroma) -> (SyncSource, Value) {
    let (mut obj, _) = synced(chroma);
    obj.spec.sync.as_mut().unwrap().publish_to = Some(crate::crd::PublishTo {
        config_map_name: "docs-current".into(),
    });
    let complete = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "docs-c1", "namespace": "ns",
            "labels": {SYNC_SOURCE_LABEL: "docs"},
            "ownerReferences": [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "name": "docs", "uid": obj.metadata.uid, "controller": true}]},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-c1"},
        "status": {"invocationId": "inv-1", "phase": "Complete",
                   "completionTime": "2026-11-30T10:00:00Z"}});
    let fingerprint = sync::fingerprint(
        obj.status.as_ref().unwrap().source_id.as_deref().unwrap(),
        obj.spec.sync.as_deref().unwrap(),
    );
    obj.status.as_mut().unwrap().sync_state = Some(Box::new(SyncState {
        started_for: Some(fingerprint),
        ..Default::default()
    }));
    (obj, complete)
}

/// Answers the read of the ConfigMap (a list of its one name) with `items`.
async fn listed_config_map(api: &mut ApiServer, items: Value) {
    let call = api.expect(Method::GET, CONFIG_MAPS_PATH).await;
    assert!(
        call.query
            .contains("fieldSelector=metadata.name%3Ddocs-current"),
        "{}",
        call.query
    );
    call.reply(
        http::StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": "1"}, "items": items}),
    );
}

/// A run that completed is published: one list of the ConfigMap's name, one server-side apply
/// under the operator's field manager (owned by the SyncSource as controller), and what it holds
/// is recorded in the status write that records the run. The next reconcile reads and writes
/// nothing for it.
#[tokio::test]
async fn a_completed_run_is_published_once_by_server_side_apply_and_nothing_at_rest() {
    let chroma = Chroma::start().await;
    let (obj, complete) = published_source(&chroma);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([complete])).await;
    listed_config_map(&mut api, json!([])).await;
    let call = api
        .expect(Method::PATCH, &format!("{CONFIG_MAPS_PATH}/docs-current"))
        .await;
    // A first write is not forced: it takes over nothing (see the race test below).
    assert!(
        call.query.contains("fieldManager=chroma-sync-operator")
            && !call.query.contains("force=true"),
        "{}",
        call.query
    );
    let applied = call.body.clone();
    call.reply(http::StatusCode::CREATED, &applied);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);

    assert_eq!(
        applied["data"],
        json!({"collection": "docs-c1", "database": DATABASE, "invocationId": "inv-1",
               "finishedAt": "2026-11-30T10:00:00Z"})
    );
    let owner = json!([{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
        "name": "docs", "uid": obj.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    assert_eq!(applied["metadata"]["ownerReferences"], owner);
    assert_eq!(
        applied["metadata"]["resourceVersion"],
        Value::Null,
        "a create"
    );
    assert_eq!(
        status["status"]["syncState"]["published"],
        "docs-current/docs-c1"
    );
    assert_eq!(status["status"]["lastSync"]["name"], "docs-c1");
    assert!(status["status"].get("conditions").is_none(), "no condition");

    // At rest: no read of the ConfigMap, no write.
    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let flow = apply(&stored, &ctx);
    owned_runs(&mut api, json!([complete])).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    api.assert_done(&ctx, &[]).await;
}

/// Someone creates the ConfigMap between the operator's read (none) and its first write: the
/// unforced apply meets their fields (409) and nothing of theirs is taken over; the same
/// `PublishConflict` as for a ConfigMap that was there before.
#[tokio::test]
async fn a_config_map_created_by_someone_else_during_the_first_write_is_not_taken_over() {
    let chroma = Chroma::start().await;
    let (obj, complete) = published_source(&chroma);
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([complete])).await;
    listed_config_map(&mut api, json!([])).await;
    let call = api
        .expect(Method::PATCH, &format!("{CONFIG_MAPS_PATH}/docs-current"))
        .await;
    assert!(!call.query.contains("force=true"), "{}", call.query);
    call.reply(
        http::StatusCode::CONFLICT,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                "reason": "Conflict", "message": "Apply failed with 1 conflict: conflict with \"kubectl\": .data.owner"}),
    );
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(60))
    );
    assert_eq!(
        conditions(&status),
        [
            ("Ready".into(), "True".into(), "SourceReady".into()),
            ("Published".into(), "False".into(), "PublishConflict".into())
        ]
    );
    assert!(status["status"]["syncState"].get("published").is_none());
    api.assert_done(&ctx, &[("Warning", "PublishConflict")])
        .await;
}

/// A ConfigMap of that name that the SyncSource does not own is never written: condition
/// `Published=False` (`PublishConflict`) and one Warning Event, Ready kept, a look again in a
/// minute; looking again while it stands writes nothing more.
#[tokio::test]
async fn a_config_map_that_is_not_ours_is_left_alone_and_reported_once() {
    let chroma = Chroma::start().await;
    let (obj, complete) = published_source(&chroma);
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "docs-current", "namespace": "ns", "resourceVersion": "7"},
        "data": {"owner": "someone else"}});
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));
    let minute = Next::LookAgainIn(Duration::from_secs(60));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([complete])).await;
    listed_config_map(&mut api, json!([theirs])).await;
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, minute);
    assert_eq!(
        conditions(&status),
        [
            ("Ready".into(), "True".into(), "SourceReady".into()),
            ("Published".into(), "False".into(), "PublishConflict".into())
        ]
    );
    assert!(status["status"]["syncState"].get("published").is_none());

    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let flow = apply(&stored, &ctx);
    owned_runs(&mut api, json!([complete])).await;
    listed_config_map(&mut api, json!([theirs])).await;
    assert_eq!(outcome(flow).await, minute);
    api.assert_done(&ctx, &[("Warning", "PublishConflict")])
        .await;
    let notes = api.event_notes(&ctx).await;
    assert!(notes[0].contains("ns/docs-current"), "{notes:?}");
}

/// A reconcile request on a synced source at rest, its previous run complete: the source is
/// looked at (one GET), the request echoed, and one run started for it, named after the
/// value; the served value is recorded in the same guarded write that records the run (on the
/// object as stored after the echo, so no conflict), and `lastSync` names the new run without
/// keeping the previous run's phase or invocation. The same request again starts nothing.
#[tokio::test]
async fn a_reconcile_request_starts_one_run_recorded_with_its_start() {
    let chroma = Chroma::start().await;
    let (mut obj, complete) = published_source(&chroma);
    obj.spec.sync.as_mut().unwrap().publish_to = None;
    obj.status.as_mut().unwrap().last_sync = Some(Box::new(
        serde_json::from_value(json!({"name": "docs-c1", "collectionName": "docs-c1",
            "invocationId": "inv-1", "phase": "Complete",
            "finishedAt": "2026-11-30T10:00:00Z"}))
        .unwrap(),
    ));
    let asked = [(RECONCILE_REQUEST_ANNOTATION.into(), "push-1".into())];
    obj.metadata.annotations = Some(asked.into());
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    let echo = api.patch(STATUS_PATH).await;
    assert_eq!(echo["status"]["lastHandledReconcileAt"], "push-1");
    owned_runs(&mut api, json!([complete])).await;
    let post = api.expect(Method::POST, SYNC_RUNS_PATH).await;
    let run = post.body.clone();
    post.reply(http::StatusCode::CREATED, &run);
    let status = api.patch(STATUS_PATH).await;
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(10))
    );
    let name = run["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("docs-r"), "{name}");
    assert_eq!(
        run["metadata"]["annotations"],
        json!({"chromasync.dev/started-by": "request"})
    );
    assert_eq!(
        status["status"]["syncState"]["handledReconcileRequestedAt"],
        "push-1"
    );
    assert_eq!(
        status["status"]["lastSync"]["name"], "docs-c1",
        "summarized at the next look"
    );

    // The next look: the new run listed, not started yet (no status). No second run (the value
    // is served); lastSync names it, and the previous run's phase, invocation and finish time
    // are removed, not kept.
    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let mut created = run.clone();
    created["metadata"]["creationTimestamp"] = json!("2026-11-30T10:59:00Z");
    created["metadata"]["namespace"] = json!("ns");
    let flow = apply(&stored, &ctx);
    owned_runs(&mut api, json!([created, complete])).await;
    let summary = api.patch(STATUS_PATH).await;
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(10))
    );
    assert_eq!(summary["status"]["lastSync"]["name"], json!(name));
    for field in ["phase", "invocationId", "finishedAt"] {
        assert_eq!(summary["status"]["lastSync"][field], Value::Null, "{field}");
    }
    let stored = api.stored.clone().unwrap();
    assert_eq!(stored["status"]["lastSync"].get("phase"), None);
    assert_eq!(
        stored["status"]["syncState"]["handledReconcileRequestedAt"],
        "push-1"
    );
    assert_eq!(chroma.standin.calls("get_source", "200"), 1, "one look");
    api.assert_done(&ctx, &[]).await;
}

/// `keepCollections` after a crash between two deletes: the record in status is as before the
/// first delete (it is written only after them), the first collection is gone already. The
/// same two are decided again: the gone one answers 404 (counted as deleted), the other is
/// deleted; one status write after the deletes marks both and counts them, one `CollectionsPruned` Event; the
/// newest is kept. Looking again at rest calls Chroma for nothing and writes nothing.
#[tokio::test]
async fn keep_collections_resumes_after_a_crash_between_two_deletes() {
    let chroma = Chroma::start().await;
    let (mut obj, _) = synced(&chroma);
    obj.spec.sync.as_mut().unwrap().keep_collections = Some(1);
    let entry = |run: &str, minute: u32| {
        serde_json::from_value::<crate::crd::OwnCollection>(json!({
            "name": format!("docs-{run}"), "run": run, "complete": true,
            "finishedAt": format!("2026-11-30T10:{minute:02}:00Z")}))
        .unwrap()
    };
    let fingerprint = sync::fingerprint(
        obj.status.as_ref().unwrap().source_id.as_deref().unwrap(),
        obj.spec.sync.as_deref().unwrap(),
    );
    obj.status.as_mut().unwrap().sync_state = Some(Box::new(SyncState {
        started_for: Some(fingerprint),
        collections: Some(vec![entry("c3", 3), entry("c2", 2), entry("c1", 1)]),
        ..Default::default()
    }));
    // Only the newest run is left in the history; the record remembers the other two.
    let newest = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "c3", "namespace": "ns",
            "labels": {SYNC_SOURCE_LABEL: "docs"},
            "ownerReferences": [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "name": "docs", "uid": obj.metadata.uid, "controller": true}]},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-c3"},
        "status": {"invocationId": "inv-3", "phase": "Complete",
                   "completionTime": "2026-11-30T10:03:00Z"}});
    for name in ["docs-c3", "docs-c1"] {
        chroma
            .standin
            .insert_collection(&obj.spec.database_name, name);
    }
    // docs-c2 was deleted by the operator that was killed before its status write.
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    let flow = apply(&obj, &ctx);
    owned_runs(&mut api, json!([newest])).await;
    // status.lastSync names the newest run (this object's status had none), then the deletes.
    let summary = api.patch(STATUS_PATH).await;
    assert_eq!(summary["status"]["lastSync"]["name"], "c3");
    let record = &summary["status"]["syncState"]["collections"];
    assert_eq!(record.as_array().map(Vec::len), Some(3), "{summary:#}");
    assert!(
        record
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("deleted").is_none()),
        "nothing recorded as deleted before the deletes: {summary:#}"
    );
    let patch = api.patch(STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    let database = &obj.spec.database_name;
    assert_eq!(chroma.standin.collections(database), ["docs-c3"]);
    assert_eq!(chroma.standin.calls("delete_collection", "404"), 1);
    assert_eq!(chroma.standin.calls("delete_collection", "200"), 1);
    assert_eq!(chroma.standin.calls("get_identity", "200"), 1);
    let state = &patch["status"]["syncState"];
    assert_eq!(state["prunedCollections"], json!(2));
    // Both deleted; their runs are gone, so they are forgotten in the same write.
    assert_eq!(
        state["collections"],
        json!([{"name": "docs-c3", "run": "c3", "complete": true,
                "finishedAt": "2026-11-30T10:03:00Z"}]),
        "{state:#}"
    );
    api.assert_done(&ctx, &[("Normal", "CollectionsPruned")])
        .await;

    // At rest: nothing to delete, no Chroma call, no write.
    chroma.standin.reset();
    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let flow = apply(&stored, &ctx);
    owned_runs(&mut api, json!([newest])).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");
    // No Event beyond the first pass's one.
    api.assert_done(&ctx, &[("Normal", "CollectionsPruned")])
        .await;
}

/// A collection delete that fails (an injected 503) deletes and records nothing, says so in a
/// Warning Event (`CollectionPruneFailed`) and looks again within a minute; while a run is
/// going, nothing is deleted and Chroma is not called at all.
#[tokio::test]
async fn keep_collections_reports_a_failed_delete_and_waits_for_a_run_going() {
    let chroma = Chroma::start().await;
    let (mut obj, _) = synced(&chroma);
    obj.spec.sync.as_mut().unwrap().keep_collections = Some(1);
    let run = |name: &str, phase: &str, minute: u32| {
        json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
            "metadata": {"name": name, "namespace": "ns",
                "labels": {SYNC_SOURCE_LABEL: "docs"},
                "creationTimestamp": format!("2026-11-30T10:{minute:02}:00Z"),
                "ownerReferences": [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                    "name": "docs", "uid": obj.metadata.uid, "controller": true}]},
            "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": format!("docs-{name}")},
            "status": {"phase": phase, "completionTime": format!("2026-11-30T10:{minute:02}:30Z")}})
    };
    let fingerprint = sync::fingerprint(
        obj.status.as_ref().unwrap().source_id.as_deref().unwrap(),
        obj.spec.sync.as_deref().unwrap(),
    );
    obj.status.as_mut().unwrap().sync_state = Some(Box::new(SyncState {
        started_for: Some(fingerprint),
        ..Default::default()
    }));
    let database = obj.spec.database_name.clone();
    for name in ["docs-c2", "docs-c1"] {
        chroma.standin.insert_collection(&database, name);
    }
    let (client, mut api) = ApiServer::start(&obj);
    let ctx = sources(client, chroma.client.clone(), Some(ADMIN));

    // A run going: the record is written (with lastSync), nothing deleted, no Chroma call.
    let going = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "g3", "namespace": "ns", "labels": {SYNC_SOURCE_LABEL: "docs"},
            "creationTimestamp": "2026-11-30T10:03:00Z",
            "ownerReferences": [{"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "name": "docs", "uid": obj.metadata.uid, "controller": true}]},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-g3"},
        "status": {"phase": "Processing"}});
    let flow = apply(&obj, &ctx);
    owned_runs(
        &mut api,
        json!([going, run("c2", "Complete", 2), run("c1", "Complete", 1)]),
    )
    .await;
    let written = api.patch(STATUS_PATH).await;
    assert_eq!(
        written["status"]["syncState"]["collections"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(10))
    );
    assert!(chroma.standin.all_calls().is_empty(), "no Chroma call");

    // The run ended; the delete fails: nothing recorded, a Warning, a look within a minute.
    chroma.standin.set_faults(Faults {
        endpoints: vec!["delete_collection".into()],
        fail_next: 1,
        ..Default::default()
    });
    let stored: SyncSource = serde_json::from_value(api.stored.clone().unwrap()).unwrap();
    let flow = apply(&stored, &ctx);
    owned_runs(
        &mut api,
        json!([run("c2", "Complete", 2), run("c1", "Complete", 1)]),
    )
    .await;
    // lastSync moves to the newest finished run; no write for the deletes.
    let summary = api.patch(STATUS_PATH).await;
    assert_eq!(summary["status"]["lastSync"]["name"], "c2");
    assert_eq!(
        outcome(flow).await,
        Next::LookAgainIn(Duration::from_secs(60))
    );
    assert_eq!(chroma.standin.calls("delete_collection", "503"), 1);
    assert_eq!(chroma.standin.collections(&database).len(), 2);
    api.assert_done(&ctx, &[("Warning", "CollectionPruneFailed")])
        .await;
    let notes = api.event_notes(&ctx).await;
    assert!(notes[0].contains("docs-c1"), "{notes:?}");
}

/// A token's tenant is asked of the Chroma API once, however many pruning passes need it; an
/// ask that failed is not remembered.
#[tokio::test]
async fn the_tenant_of_a_token_is_asked_once() {
    use crate::chroma::Token;
    use crate::kernel::connections::{Endpoint, Via};
    let chroma = Chroma::start().await;
    let (client, _api) = ApiServer::start(&source());
    let ctx = fixtures::context(client, chroma.client.clone(), Some(ADMIN));
    let endpoint = Endpoint {
        via: Via::Operator,
        chroma: chroma.client.clone(),
        token: Token::new(ADMIN).unwrap(),
    };
    chroma.standin.set_faults(Faults {
        endpoints: vec!["get_identity".into()],
        garble_next: 1,
        ..Default::default()
    });
    assert!(ctx.tenant(&endpoint).await.is_err(), "a garbled answer");
    let tenant = ctx.tenant(&endpoint).await.unwrap();
    assert!(!tenant.is_empty());
    for _ in 0..3 {
        assert_eq!(ctx.tenant(&endpoint).await.unwrap(), tenant);
    }
    assert_eq!(
        chroma.standin.calls("get_identity", "*"),
        2,
        "asked again after the failure only"
    );
}
