//! The SyncRun flows against a mock apiserver and the Chroma stand-in, as the SyncSource flows
//! are tested (`source/flows.rs`): each Kubernetes request asserted and answered in order, the
//! Chroma calls read from the stand-in's counters.

use super::{Next, Reason, Runs, decide, reconcile};
use crate::chroma::wire::CreateSourcePayload;
use crate::chroma::{Cancelled, Token};
use crate::crd::run::{RUN_FINALIZER, RunPhase, SyncRun, SyncRunStatus};
use crate::crd::{CREATE_PENDING_ANNOTATION, PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION};
use crate::kernel::driver::{self, Driver};
use crate::kernel::fixtures::{
    self, ADMIN, ApiServer, Chroma, DATABASE, NS, OBJECT_PATH, conditions,
};
use crate::kernel::{Error, Retry, create};
use chroma_sync_standin::{Faults, RunPlan};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

const RUN_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns/docs-run";
const RUN_STATUS_PATH: &str =
    "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns/docs-run/status";
const RUNS_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncruns";

fn runs(client: kube::Client, chroma: &Chroma) -> Arc<Driver<Runs>> {
    let ctx = fixtures::context(client, chroma.client.clone(), Some(ADMIN));
    ctx.credentials.set_synced();
    Driver::new(Runs::new(ctx))
}

/// A run of the `docs` SyncSource's GitHub source, as the apiserver would hand it over.
fn run() -> SyncRun {
    serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncRun",
        "metadata": {
            "name": "docs-run", "namespace": NS, "uid": "2f7e5a5c-0b7e-4a53-9d8e-5f0c1d2e3a4b",
            "resourceVersion": "1", "generation": 1,
        },
        "spec": {
            "sourceRef": {"name": "docs"},
            "targetCollectionName": "docs-main",
            "ref": {"branch": "main"},
        },
    }))
    .expect("a SyncRun")
}

/// The `docs` SyncSource, Ready with source `id` recorded.
fn ready_source(id: &str) -> Value {
    json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncSource",
        "metadata": {"name": "docs", "namespace": NS, "resourceVersion": "3", "generation": 1},
        "spec": {"databaseName": DATABASE, "github": {"repository": "acme/docs"}},
        "status": {
            "observedGeneration": 1,
            "sourceId": id,
            "conditions": [{"type": "Ready", "status": "True", "reason": "SourceReady",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1}],
        },
    })
}

/// A source in the stand-in for the runs to run on.
async fn a_source(chroma: &Chroma) -> String {
    let payload: CreateSourcePayload = serde_json::from_value(
        json!({"database_name": DATABASE, "github": {"repository": "acme/docs"}}),
    )
    .expect("a payload");
    let token = Token::new(ADMIN).expect("a token");
    chroma
        .client
        .create_source(&token, &payload)
        .await
        .expect("the source is created")
}

/// A 409 on the guarded mark means the cached run was stale: the driver reads it afresh and
/// decides again at once (as it does for SyncSources), and the run gets exactly one invocation.
/// The reconcile is counted under its kind.
#[tokio::test]
async fn a_conflict_on_the_mark_decides_again_on_a_fresh_read_and_creates_once() {
    let chroma = Chroma::start().await;
    let source_id = a_source(&chroma).await;
    let obj = run();
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = tokio::spawn(driver::reconcile(Arc::new(obj), runs.clone()));

    let source = ready_source(&source_id);
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .reply(StatusCode::OK, &source);
    api.expect(Method::PATCH, RUN_PATH)
        .await
        .refuse(409, "Conflict");
    assert_eq!(chroma.standin.calls("create_invocation", "*"), 0);
    api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!("5");

    api.get_at(RUN_PATH).await;
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .reply(StatusCode::OK, &source);
    let mark = api.patch(RUN_PATH).await;
    assert_eq!(
        mark["metadata"]["resourceVersion"], "5",
        "on the fresh read"
    );
    assert_eq!(mark["metadata"]["finalizers"], json!([RUN_FINALIZER]));
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["sourceId"], json!(source_id));
    let invocation = status["status"]["invocationId"].as_str().expect("an id");

    flow.await
        .expect("the reconcile ran")
        .expect("it succeeded");
    assert_eq!(chroma.standin.calls("create_invocation", "*"), 1);
    assert!(!invocation.is_empty());
    let metrics = runs.metrics.render();
    assert!(
        metrics.contains(r#"chroma_sync_operator_reconciles_total{kind="SyncRun"} 1"#),
        "{metrics}"
    );
    api.assert_idle();
}

/// Releasing the finalizer under a busy writer re-reads and writes again (as for SyncSources)
/// instead of failing the cleanup, which would run it again.
#[tokio::test]
async fn the_finalizer_is_released_under_a_busy_writer() {
    let chroma = Chroma::start().await;
    let mut obj = run();
    obj.metadata.finalizers = Some(vec![RUN_FINALIZER.into()]);
    obj.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    obj.status = Some(
        serde_json::from_value(json!({"invocationId": "inv-1", "phase": "Complete"}))
            .expect("a status"),
    );
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = {
        let (obj, runs) = (obj.clone(), runs.clone());
        tokio::spawn(async move { reconcile::cleanup(&obj, &runs).await })
    };
    for version in ["2", "3"] {
        api.expect(Method::PATCH, RUN_PATH)
            .await
            .refuse(409, "Conflict");
        api.stored.as_mut().unwrap()["metadata"]["resourceVersion"] = json!(version);
        api.get_at(RUN_PATH).await;
    }
    let release = api.patch(RUN_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(release["metadata"]["resourceVersion"], "3");
    let next = flow.await.expect("the flow ran").expect("it succeeded");
    assert_eq!(next, Next::Settled);
    assert!(
        chroma.standin.all_calls().is_empty(),
        "a finished run: no cancel"
    );
    api.assert_idle();
}

/// A run whose source is not Ready waits, and says so, without a call.
#[tokio::test]
async fn a_run_waits_for_its_source_without_a_call() {
    let chroma = Chroma::start().await;
    let obj = run();
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &chroma);
    let flow = {
        let (obj, runs) = (obj.clone(), runs.clone());
        tokio::spawn(async move { reconcile::apply(&obj, &runs).await })
    };
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .refuse(404, "NotFound");
    let status = api.patch(RUN_STATUS_PATH).await;
    let reasons: Vec<&str> = status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert_eq!(reasons, [Reason::WaitingForSource.as_str(); 2]);
    let next = flow.await.expect("the flow ran").expect("it succeeded");
    assert!(matches!(next, Next::LookAgainIn(_)), "{next:?}");
    assert!(chroma.standin.all_calls().is_empty());
    api.assert_idle();
}

// The SyncRun flows one by one, on the stand-in's source and its invocations (a run's phases
// come from the plan it was created under: see `standin::RunPlan`).

type Flow = JoinHandle<Result<Next, Error>>;

/// A phase that outlasts any test.
const HOUR_MS: u64 = 3_600_000;

fn plan(pending_ms: u64, processing_ms: u64, fail_with: Option<&str>) -> RunPlan {
    RunPlan {
        pending_ms,
        processing_ms,
        fail_with: fail_with.map(str::to_owned),
    }
}

fn token() -> Token {
    Token::new(ADMIN).expect("a token")
}

/// The stand-in holding the `docs` source, and the calls its setup made (which [`Self::calls`]
/// leaves out).
struct Service {
    chroma: Chroma,
    source_id: String,
    setup: BTreeMap<String, u64>,
}

impl Service {
    async fn start() -> Self {
        let chroma = Chroma::start().await;
        let source_id = chroma.standin.insert_source(fixtures::standin_body());
        Self {
            chroma,
            source_id,
            setup: BTreeMap::new(),
        }
    }

    /// An invocation of the source with [`run`]'s payload, going as `plan` says.
    async fn invocation(&mut self, plan: RunPlan) -> String {
        self.chroma.standin.set_run_plan(plan);
        let payload = decide::payload(&run().spec, &fixtures::source().spec).expect("a payload");
        let id = self
            .chroma
            .client
            .create_invocation(&token(), &self.source_id, &payload)
            .await
            .expect("the invocation is created");
        self.setup = self.chroma.standin.all_calls();
        id
    }

    /// An invocation that has ended as `fail_with` says (complete after 2 ms of processing).
    async fn finished(&mut self, fail_with: Option<&str>) -> String {
        let id = self.invocation(plan(0, 2, fail_with)).await;
        while self.status_of(&id) == "processing" {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        id
    }

    /// A pending invocation, cancelled.
    async fn cancelled(&mut self) -> String {
        let id = self.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
        let cancel = self.chroma.client.cancel_invocation(&token(), &id).await;
        assert_eq!(cancel.expect("cancelled"), Cancelled::Now);
        self.setup = self.chroma.standin.all_calls();
        id
    }

    /// The Chroma calls the flows made, by endpoint.
    fn calls(&self) -> BTreeMap<String, u64> {
        let mut made = self.chroma.standin.all_calls();
        for (endpoint, before) in &self.setup {
            if let Some(n) = made.get_mut(endpoint) {
                *n -= before;
            }
        }
        made.retain(|_, n| *n > 0);
        made
    }

    /// How the stand-in reports invocation `id` now: "pending", {"complete": ..}, ...
    fn status_of(&self, id: &str) -> Value {
        let all = self.chroma.standin.invocations(&self.source_id);
        let job = all.iter().find(|j| j["id"] == id).expect("the invocation");
        job["status"].clone()
    }

    fn ready_source(&self) -> Value {
        ready_source(&self.source_id)
    }
}

/// [`run`] as a reconcile left it: finalizer on, invocation `id` of `source_id` recorded in
/// `phase`, started `ago`.
fn recorded(id: &str, source_id: &str, phase: RunPhase, ago: Duration) -> SyncRun {
    let mut obj = run();
    obj.metadata.finalizers = Some(vec![RUN_FINALIZER.into()]);
    let started = jiff::Timestamp::now()
        .checked_sub(ago)
        .expect("a start time");
    obj.status = Some(SyncRunStatus {
        observed_generation: Some(1),
        invocation_id: Some(id.into()),
        source_id: Some(source_id.into()),
        phase: Some(phase),
        start_time: Some(Time(started)),
        conditions: decide::conditions(&[], 1, Some(phase), None, None, started),
        ..Default::default()
    });
    obj
}

/// [`run`] with its finalizer and a create-pending mark of now, and no invocation recorded: an
/// attempt whose answer was lost.
fn marked() -> SyncRun {
    let mut obj = run();
    obj.metadata.finalizers = Some(vec![RUN_FINALIZER.into()]);
    let mark = jiff::Timestamp::now().to_string();
    obj.metadata.annotations = Some([(CREATE_PENDING_ANNOTATION.into(), mark)].into());
    obj
}

fn annotated(mut obj: SyncRun, key: &str, value: &str) -> SyncRun {
    let annotations = obj.metadata.annotations.get_or_insert_default();
    annotations.insert(key.into(), value.into());
    obj
}

fn deleting(mut obj: SyncRun) -> SyncRun {
    obj.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    obj
}

/// The run as the mock apiserver stores it now.
fn stored(api: &ApiServer) -> SyncRun {
    serde_json::from_value(api.stored.clone().expect("stored")).expect("a SyncRun")
}

#[derive(Clone, Copy)]
enum Which {
    Apply,
    Cleanup,
}

fn start(which: Which, obj: &SyncRun, runs: &Arc<Driver<Runs>>) -> Flow {
    let (obj, runs) = (obj.clone(), runs.clone());
    tokio::spawn(async move {
        match which {
            Which::Apply => reconcile::apply(&obj, &runs).await,
            Which::Cleanup => reconcile::cleanup(&obj, &runs).await,
        }
    })
}

async fn outcome(flow: Flow) -> Next {
    flow.await
        .expect("the flow ran")
        .expect("the flow succeeded")
}

/// Answers the flow's read of its SyncSource with `source`.
async fn give(api: &mut ApiServer, source: &Value) {
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .reply(StatusCode::OK, source);
}

/// `which` flow of `obj`, started on a mock apiserver that holds it.
fn launch(service: &Service, which: Which, obj: &SyncRun) -> (ApiServer, Arc<Driver<Runs>>, Flow) {
    let (client, api) = ApiServer::start(obj);
    let runs = runs(client, &service.chroma);
    let flow = start(which, obj, &runs);
    (api, runs, flow)
}

/// [`launch`], past the flow's read of the SyncSource (Ready, on `service`'s source).
async fn started(
    service: &Service,
    which: Which,
    obj: &SyncRun,
) -> (ApiServer, Arc<Driver<Runs>>, Flow) {
    let (mut api, runs, flow) = launch(service, which, obj);
    give(&mut api, &service.ready_source()).await;
    (api, runs, flow)
}

/// Another apply of the run as stored, past its read of the SyncSource.
async fn again(service: &Service, api: &mut ApiServer, runs: &Arc<Driver<Runs>>) -> Flow {
    let flow = start(Which::Apply, &stored(api), runs);
    give(api, &service.ready_source()).await;
    flow
}

/// Answers the lookup's read of the namespace's SyncRuns (whose recorded invocations are not
/// this run's to take) with `items`.
async fn list_runs(api: &mut ApiServer, items: Value) {
    api.expect(Method::GET, RUNS_PATH)
        .await
        .reply(StatusCode::OK, &fixtures::run_list(items));
}

/// Asserts the guarded mark: on resourceVersion `version`, the run's finalizer and a mark.
fn assert_mark(patch: &Value, version: &str) {
    let meta = &patch["metadata"];
    assert_eq!(meta["resourceVersion"], version, "guarded: {patch}");
    assert_eq!(meta["finalizers"], json!([RUN_FINALIZER]));
    let mark = meta["annotations"][CREATE_PENDING_ANNOTATION].as_str();
    let at: jiff::Timestamp = mark.expect("a mark").parse().expect("a time");
    let age = jiff::Timestamp::now().duration_since(at);
    assert!(age.as_secs() < 60, "the mark is the time of the write");
}

fn failing(abnormal: &str, reason: Reason) -> Vec<(String, String, String)> {
    let reason = reason.as_str().to_owned();
    vec![
        ("Ready".into(), "False".into(), reason.clone()),
        (abnormal.into(), "True".into(), reason),
    ]
}

fn complete() -> Vec<(String, String, String)> {
    vec![("Ready".into(), "True".into(), "Complete".into())]
}

/// `next` is a look again `base` from now (plus the time the test has taken, for a run's
/// elapsed time), give or take the 10% jitter.
fn assert_looks_again_around(next: Next, base: Duration) {
    let Next::LookAgainIn(after) = next else {
        panic!("{next:?}");
    };
    let taken = Duration::from_secs(5);
    let (low, high) = (base.mul_f64(0.9), (base + taken).mul_f64(1.1));
    assert!(
        low <= after && after <= high,
        "{after:?} not within 10% of {base:?}"
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn a_first_create_marks_then_creates_one_invocation_then_records_it_pending() {
    let service = Service::start().await;
    let (mut api, runs, flow) = started(&service, Which::Apply, &run()).await;

    assert_mark(&api.patch(RUN_PATH).await, "1");
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["metadata"]["resourceVersion"], "2", "guarded");
    let next = outcome(flow).await;

    let made = service.chroma.standin.invocations(&service.source_id);
    assert_eq!(made.len(), 1);
    let recorded = &status["status"];
    assert_eq!(recorded["invocationId"], made[0]["id"]);
    assert_eq!(recorded["sourceId"], json!(service.source_id));
    assert_eq!(recorded["phase"], "Pending");
    assert_eq!(recorded["observedGeneration"], 1);
    assert!(recorded["startTime"].is_string(), "{status}");
    assert_eq!(recorded["lastError"], Value::Null);
    assert_eq!(conditions(&status), failing("Reconciling", Reason::Pending));
    assert_looks_again_around(next, decide::POLL_FIRST);
    assert_eq!(service.calls(), [("create_invocation".into(), 1)].into());
    assert_eq!(service.chroma.standin.calls("create_invocation", "201"), 1);
    api.assert_done(&runs, &[]).await; // a first create is in status alone
}

/// A mark and no recorded invocation: the create may have happened with its answer lost. The
/// run's invocation is listed (not another run's, which it skips) and recorded, with no create.
#[tokio::test]
async fn a_mark_without_an_invocation_id_records_the_listed_invocation_and_creates_nothing() {
    let mut service = Service::start().await;
    let claimed = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let own = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let (mut api, runs, flow) = started(&service, Which::Apply, &marked()).await;

    let other = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "older-run", "namespace": NS},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-main",
            "ref": {"branch": "main"}},
        "status": {"invocationId": claimed, "sourceId": service.source_id}});
    list_runs(&mut api, json!([other])).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::LookAgainIn(decide::POLL_FIRST));

    assert_eq!(
        status["status"]["invocationId"],
        json!(own),
        "not the claimed one"
    );
    assert_eq!(status["status"]["sourceId"], json!(service.source_id));
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(service.calls(), [("list_invocations".into(), 1)].into());
    assert_eq!(
        service.chroma.standin.invocations(&service.source_id).len(),
        2
    );
    api.assert_done(&runs, &[("Normal", "Adopted")]).await;
}

/// A 5xx to the create may have created the invocation: the mark stays and the run retries
/// soon. The next reconcile looks first, finds nothing (the failure created nothing), marks
/// again and creates once.
#[tokio::test]
async fn a_server_error_on_create_keeps_the_mark_and_the_next_reconcile_looks_then_creates_once() {
    let service = Service::start().await;
    service.chroma.standin.set_faults(fail_create(503));
    let (mut api, runs, flow) = started(&service, Which::Apply, &run()).await;
    assert_mark(&api.patch(RUN_PATH).await, "1");
    let failed = api.patch(RUN_STATUS_PATH).await;
    let soon = Retry::Soon { not_before: None };
    let retried = Next::Retry {
        retry: soon,
        reason: Reason::ServerError,
    };
    assert_eq!(outcome(flow).await, retried);
    assert_eq!(
        conditions(&failed),
        failing("Reconciling", Reason::ServerError)
    );
    assert_eq!(failed["status"]["lastError"]["httpStatus"], 503);
    assert_eq!(failed["status"]["phase"], Value::Null);
    assert_eq!(failed["status"]["invocationId"], Value::Null);
    assert!(
        create::pending_mark(&stored(&api)).is_some(),
        "the mark stays"
    );

    // The listing has nothing since the mark, so the other runs' claims are not read.
    let flow = again(&service, &mut api, &runs).await;
    assert_mark(&api.patch(RUN_PATH).await, "3");
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_looks_again_around(outcome(flow).await, decide::POLL_FIRST);
    let made = service.chroma.standin.invocations(&service.source_id);
    assert_eq!(made.len(), 1);
    assert_eq!(status["status"]["invocationId"], made[0]["id"]);
    assert_eq!(status["status"]["lastError"], Value::Null);
    assert_eq!(conditions(&status), failing("Reconciling", Reason::Pending));
    let calls = [
        ("create_invocation".into(), 2),
        ("list_invocations".into(), 1),
    ];
    assert_eq!(service.calls(), calls.into());
    assert_eq!(service.chroma.standin.calls("create_invocation", "503"), 1);
    api.assert_done(&runs, &[]).await;
}

/// A run recorded Pending whose invocation has started: one look, one write of the new phase,
/// and the next look as far off as the run has gone; that look finds the phase unchanged and
/// writes nothing.
#[tokio::test]
async fn a_phase_change_is_written_once_and_the_look_after_waits_as_long_as_the_run_has_gone() {
    let mut service = Service::start().await;
    let id = service.invocation(plan(0, HOUR_MS, None)).await;
    let obj = recorded(&id, &service.source_id, RunPhase::Pending, secs(30));
    let (mut api, runs, flow) = started(&service, Which::Apply, &obj).await;

    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Processing");
    assert_eq!(status["status"]["invocationId"], json!(id));
    assert_eq!(
        conditions(&status),
        failing("Reconciling", Reason::Processing)
    );
    assert_looks_again_around(outcome(flow).await, secs(30));
    assert_eq!(service.calls(), [("get_invocation".into(), 1)].into());

    let flow = again(&service, &mut api, &runs).await;
    assert_looks_again_around(outcome(flow).await, secs(30));
    assert_eq!(service.calls(), [("get_invocation".into(), 2)].into());
    api.assert_done(&runs, &[]).await;
}

/// An unchanged phase costs a look and no write; a run going longer than a minute is looked at
/// once a minute.
#[tokio::test]
async fn an_unchanged_phase_costs_no_write_and_a_long_run_is_looked_at_once_a_minute() {
    let mut service = Service::start().await;
    let id = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let obj = recorded(&id, &service.source_id, RunPhase::Pending, secs(600));
    let (mut api, runs, flow) = started(&service, Which::Apply, &obj).await;

    assert_looks_again_around(outcome(flow).await, decide::POLL_MAX);
    assert_eq!(service.calls(), [("get_invocation".into(), 1)].into());
    api.assert_done(&runs, &[]).await;
}

/// One look at `obj` that settles it: one call, one status write, `events`, and no look
/// after it (a finished run is at rest). The write.
async fn settles(service: &Service, obj: &SyncRun, events: &[(&str, &str)]) -> Value {
    let (mut api, runs, flow) = started(service, Which::Apply, obj).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    let looked = [("get_invocation".into(), 1)].into();
    assert_eq!(service.calls(), looked);

    let at_rest = start(Which::Apply, &stored(&api), &runs);
    assert_eq!(outcome(at_rest).await, Next::Settled);
    assert_eq!(service.calls(), looked, "no call at rest");
    api.assert_done(&runs, events).await;
    status
}

/// [`settles`] for a run recorded Processing whose invocation `id` has ended.
async fn ends(service: &Service, id: &str, events: &[(&str, &str)]) -> Value {
    let obj = recorded(id, &service.source_id, RunPhase::Processing, secs(30));
    let status = settles(service, &obj, events).await;
    assert!(status["status"]["completionTime"].is_string(), "{status}");
    status
}

#[tokio::test]
async fn a_complete_run_is_ready_and_settles() {
    let mut service = Service::start().await;
    let id = service.finished(None).await;
    let status = ends(&service, &id, &[]).await;
    assert_eq!(status["status"]["phase"], "Complete");
    assert_eq!(status["status"]["durationMs"], 2);
    let finished = &service.status_of(&id)["complete"]["finished_at"];
    let finished: jiff::Timestamp = finished.as_str().unwrap().parse().unwrap();
    let as_written = serde_json::to_value(Time(finished)).unwrap();
    assert_eq!(
        status["status"]["completionTime"], as_written,
        "the service's"
    );
    assert_eq!(conditions(&status), complete());
}

#[tokio::test]
async fn a_failed_run_stalls_with_the_service_message_and_a_warning() {
    let mut service = Service::start().await;
    let id = service.finished(Some("clone failed: no such branch")).await;
    let status = ends(&service, &id, &[("Warning", "RunFailed")]).await;
    assert_eq!(status["status"]["phase"], "Failed");
    assert_eq!(status["status"]["message"], "clone failed: no such branch");
    assert_eq!(conditions(&status), failing("Stalled", Reason::RunFailed));
    let ready = &status["status"]["conditions"][0];
    assert_eq!(ready["message"], "clone failed: no such branch");
}

#[tokio::test]
async fn a_cancelled_run_stalls_as_cancelled() {
    let mut service = Service::start().await;
    let id = service.cancelled().await;
    let status = ends(&service, &id, &[]).await;
    assert_eq!(status["status"]["phase"], "Cancelled");
    assert_eq!(conditions(&status), failing("Stalled", Reason::Cancelled));
}

/// The service no longer knows the recorded invocation: the run has failed, and says why.
#[tokio::test]
async fn an_invocation_gone_from_the_service_fails_the_run() {
    let service = Service::start().await;
    let obj = recorded(
        "gone-invocation",
        &service.source_id,
        RunPhase::Pending,
        secs(30),
    );
    let (mut api, runs, flow) = started(&service, Which::Apply, &obj).await;

    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["message"].as_str().expect("a message");
    assert!(
        message.contains("gone-invocation no longer exists"),
        "{message}"
    );
    assert!(status["status"]["completionTime"].is_string());
    assert_eq!(conditions(&status), failing("Stalled", Reason::RunFailed));
    assert_eq!(service.chroma.standin.calls("get_invocation", "404"), 1);
    assert_eq!(service.calls(), [("get_invocation".into(), 1)].into());
    api.assert_done(&runs, &[("Warning", "RunFailed")]).await;
}

/// A first create the service refuses for good (set up on `service`): the mark, the refusal,
/// the mark cleared (nothing was created), the run Failed with `reason`, settled.
async fn refused_create(service: Service, reason: Reason, http_status: u16) {
    let (mut api, runs, flow) = started(&service, Which::Apply, &run()).await;
    assert_mark(&api.patch(RUN_PATH).await, "1");
    api.clear_mark(RUN_PATH).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled, "{reason}");

    assert_eq!(status["status"]["phase"], "Failed", "{reason}");
    assert_eq!(status["status"]["invocationId"], Value::Null);
    assert!(status["status"]["completionTime"].is_string());
    assert_eq!(status["status"]["lastError"]["httpStatus"], http_status);
    assert_eq!(conditions(&status), failing("Stalled", reason));
    let code = http_status.to_string();
    assert_eq!(service.chroma.standin.calls("create_invocation", &code), 1);
    assert_eq!(service.calls(), [("create_invocation".into(), 1)].into());
    assert!(create::pending_mark(&stored(&api)).is_none());

    // Asked to look again (reconcile-now): a run is one attempt, so nothing is created again;
    // the status only says the request was seen.
    let asked = "2026-05-01T10:00:00Z";
    let flow = start(
        Which::Apply,
        &annotated(stored(&api), RECONCILE_REQUEST_ANNOTATION, asked),
        &runs,
    );
    let echo = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(echo["status"]["lastHandledReconcileAt"], asked);
    assert_eq!(echo["status"]["phase"], "Failed");
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(service.calls(), [("create_invocation".into(), 1)].into());
    api.assert_done(&runs, &[("Warning", reason.as_str())])
        .await;
}

/// `--events-addr`: a run made Failed (by the service's answer, a refused create, an invocation
/// gone) posts exactly one Flux event; a look at it again (a reconcile-now, as after a restart)
/// posts none.
#[tokio::test]
async fn a_run_made_failed_posts_one_event_and_a_look_again_posts_none() {
    use crate::kernel::notify::testing::{notifier, receiver};
    let (address, got) = receiver(vec![]).await;
    let mut service = Service::start().await;
    // The collection holds a finished sync: the create is refused (409) for good.
    service.finished(None).await;
    let obj = run();
    let (client, mut api) = ApiServer::start(&obj);
    let metrics = crate::metrics::Metrics::new();
    let ctx = fixtures::context_notifying(
        client,
        service.chroma.client.clone(),
        Some(ADMIN),
        notifier(&address, &metrics),
    );
    ctx.credentials.set_synced();
    let runs = Driver::new(Runs::new(ctx));
    let flow = start(Which::Apply, &obj, &runs);
    give(&mut api, &service.ready_source()).await;
    assert_mark(&api.patch(RUN_PATH).await, "1");
    api.clear_mark(RUN_PATH).await;
    api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);

    let asked = "2026-05-01T10:00:00Z";
    let flow = start(
        Which::Apply,
        &annotated(stored(&api), RECONCILE_REQUEST_ANNOTATION, asked),
        &runs,
    );
    api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    api.assert_done(&runs, &[("Warning", "InvocationExists")])
        .await;
    runs.notifier.flush(secs(5)).await;
    let events = got.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["involvedObject"]["name"], "docs-run");
    assert_eq!(events[0]["involvedObject"]["kind"], "SyncRun");
    assert_eq!(events[0]["severity"], "error");
    assert_eq!(events[0]["reason"], "InvocationExists");
    // Refused at create: no invocation to name.
    assert_eq!(
        events[0]["metadata"],
        json!({"chromasync.dev/source": "docs"})
    );
}

/// A run already Failed, asked to look again, whose invocation the service no longer knows:
/// the status says so, but it is no new failure: no Event, no notification.
#[tokio::test]
async fn a_failed_run_looked_at_again_is_not_announced_again() {
    use crate::kernel::notify::testing::{notifier, receiver};
    let (address, got) = receiver(vec![]).await;
    let service = Service::start().await;
    let failed = recorded("gone", &service.source_id, RunPhase::Failed, secs(30));
    let obj = annotated(failed, RECONCILE_REQUEST_ANNOTATION, "again");
    let (client, mut api) = ApiServer::start(&obj);
    let metrics = crate::metrics::Metrics::new();
    let ctx = fixtures::context_notifying(
        client,
        service.chroma.client.clone(),
        Some(ADMIN),
        notifier(&address, &metrics),
    );
    ctx.credentials.set_synced();
    let runs = Driver::new(Runs::new(ctx));
    let flow = start(Which::Apply, &obj, &runs);
    give(&mut api, &service.ready_source()).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::Settled);
    let message = status["status"]["message"].as_str().unwrap();
    assert!(message.contains("gone no longer exists"), "{message}");
    assert_eq!(service.chroma.standin.calls("get_invocation", "404"), 1);
    api.assert_done(&runs, &[]).await;
    runs.notifier.flush(secs(5)).await;
    assert!(got.lock().unwrap().is_empty());
}

/// The next create of an invocation answers `status` and does nothing.
fn fail_create(status: u16) -> Faults {
    Faults {
        endpoints: vec!["create_invocation".into()],
        fail_next: 1,
        error_status: status,
        ..Default::default()
    }
}

/// The collection already holds a finished sync: the service answers 409.
#[tokio::test]
async fn a_create_refused_as_existing_fails_the_run_and_clears_the_mark() {
    let mut service = Service::start().await;
    service.finished(None).await;
    refused_create(service, Reason::InvocationExists, 409).await;
}

#[tokio::test]
async fn a_create_refused_as_invalid_fails_the_run_and_clears_the_mark() {
    let service = Service::start().await;
    service.chroma.standin.set_faults(fail_create(400));
    refused_create(service, Reason::InvalidSpec, 400).await;
}

/// The cleanup of a deleted run recorded in `phase`, whose invocation goes as `plan` says: the
/// source read, one cancel call, the finalizer released. The service, the invocation's id and
/// the Events.
async fn deleted(phase: RunPhase, plan: RunPlan, events: &[(&str, &str)]) -> (Service, String) {
    let mut service = Service::start().await;
    let id = service.invocation(plan).await;
    let obj = deleting(recorded(&id, &service.source_id, phase, secs(30)));
    let (mut api, runs, flow) = started(&service, Which::Cleanup, &obj).await;
    let release = api.patch(RUN_PATH).await;
    assert_eq!(
        release,
        json!({ "metadata": { "resourceVersion": "1", "finalizers": [] } })
    );
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(service.calls(), [("cancel_invocation".into(), 1)].into());
    api.assert_done(&runs, events).await;
    (service, id)
}

/// The cleanup of a deleted Pending run (its invocation pending in the stand-in) whose read of
/// its SyncSource the apiserver refuses with `code`.
async fn source_read_at_delete(
    code: u16,
    reason: &str,
) -> (Service, String, ApiServer, Arc<Driver<Runs>>, Flow) {
    let mut service = Service::start().await;
    let id = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let obj = deleting(recorded(
        &id,
        &service.source_id,
        RunPhase::Pending,
        secs(30),
    ));
    let (mut api, runs, flow) = launch(&service, Which::Cleanup, &obj);
    api.expect(Method::GET, OBJECT_PATH)
        .await
        .refuse(code, reason);
    (service, id, api, runs, flow)
}

/// A source that cannot be read now (the apiserver answers 500) is read again later: the
/// finalizer stays, and the pending invocation is still cancelled then.
#[tokio::test]
async fn deleting_a_pending_run_while_its_source_cannot_be_read_keeps_the_finalizer() {
    let (service, id, mut api, runs, flow) = source_read_at_delete(500, "InternalError").await;
    let failed = flow.await.expect("the flow ran");
    assert!(matches!(&failed, Err(e) if !e.is_conflict()), "{failed:?}");
    assert!(service.calls().is_empty(), "no call: {:?}", service.calls());
    assert_eq!(service.status_of(&id), "pending");
    api.assert_done(&runs, &[]).await;
}

/// A pending run deleted by its CRD's deletion (the driver reads the CRD: being deleted) is let
/// go with no cancel: its invocation stays pending, and a Warning Event names it. With the CRD
/// fine, the same run is cancelled (the normal path, through the same driver).
#[tokio::test]
async fn a_pending_run_deleted_with_its_crd_is_not_cancelled() {
    for (crd, cancels) in [(fixtures::Crd::Deleting, 0), (fixtures::Crd::Fine, 1)] {
        let mut service = Service::start().await;
        let id = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
        let obj = deleting(recorded(
            &id,
            &service.source_id,
            RunPhase::Pending,
            secs(30),
        ));
        let (client, mut api) = ApiServer::start(&obj);
        let runs = runs(client, &service.chroma);
        let flow = tokio::spawn(driver::reconcile(Arc::new(obj), runs.clone()));
        api.crd(fixtures::RUNS_CRD_PATH, crd).await;
        if cancels == 1 {
            give(&mut api, &service.ready_source()).await;
        }
        let release = api.patch(RUN_PATH).await;
        assert_eq!(release["metadata"]["finalizers"], json!([]), "{crd:?}");
        let action = flow
            .await
            .expect("the reconcile ran")
            .expect("it succeeded");
        assert_eq!(action, Action::await_change());
        let cancelled = service.chroma.standin.calls("cancel_invocation", "*");
        assert_eq!(cancelled, cancels, "{crd:?}");
        if cancels == 0 {
            assert!(service.calls().is_empty(), "{:?}", service.calls());
            assert_eq!(service.status_of(&id), "pending");
            api.assert_done(&runs, &[("Warning", "RetainedOnCrdDeletion")])
                .await;
            let notes = api.event_notes(&runs).await;
            assert!(notes[0].contains(&format!("invocation {id}")), "{notes:?}");
        } else {
            assert_eq!(service.status_of(&id), "cancelled");
            api.assert_done(&runs, &[]).await;
        }
    }
}

#[tokio::test]
async fn deleting_a_pending_run_cancels_its_invocation_then_releases_the_finalizer() {
    let (service, id) = deleted(RunPhase::Pending, plan(HOUR_MS, HOUR_MS, None), &[]).await;
    assert_eq!(service.chroma.standin.calls("cancel_invocation", "202"), 1);
    assert_eq!(service.status_of(&id), "cancelled");
}

/// Chroma Sync cannot stop a started run, whether recorded Processing or started since the
/// last look (recorded Pending): the cancel is refused (412), an Event says the run goes on to
/// its end, and the object is let go.
#[tokio::test]
async fn deleting_a_started_run_says_it_cannot_be_cancelled_and_releases_the_finalizer() {
    for recorded_as in [RunPhase::Processing, RunPhase::Pending] {
        let not_cancelled = [("Normal", "NotCancelled")];
        let (service, id) = deleted(recorded_as, plan(0, HOUR_MS, None), &not_cancelled).await;
        let refused = service.chroma.standin.calls("cancel_invocation", "412");
        assert_eq!(refused, 1, "{recorded_as:?}");
        assert_eq!(service.status_of(&id), "processing");
    }
}

/// Deleted while its create's answer was lost (a mark, no invocation recorded): the invocation
/// is found by the mark and cancelled, so it does not run for an object that is gone.
#[tokio::test]
async fn deleting_a_run_with_an_unrecorded_invocation_finds_and_cancels_it() {
    let mut service = Service::start().await;
    let id = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let (mut api, runs, flow) = started(&service, Which::Cleanup, &deleting(marked())).await;
    list_runs(&mut api, json!([])).await;
    let release = api.patch(RUN_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(service.status_of(&id), "cancelled");
    let calls = [
        ("cancel_invocation".into(), 1),
        ("list_invocations".into(), 1),
    ];
    assert_eq!(service.calls(), calls.into());
    api.assert_done(&runs, &[]).await;
}

/// Without its SyncSource the run has no credentials to cancel with: a Warning says so, and the
/// object is let go.
#[tokio::test]
async fn deleting_a_run_whose_source_is_gone_warns_and_releases_the_finalizer() {
    let (service, id, mut api, runs, flow) = source_read_at_delete(404, "NotFound").await;
    let release = api.patch(RUN_PATH).await;
    assert_eq!(release["metadata"]["finalizers"], json!([]));
    assert_eq!(outcome(flow).await, Next::Settled);
    assert_eq!(service.calls(), BTreeMap::new());
    assert_eq!(service.status_of(&id), "pending");
    api.assert_done(&runs, &[("Warning", "NotCancelled")]).await;
}

/// A SyncSource that exists but is not Ready yet: the run waits, says so once, and calls
/// nothing; the next look, still waiting, writes nothing.
#[tokio::test]
async fn a_run_waits_for_a_source_that_is_not_ready_and_says_so_once() {
    let service = Service::start().await;
    let mut creating = service.ready_source();
    creating["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready",
        "status": "False", "reason": "ServerError", "message": "", "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let (mut api, runs, flow) = launch(&service, Which::Apply, &run());
    give(&mut api, &creating).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::LookAgainIn(secs(10)));
    assert_eq!(
        conditions(&status),
        failing("Reconciling", Reason::WaitingForSource)
    );
    let message = &status["status"]["conditions"][0]["message"];
    assert_eq!(message, "SyncSource docs is not Ready yet");

    let flow = start(Which::Apply, &stored(&api), &runs);
    give(&mut api, &creating).await;
    assert_eq!(outcome(flow).await, Next::LookAgainIn(secs(10)));
    assert_eq!(service.calls(), BTreeMap::new());
    api.assert_idle();
}

/// A paused run (through the driver, which reads the annotation): one status write that says
/// so, Ready as it was, the phase kept; then no read, no call and no write while paused. Once
/// resumed, it looks again and shows its phase.
#[tokio::test]
async fn a_paused_run_says_so_once_then_makes_no_call_and_no_write_until_resumed() {
    let mut service = Service::start().await;
    let id = service.invocation(plan(HOUR_MS, HOUR_MS, None)).await;
    let obj = recorded(&id, &service.source_id, RunPhase::Pending, secs(30));
    let obj = annotated(obj, PAUSED_ANNOTATION, "true");
    let (client, mut api) = ApiServer::start(&obj);
    let runs = runs(client, &service.chroma);

    let flow = tokio::spawn(driver::reconcile(Arc::new(obj), runs.clone()));
    let status = api.patch(RUN_STATUS_PATH).await;
    let paused = vec![("Ready".into(), "False".into(), "Paused".into())];
    assert_eq!(conditions(&status), paused);
    assert_eq!(status["status"]["phase"], "Pending", "as it was");
    assert_eq!(status["status"]["invocationId"], json!(id));
    let action = flow.await.expect("ran").expect("reconciled");
    assert_eq!(action, Action::await_change());

    let flow = tokio::spawn(driver::reconcile(Arc::new(stored(&api)), runs.clone()));
    let action = flow.await.expect("ran").expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert_eq!(service.calls(), BTreeMap::new());
    api.assert_idle();

    api.stored.as_mut().unwrap()["metadata"]["annotations"] = json!({});
    let flow = again(&service, &mut api, &runs).await;
    let resumed = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(
        conditions(&resumed),
        failing("Reconciling", Reason::Pending)
    );
    assert_looks_again_around(outcome(flow).await, secs(30));
    assert_eq!(service.calls(), [("get_invocation".into(), 1)].into());
    api.assert_done(&runs, &[]).await;
}

/// Reconcile-now on a run that ended as `id` did, recorded in `phase`: [`settles`], the
/// request echoed in status.
async fn reconcile_now(service: &Service, id: &str, phase: RunPhase) -> Value {
    let obj = recorded(id, &service.source_id, phase, secs(30));
    let obj = annotated(obj, RECONCILE_REQUEST_ANNOTATION, "2026-05-01T10:00:00Z");
    let status = settles(service, &obj, &[]).await;
    let echoed = &status["status"]["lastHandledReconcileAt"];
    assert_eq!(echoed, "2026-05-01T10:00:00Z");
    assert_eq!(status["status"]["phase"], phase.as_str());
    status
}

#[tokio::test]
async fn reconcile_now_looks_at_a_complete_run_once_and_echoes_the_request() {
    let mut service = Service::start().await;
    let id = service.finished(None).await;
    let status = reconcile_now(&service, &id, RunPhase::Complete).await;
    assert_eq!(conditions(&status), complete());
}

/// The run failed long ago: a look on request is no new failure, so no second Warning (Events
/// come on transitions only).
#[tokio::test]
async fn reconcile_now_on_a_failed_run_warns_no_second_time() {
    let mut service = Service::start().await;
    let id = service.finished(Some("clone failed")).await;
    let status = reconcile_now(&service, &id, RunPhase::Failed).await;
    assert_eq!(conditions(&status), failing("Stalled", Reason::RunFailed));
}

// After a restart every unfinished run looks at its invocation at once. The runs of one source
// that look together share its listing (see `decide::InvocationRefresh`); a run looking alone
// makes the GET it always made (the flows above).

/// The runs' flows on `client`, with the Ready SyncSource of `service` cached (as the watch
/// fills the cache after a restart), so a look reads no SyncSource from the apiserver.
fn runs_with_cached_source(client: kube::Client, service: &Service) -> Arc<Driver<Runs>> {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    let source: crate::crd::SyncSource =
        serde_json::from_value(service.ready_source()).expect("a SyncSource");
    let mut cache = Writer::default();
    cache.apply_watcher_event(&Event::Apply(source));
    let chroma = service.chroma.client.clone();
    let ctx = fixtures::context_with(
        client,
        chroma,
        Some(ADMIN),
        vec![cache.as_reader()],
        &Default::default(),
    );
    ctx.credentials.set_synced();
    Driver::new(Runs::new(ctx))
}

/// Runs recorded Pending on `service`'s source, started together: `writer` (the one the mock
/// apiserver holds, [`run`]'s name) and one more per id in `others`, each of its own name.
fn together(
    service: &Service,
    writer: &str,
    others: &[String],
) -> (ApiServer, Arc<Driver<Runs>>, Vec<Flow>) {
    let source_id = &service.source_id;
    let obj = recorded(writer, source_id, RunPhase::Pending, secs(30));
    let (client, api) = ApiServer::start(&obj);
    let runs = runs_with_cached_source(client, service);
    let mut flows = vec![start(Which::Apply, &obj, &runs)];
    for (i, id) in others.iter().enumerate() {
        let mut other = recorded(id, source_id, RunPhase::Pending, secs(30));
        other.metadata.name = Some(format!("docs-run-{i}"));
        flows.push(start(Which::Apply, &other, &runs));
    }
    (api, runs, flows)
}

/// `n` invocations of the source, pending for an hour, newest last.
async fn pending(service: &mut Service, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(service.invocation(plan(HOUR_MS, HOUR_MS, None)).await);
    }
    ids
}

/// 150 unfinished runs of one source look at once (a restart): 2 list pages (100 to a page),
/// not 150 GETs. The run whose invocation has started (the oldest, on the second page) writes
/// Processing from its listed invocation, as from a GET; the others write nothing.
#[tokio::test]
async fn runs_of_one_source_looking_at_once_share_one_listing_instead_of_a_get_each() {
    let mut service = Service::start().await;
    let started = service.invocation(plan(0, HOUR_MS, None)).await;
    let others = pending(&mut service, 149).await;
    let (mut api, runs, flows) = together(&service, &started, &others);

    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Processing");
    assert_eq!(
        conditions(&status),
        failing("Reconciling", Reason::Processing)
    );
    for flow in flows {
        assert_looks_again_around(outcome(flow).await, secs(30));
    }
    assert_eq!(service.calls(), [("list_invocations".into(), 2)].into());
    api.assert_done(&runs, &[]).await;
}

/// A run whose invocation lies deeper in the listing than the finds pay for (page 1 found
/// nothing, so page 2 is not read) learns its phase by a GET of its own.
#[tokio::test]
async fn a_run_whose_invocation_is_past_the_listed_pages_looks_at_it_alone() {
    let mut service = Service::start().await;
    let deep = service.invocation(plan(0, HOUR_MS, None)).await;
    pending(&mut service, 200).await; // of runs not looking now
    let near = pending(&mut service, 1).await;
    let (mut api, runs, flows) = together(&service, &deep, &near);

    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Processing");
    for flow in flows {
        assert_looks_again_around(outcome(flow).await, secs(30));
    }
    let calls = [("get_invocation".into(), 1), ("list_invocations".into(), 2)];
    assert_eq!(service.calls(), calls.into());
    api.assert_done(&runs, &[]).await;
}

/// A gone invocation is not in the listing: its run asks for it alone, and the 404 fails the
/// run as before.
#[tokio::test]
async fn a_gone_invocation_looked_at_with_others_still_fails_its_run() {
    let mut service = Service::start().await;
    let near = pending(&mut service, 1).await;
    let (mut api, runs, mut flows) = together(&service, "gone-invocation", &near);

    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["message"].as_str().expect("a message");
    assert!(
        message.contains("gone-invocation no longer exists"),
        "{message}"
    );
    assert_eq!(conditions(&status), failing("Stalled", Reason::RunFailed));
    assert_looks_again_around(outcome(flows.pop().unwrap()).await, secs(30));
    assert_eq!(outcome(flows.pop().unwrap()).await, Next::Settled);
    assert_eq!(service.chroma.standin.calls("get_invocation", "404"), 1);
    let calls = [("get_invocation".into(), 1), ("list_invocations".into(), 1)];
    assert_eq!(service.calls(), calls.into());
    api.assert_done(&runs, &[("Warning", "RunFailed")]).await;
}

// S3 runs: an unrecorded create is looked for by the newest invocation of the run's object key
// (`latest-by-keys`, one call), not by listing the source's runs.

/// The `docs` SyncSource as an S3 bucket, as the apiserver hands it over when Ready on `id`.
fn ready_s3_source(id: &str) -> Value {
    let mut source = ready_source(id);
    source["spec"] = json!({"databaseName": DATABASE, "s3": {"bucketName": "files",
        "region": "eu-west-1", "collectionName": "reports", "awsCredentialId": 1}});
    source
}

/// [`marked`], as an S3 run of object key `key`.
fn marked_s3(key: &str) -> SyncRun {
    let mut obj = marked();
    obj.spec.target_collection_name = None;
    obj.spec.git_ref = None;
    obj.spec.object_key = Some(key.into());
    obj
}

/// The stand-in holding an S3 source, with one invocation per key of `keys` made in that order;
/// the source's id and the invocations' ids.
async fn s3_service(keys: &[&str]) -> (Service, Vec<String>) {
    let chroma = Chroma::start().await;
    let source_id = chroma
        .standin
        .insert_source(json!({"database_name": DATABASE,
        "s3": {"bucket_name": "files", "region": "eu-west-1", "collection_name": "reports",
            "aws_credential_id": 1}}));
    chroma.standin.set_run_plan(plan(HOUR_MS, HOUR_MS, None));
    let mut ids = Vec::new();
    for key in keys {
        let payload = crate::chroma::wire::CreateJobPayload {
            object_key: Some((*key).into()),
            ..Default::default()
        };
        let id = chroma
            .client
            .create_invocation(&token(), &source_id, &payload)
            .await
            .expect("the invocation is created");
        ids.push(id);
    }
    let setup = chroma.standin.all_calls();
    let service = Service {
        chroma,
        source_id,
        setup,
    };
    (service, ids)
}

/// [`launch`], past the read of the S3 SyncSource.
async fn started_s3(service: &Service, obj: &SyncRun) -> (ApiServer, Arc<Driver<Runs>>, Flow) {
    let (mut api, runs, flow) = launch(service, Which::Apply, obj);
    give(&mut api, &ready_s3_source(&service.source_id)).await;
    (api, runs, flow)
}

/// Killed between the POST and the record: the newest invocation of the key is the run's, so it
/// is recorded, with one call and no listing and no create.
#[tokio::test]
async fn an_s3_run_adopts_the_newest_invocation_of_its_key_with_one_call() {
    let (service, ids) = s3_service(&["q3/b.pdf", "q3/a.pdf"]).await;
    let (mut api, runs, flow) = started_s3(&service, &marked_s3("q3/a.pdf")).await;
    list_runs(&mut api, json!([])).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::LookAgainIn(decide::POLL_FIRST));
    assert_eq!(status["status"]["invocationId"], json!(ids[1]));
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(
        service.calls(),
        [("latest_invocations_by_keys".into(), 1)].into()
    );
    assert_eq!(
        service.chroma.standin.invocations(&service.source_id).len(),
        2
    );
    api.assert_done(&runs, &[("Normal", "Adopted")]).await;
}

/// Nothing was made for the key (the POST never arrived): the claims are not read, and the run
/// marks again and creates once.
#[tokio::test]
async fn an_s3_run_whose_key_has_no_invocation_creates_once() {
    let (service, _) = s3_service(&["q3/b.pdf"]).await;
    let (mut api, runs, flow) = started_s3(&service, &marked_s3("q3/a.pdf")).await;
    assert_mark(&api.patch(RUN_PATH).await, "1");
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_looks_again_around(outcome(flow).await, decide::POLL_FIRST);
    let made = service.chroma.standin.invocations(&service.source_id);
    assert_eq!(made.len(), 2);
    assert_eq!(status["status"]["invocationId"], made[1]["id"]);
    assert_eq!(made[1]["metadata"]["s3"]["object_key"], "q3/a.pdf");
    let calls = [
        ("create_invocation".into(), 1),
        ("latest_invocations_by_keys".into(), 1),
    ];
    assert_eq!(service.calls(), calls.into());
    api.assert_done(&runs, &[]).await;
}

/// The newest invocation of the key since the mark is another run's: the run's own may be under
/// it, so the listing decides (with the claims read once), and finds the older one.
#[tokio::test]
async fn an_s3_run_whose_newest_key_invocation_is_claimed_lists_and_finds_its_own() {
    let (service, ids) = s3_service(&["q3/a.pdf", "q3/a.pdf"]).await;
    let (own, claimed) = (&ids[0], &ids[1]);
    let (mut api, runs, flow) = started_s3(&service, &marked_s3("q3/a.pdf")).await;
    let other = json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "other-run", "namespace": NS},
        "spec": {"sourceRef": {"name": "docs"}, "objectKey": "q3/a.pdf"},
        "status": {"invocationId": claimed, "sourceId": service.source_id}});
    list_runs(&mut api, json!([other])).await;
    let status = api.patch(RUN_STATUS_PATH).await;
    assert_eq!(outcome(flow).await, Next::LookAgainIn(decide::POLL_FIRST));
    assert_eq!(status["status"]["invocationId"], json!(own));
    let calls = [
        ("latest_invocations_by_keys".into(), 1),
        ("list_invocations".into(), 1),
    ];
    assert_eq!(service.calls(), calls.into());
    api.assert_done(&runs, &[("Normal", "Adopted")]).await;
}
