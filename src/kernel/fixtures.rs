//! Test fixtures for every kind's reconcile flows: a mock apiserver that a test answers request by
//! request (kube-rs's controller-rs pattern: `tower_test::mock::pair` behind a real
//! `kube::Client`), and the Chroma stand-in on a loopback port with its published rules, fault
//! injection and call counters.
//!
//! The mock holds one object (a SyncSource unless the test says otherwise) and applies merge
//! patches to it as the apiserver would, so a test asserts each request's method, path and body
//! and the answer follows from them. Event
//! writes are answered and recorded aside: they come from a background task, so their order
//! relative to the flow's own writes is not the flow's to promise.

use super::Context;
use super::connections::Connections;
use super::credentials::{Credentials, DefaultToken};
use crate::chroma::{ChromaClient, ClientConfig, Token};
use crate::crd::{CREATE_PENDING_ANNOTATION, SyncSource, SyncSourceSpec};
use crate::metrics::Metrics;
use chroma_sync_standin::{StandIn, Tokens};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub const NS: &str = "ns";
pub const NAME: &str = "docs";
pub const DATABASE: &str = "db";
pub const ADMIN: &str = "admin-token";
pub const VIEWER: &str = "viewer-token";
pub const OBJECT_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncsources/docs";
pub const STATUS_PATH: &str = "/apis/chromasync.dev/v1alpha1/namespaces/ns/syncsources/docs/status";
/// The CRDs, as the deletion guard reads them (see `kernel::crds`).
pub const SOURCES_CRD_PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/syncsources.chromasync.dev";
pub const RUNS_CRD_PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/syncruns.chromasync.dev";

/// A CRD as a read of it finds it.
#[derive(Clone, Copy, Debug)]
pub enum Crd {
    Fine,
    Deleting,
    Gone,
}

/// How long a test waits for the flow's next request before it calls the request missing.
const WAIT: Duration = Duration::from_secs(5);

type Pending = tower_test::mock::SendResponse<Response<Body>>;

/// The apiserver side of a test.
pub struct ApiServer {
    requests: mpsc::UnboundedReceiver<(Request<Body>, Pending)>,
    /// Event bodies written so far.
    events: Arc<Mutex<Vec<Value>>>,
    /// The SyncSource as stored, or `None` once deleted.
    pub stored: Option<Value>,
}

/// One request of the flow, not yet answered.
pub struct Call {
    pub method: Method,
    /// Path without the query.
    pub path: String,
    pub query: String,
    pub body: Value,
    pending: Pending,
}

impl Call {
    pub fn reply(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("a JSON answer");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("a valid response");
        self.pending.send_response(response);
    }

    /// Answers with a `Status` failure, as the apiserver does.
    pub fn refuse(self, code: u16, reason: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("refused by the test: {reason}"), "reason": reason, "code": code,
        });
        self.reply(StatusCode::from_u16(code).expect("a status code"), &status);
    }
}

impl ApiServer {
    /// A client whose every request comes to the returned `ApiServer`.
    pub fn start(obj: &impl serde::Serialize) -> (kube::Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (forward, requests) = mpsc::unbounded_channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = events.clone();
        tokio::spawn(async move {
            while let Some((request, pending)) = handle.next_request().await {
                if request.uri().path().starts_with("/apis/events.k8s.io/") {
                    let body = request.into_body().collect_bytes().await.expect("a body");
                    let event: Value = serde_json::from_slice(&body).expect("an Event");
                    let bytes = serde_json::to_vec(&event).expect("JSON");
                    recorded.lock().expect("events").push(event);
                    pending.send_response(
                        Response::builder()
                            .status(StatusCode::CREATED)
                            .body(Body::from(bytes))
                            .expect("a valid response"),
                    );
                } else if forward.send((request, pending)).is_err() {
                    return;
                }
            }
        });
        let client = kube::Client::new(service, "default");
        let stored = Some(serde_json::to_value(obj).expect("an object"));
        (
            client,
            Self {
                requests,
                events,
                stored,
            },
        )
    }

    /// The flow's next request (not an Event); panics if none comes in time.
    pub async fn next(&mut self) -> Call {
        let (request, pending) = tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("the flow made no further request in time")
            .expect("the client is alive");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Call {
            method,
            path,
            query,
            body,
            pending,
        }
    }

    /// The next request, which must be `method` on `path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request; its body: {}",
            call.body
        );
        call
    }

    /// Expects a merge patch of the object (`path` is [`OBJECT_PATH`] or [`STATUS_PATH`]),
    /// applies it to the stored object as the apiserver would and answers with the result.
    /// Returns the patch.
    pub async fn patch(&mut self, path: &str) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        assert!(
            call.query.contains("fieldManager=chroma-sync-operator"),
            "every write names the field manager: {}",
            call.query
        );
        let stored = self.stored.as_mut().expect("the object exists");
        if let Some(expected) = call.body.pointer("/metadata/resourceVersion") {
            assert_eq!(
                Some(expected),
                stored.pointer("/metadata/resourceVersion"),
                "a guarded write names the stored resourceVersion"
            );
        }
        merge(stored, &call.body);
        let version: u64 = stored["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        stored["metadata"]["resourceVersion"] = json!((version + 1).to_string());
        let answer = stored.clone();
        let patch = call.body.clone();
        call.reply(StatusCode::OK, &answer);
        patch
    }

    /// Expects the write that clears the create-pending mark of the object at `path` (a create
    /// that certainly made nothing), exactly that, and applies it.
    pub async fn clear_mark(&mut self, path: &str) {
        let cleared = self.patch(path).await;
        let expected =
            json!({ "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: null } } });
        assert_eq!(cleared, expected);
    }

    /// Expects a read of the SyncSource and answers with it as stored (404 once deleted).
    pub async fn get(&mut self) {
        self.get_at(OBJECT_PATH).await;
    }

    /// Expects a read of the object at `path` and answers with it as stored (404 once deleted).
    pub async fn get_at(&mut self, path: &str) {
        let call = self.expect(Method::GET, path).await;
        match &self.stored {
            Some(obj) => {
                let obj = obj.clone();
                call.reply(StatusCode::OK, &obj)
            }
            None => call.refuse(404, "NotFound"),
        }
    }

    /// Expects a read of the CRD at `path` (metadata only) and answers it as `crd` says.
    pub async fn crd(&mut self, path: &str, crd: Crd) {
        let call = self.expect(Method::GET, path).await;
        let name = path.rsplit('/').next().unwrap_or_default();
        let mut metadata = json!({"name": name, "uid": "c0ffee", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z"});
        match crd {
            Crd::Gone => return call.refuse(404, "NotFound"),
            Crd::Deleting => metadata["deletionTimestamp"] = json!("2026-01-02T00:00:00Z"),
            Crd::Fine => {}
        }
        let body = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": metadata});
        call.reply(StatusCode::OK, &body);
    }

    /// Asserts the flow made no request it was not answered for.
    pub fn assert_idle(&mut self) {
        if let Ok((request, _)) = self.requests.try_recv() {
            panic!(
                "an unexpected request: {} {}",
                request.method(),
                request.uri()
            );
        }
    }

    /// Asserts the flow made no request it was not answered for, and wrote exactly `events`
    /// (`(type, reason)`, in order).
    pub async fn assert_done(&mut self, ctx: &Context, events: &[(&str, &str)]) {
        self.assert_idle();
        let expected: Vec<(String, String)> = events
            .iter()
            .map(|(kind, reason)| (kind.to_string(), reason.to_string()))
            .collect();
        assert_eq!(self.events(ctx).await, expected, "the Events");
    }

    /// The notes of the Events written, after waiting for the queue to drain.
    pub async fn event_notes(&self, ctx: &Context) -> Vec<String> {
        ctx.events.flush(WAIT).await;
        let events = self.events.lock().expect("events");
        events
            .iter()
            .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// `(type, reason)` of the Events written, after waiting for the queue to drain.
    pub async fn events(&self, ctx: &Context) -> Vec<(String, String)> {
        ctx.events.flush(WAIT).await;
        self.events
            .lock()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// RFC 7386, as the apiserver applies `Patch::Merge`.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `(type, status, reason)` of each condition a status patch writes (either kind's).
pub fn conditions(patch: &Value) -> Vec<(String, String, String)> {
    patch["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (field("type"), field("status"), field("reason"))
        })
        .collect()
}

/// A list of SyncRuns, as the apiserver answers one.
pub fn run_list(items: Value) -> Value {
    json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRunList",
        "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A SyncSource for a GitHub repository in [`DATABASE`], as the apiserver would hand it over.
pub fn source() -> SyncSource {
    let spec: SyncSourceSpec = serde_json::from_value(json!({
        "databaseName": DATABASE,
        "github": { "repository": "acme/docs" },
    }))
    .expect("a valid spec");
    let mut obj = SyncSource::new(NAME, spec);
    obj.metadata.namespace = Some(NS.into());
    obj.metadata.uid = Some("6f1c3c64-1b8e-4d0c-9a38-0d7b1f7f9d21".into());
    obj.metadata.resource_version = Some("1".into());
    obj.metadata.generation = Some(1);
    obj
}

/// The body the stand-in keeps for a source created from [`source`]'s spec.
pub fn standin_body() -> Value {
    json!({ "database_name": DATABASE, "github": { "repository": "acme/docs" } })
}

/// The Chroma stand-in and a client for it.
pub struct Chroma {
    pub standin: StandIn,
    pub client: ChromaClient,
}

impl Chroma {
    pub async fn start() -> Self {
        Self::start_with(&[DATABASE], Duration::from_secs(5)).await
    }

    /// With `databases` only, and a client whose calls give up after `timeout`.
    pub async fn start_with(databases: &[&str], timeout: Duration) -> Self {
        let tokens = Tokens {
            admin: [ADMIN.to_owned()].into(),
            viewer: [VIEWER.to_owned()].into(),
        };
        let standin = StandIn::new(databases.iter().map(|d| d.to_string()), tokens);
        let base_url = standin.start_local().await.expect("the stand-in starts");
        let client = client_for(&base_url, timeout);
        Self { standin, client }
    }
}

pub fn client_for(base_url: &str, timeout: Duration) -> ChromaClient {
    let config = ClientConfig {
        name: "test".into(),
        base_url: base_url.to_owned(),
        // The stand-in serves the Chroma API's collection calls too.
        api_url: base_url.to_owned(),
        timeout,
        extra_ca_pem: None,
        limits: Default::default(),
    };
    ChromaClient::new(&config, Metrics::new()).expect("a Chroma client")
}

/// The caches a route is decided from, filled by the test: connections of both kinds and
/// namespaces (with their labels).
#[derive(Default)]
pub struct Routing {
    pub namespaced: Writer<crate::crd::ChromaSyncConnection>,
    pub cluster: Writer<crate::crd::ClusterChromaSyncConnection>,
    pub namespaces: Writer<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>,
}

impl Routing {
    /// Puts `obj` (a connection or a namespace, as JSON) into its cache.
    pub fn put(&mut self, obj: Value) {
        use kube::runtime::watcher::Event;
        match obj["kind"].as_str() {
            Some("ChromaSyncConnection") => self
                .namespaced
                .apply_watcher_event(&Event::Apply(serde_json::from_value(obj).unwrap())),
            Some("ClusterChromaSyncConnection") => self
                .cluster
                .apply_watcher_event(&Event::Apply(serde_json::from_value(obj).unwrap())),
            _ => self
                .namespaces
                .apply_watcher_event(&Event::Apply(serde_json::from_value(obj).unwrap())),
        }
    }

    fn connections(&self, operator: ChromaClient) -> Arc<Connections> {
        let connections = Connections::new(
            operator,
            vec![self.namespaced.as_reader()],
            self.cluster.as_reader(),
            self.namespaces.as_reader(),
        );
        connections.set_synced();
        Arc::new(connections)
    }
}

/// The kernel's context on the mock apiserver and `chroma`, with `token` as the default token
/// and no watched caches.
pub fn context(client: kube::Client, chroma: ChromaClient, token: Option<&str>) -> Arc<Context> {
    context_with(client, chroma, token, vec![], &Routing::default())
}

/// [`context`] with the SyncSource caches `sources` (as the watched scopes would fill them),
/// routing through the connections and namespaces `routing` holds.
pub fn context_with(
    client: kube::Client,
    chroma: ChromaClient,
    token: Option<&str>,
    sources: Vec<kube::runtime::reflector::Store<SyncSource>>,
    routing: &Routing,
) -> Arc<Context> {
    let default_token = DefaultToken {
        value: token.and_then(Token::new),
        file: None,
    };
    let metrics = Metrics::new();
    let credentials = Credentials::new(client.clone(), default_token, vec![], None);
    let connections = routing.connections(chroma);
    let ctx = Context::new(client, connections, metrics, credentials, "test", sources);
    Arc::new(ctx)
}

/// [`context`], posting notifications with `notifier`.
pub fn context_notifying(
    client: kube::Client,
    chroma: ChromaClient,
    token: Option<&str>,
    notifier: crate::kernel::notify::Notifier,
) -> Arc<Context> {
    let ctx = context_with(client, chroma, token, vec![], &Routing::default());
    let ctx = Arc::into_inner(ctx).expect("not shared yet");
    Arc::new(ctx.with_notifier(notifier))
}

/// [`context`], routing through the connections and namespaces `routing` holds.
pub fn context_routed(
    client: kube::Client,
    chroma: ChromaClient,
    token: Option<&str>,
    routing: &Routing,
) -> Arc<Context> {
    context_with(client, chroma, token, vec![], routing)
}
