//! A local stand-in for the Chroma Sync service: the sources endpoints and `/health`, with the
//! published rules (401, 400 naming the field, 404 unknown database, 409 same natural key,
//! 204 on delete), the invocation endpoints (see [`invocations`]), fault injection, a limited
//! mode (calls per second per token, 429 with `Retry-After: 1` above it: [`Faults::calls_per_second`]),
//! and per-endpoint call counters for tests.
//!
//! Request bodies are checked against the published document's JSON Schemas (and the rules it
//! states in words: S3 credentials), not against the operator's own types, so a mistake in
//! those types cannot hide behind a matching mistake here. An S3 create's inline AWS key is
//! stored apart ([`StandIn::aws_credentials`]); the source holds its allocated credential id.
//!
//! Control endpoints (no token) live under `/_standin/`:
//! `GET counters`, `POST reset`, `PUT faults`, `PUT tokens`, `PUT databases`, `PUT runs`.
//!
//! A crate of its own in the operator's workspace: the operator's tests use it in process (a
//! dev-dependency), `make run` runs its binary, `chroma-sync-standin`; nothing of it reaches the
//! operator's binary. It holds the one copy of the Chroma Sync OpenAPI documents
//! ([`PUBLISHED_OPENAPI`], [`SEED_OPENAPI`]), which the operator's contract tests read too.

#![forbid(unsafe_code)]

mod collections;
mod invocations;
mod published;
mod schema;

pub use collections::TENANT;
pub use invocations::RunPlan;

/// The published Chroma Sync OpenAPI document: a verbatim copy of
/// `../shared/reference/chroma-sync-openapi.yaml`. Every request body is checked against it
/// here; `tests/contract.rs` checks the operator's bodies and these answers against it.
pub const PUBLISHED_OPENAPI: &str = include_str!("../openapi/chroma-sync-openapi.yaml");

/// The Chroma API's published operations the operator calls (identity, collection delete), cut
/// from Chroma's OpenAPI; where it comes from: `openapi/README.md`. `tests/contract.rs` checks
/// the operator's collection requests against it.
pub const CHROMA_API_OPENAPI: &str = include_str!("../openapi/chroma-api.openapi.json");

/// The seed OpenAPI document of the create-source operation (`CreateSourcePayload`), which the
/// published one supersedes: `tests/contract.rs` checks the operator's bodies of the shapes it
/// knows against it too.
pub const SEED_OPENAPI: &str = include_str!("../openapi/create-source.openapi.yaml");

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An AWS access key received inline with an S3 create, kept "on the team for reuse" under
/// the credential id the service allocates (tests read what was received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsCredential {
    pub id: i64,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Who may do what.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// Team owners and admins: may create and delete.
    #[serde(default)]
    pub admin: BTreeSet<String>,
    /// Members: may read, but get 403 on create and delete.
    #[serde(default)]
    pub viewer: BTreeSet<String>,
}

/// Injected faults. `*_next` counters are spent one request at a time, so tests are exact.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Endpoints the faults apply to (`create_source`, `list_sources`, `get_source`,
    /// `delete_source`, `create_invocation`, `get_invocation`, `list_invocations`,
    /// `cancel_invocation`, `latest_invocations_by_keys`, and the Chroma API's `get_identity`,
    /// `delete_collection`); empty means all of them.
    pub endpoints: Vec<String>,
    /// Delay before a request is handled.
    pub latency_ms: u64,
    /// Delay after a create (of a source or an invocation) is committed and before it is
    /// answered: the crash window.
    pub create_commit_delay_ms: u64,
    /// The next N requests answer `error_status` without doing anything.
    pub fail_next: u32,
    /// Fraction (0..1) of requests that answer `error_status` without doing anything.
    pub error_rate: f64,
    /// Status for `fail_next` and `error_rate`; 503 when 0.
    pub error_status: u16,
    /// Limited mode: at most this many calls per second per token (a token bucket, whatever
    /// `endpoints` says); above it, 429 with `Retry-After: 1` (whole seconds, as the service
    /// sends), the call not processed. 0: no limit.
    pub calls_per_second: f64,
    /// The limited mode's burst (the bucket's size); 0: one second's worth.
    pub burst: u32,
    /// The next N requests answer 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_next: u32,
    pub retry_after_secs: u64,
    /// The next N requests have their connection cut mid-response (after the work is done).
    pub drop_next: u32,
    /// The next N requests are answered with their real status but a truncated JSON body
    /// (after the work is done).
    pub garble_next: u32,
}

#[derive(Clone, Debug)]
struct Stored {
    id: String,
    database: String,
    created_at: jiff::Timestamp,
    seq: u64,
    body: Value,
}

/// The stored sources in commit order, and the index the create's conflict check reads (a scan
/// of every stored payload per create made the stand-in, not the operator, the slowest part of a
/// 100,000-object benchmark).
#[derive(Default)]
struct Sources {
    list: Vec<Stored>,
    /// How many stored sources have each (database, natural key).
    keys: HashMap<(String, String), usize>,
}

impl Sources {
    fn key(x: &Stored) -> (String, String) {
        (x.database.clone(), natural_key(&x.body).to_string())
    }

    fn push(&mut self, x: Stored) {
        *self.keys.entry(Self::key(&x)).or_default() += 1;
        self.list.push(x);
    }

    /// Removes the source `id`; whether it was there.
    fn remove(&mut self, id: &str) -> bool {
        let Some(at) = self.list.iter().position(|x| x.id == id) else {
            return false;
        };
        let key = Self::key(&self.list.remove(at));
        if let Some(count) = self.keys.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.keys.remove(&key);
            }
        }
        true
    }

    /// Whether a source with this natural key is stored in `database`.
    fn holds(&self, database: &str, key: &Value) -> bool {
        self.keys
            .contains_key(&(database.to_owned(), key.to_string()))
    }

    fn iter(&self) -> std::slice::Iter<'_, Stored> {
        self.list.iter()
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

/// Limited mode's token bucket of one token: `tokens` as of `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    /// Full (`burst`) at `now`.
    pub fn full(burst: f64, now: std::time::Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Whether a call arriving at `now` is within `rate` calls per second with `burst`; it
    /// takes a token if so.
    pub fn take(&mut self, rate: f64, burst: f64, now: std::time::Instant) -> bool {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + rate * since).min(burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The burst of limited mode: `burst`, or one second's worth when 0 (at least one call).
fn burst_of(f: &Faults) -> f64 {
    if f.burst > 0 {
        f64::from(f.burst)
    } else {
        f.calls_per_second.ceil().max(1.0)
    }
}

/// A token's key in the stand-in's state: a hash, so that no token is kept (or printed) beyond
/// the Tokens it was given.
fn token_key(token: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(token.as_bytes());
    h.finish()
}

#[derive(Default)]
struct Inner {
    databases: BTreeSet<String>,
    tokens: Tokens,
    faults: Faults,
    sources: Sources,
    /// Sources ever committed, deleted ones included.
    seq: u64,
    /// Requests received, by endpoint: counted on arrival, so a request whose answer never
    /// left (the client went away) still counts.
    received: BTreeMap<String, u64>,
    /// Answers sent, by endpoint and status code.
    counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Faults applied, by kind (`limited`, `fail`, `rate_limit`, `drop`, `garble`, `latency`,
    /// `commit_delay`): what a test's call budget is measured against.
    injected: BTreeMap<String, u64>,
    /// Invocations ever created (they outlive their source).
    runs: Vec<invocations::Run>,
    run_seq: u64,
    run_plan: RunPlan,
    /// Collections that exist, as (database, name): made by a run's create, gone on delete.
    collections: BTreeSet<(String, String)>,
    /// Limited mode's buckets, by token (hashed: see [`token_key`]).
    buckets: HashMap<u64, Bucket>,
    /// AWS keys received inline, in order; a key received again reuses its id.
    aws_credentials: Vec<AwsCredential>,
    /// Requests being handled now, and the most at once since the last reset.
    in_flight: u64,
    max_in_flight: u64,
}

#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Mutex<Inner>>,
    schemas: Arc<schema::Schemas>,
    published: Arc<published::Published>,
}

impl Inner {
    /// An S3 create's inline AWS key is stored, as the service does, and the source holds the
    /// allocated `aws_credential_id` instead: a `GET` never gives a key back.
    fn store_inline_credentials(&mut self, mut body: Value) -> Value {
        let Some(s3) = body.get_mut("s3").and_then(Value::as_object_mut) else {
            return body;
        };
        let mut take = |k: &str| s3.remove(k).and_then(|v| v.as_str().map(str::to_owned));
        let (Some(access_key_id), Some(secret_access_key)) =
            (take("aws_access_key_id"), take("aws_secret_access_key"))
        else {
            return body;
        };
        let known = self
            .aws_credentials
            .iter()
            .find(|c| c.access_key_id == access_key_id && c.secret_access_key == secret_access_key);
        let id = match known {
            Some(c) => c.id,
            None => {
                let id = 1000 + self.aws_credentials.len() as i64;
                self.aws_credentials.push(AwsCredential {
                    id,
                    access_key_id,
                    secret_access_key,
                });
                id
            }
        };
        s3.insert("aws_credential_id".into(), json!(id));
        body
    }
}

impl StandIn {
    pub fn new(databases: impl IntoIterator<Item = String>, tokens: Tokens) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                databases: databases.into_iter().collect(),
                tokens,
                ..Default::default()
            })),
            schemas: Arc::new(schema::Schemas::load()),
            published: Arc::new(published::Published::load()),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/api/v1/sources", post(create_source).get(list_sources))
            .route(
                "/api/v1/sources/{id}",
                get(get_source).delete(delete_source),
            )
            .route(
                "/api/v1/sources/{id}/invocations",
                post(invocations::create_invocation),
            )
            .route(
                "/api/v1/sources/{id}/invocations/latest-by-keys",
                post(invocations::latest_invocations_by_keys),
            )
            .route("/api/v1/invocations", get(invocations::list_invocations))
            .route(
                "/api/v1/invocations/{id}",
                get(invocations::get_invocation).put(invocations::cancel_invocation),
            )
            .route("/api/v2/auth/identity", get(collections::get_identity))
            .route(
                "/api/v2/tenants/{tenant}/databases/{database}/collections/{name}",
                axum::routing::delete(collections::delete_collection),
            )
            .route("/_standin/counters", get(counters))
            .route("/_standin/reset", post(reset))
            .route("/_standin/faults", put(set_faults))
            .route("/_standin/tokens", put(set_tokens))
            .route("/_standin/databases", put(set_databases))
            .route("/_standin/runs", put(invocations::set_run_plan))
            .with_state(self.clone())
    }

    /// Serves on a free loopback port, in the background; the base URL.
    pub async fn start_local(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(self.clone().serve(listener));
        Ok(base)
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Calls to `endpoint` answered with `status`; with `"*"`, every call received, answered
    /// or not.
    pub fn calls(&self, endpoint: &str, status: &str) -> u64 {
        let inner = self.lock();
        match status {
            "*" => inner.received.get(endpoint).copied().unwrap_or_default(),
            s => inner
                .counters
                .get(endpoint)
                .and_then(|by_status| by_status.get(s))
                .copied()
                .unwrap_or_default(),
        }
    }

    /// How many sources were ever committed, deleted ones included.
    pub fn created_total(&self) -> u64 {
        self.lock().seq
    }

    /// Every call received so far, by endpoint.
    pub fn all_calls(&self) -> BTreeMap<String, u64> {
        self.lock().received.clone()
    }

    /// Faults applied so far, by kind: `limited` (a 429 of limited mode), `fail` (`fail_next` or
    /// `error_rate`), `rate_limit`,
    /// `drop`, `garble`, `latency` (a request delayed by `latency_ms`) and `commit_delay` (a
    /// committed create whose answer was held).
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.lock().injected.clone()
    }

    /// The most requests handled at once since the start (or the last [`StandIn::reset`]).
    pub fn max_in_flight(&self) -> u64 {
        self.lock().max_in_flight
    }

    /// Clears the counters, the faults (limited mode's limit with them) and the run plan, as
    /// `POST /_standin/reset` does.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.counters.clear();
        inner.received.clear();
        inner.injected.clear();
        inner.faults = Faults::default();
        inner.run_plan = RunPlan::default();
        inner.buckets.clear();
        inner.max_in_flight = inner.in_flight;
    }

    /// `(id, payload)` of the sources in `database`, oldest first.
    pub fn sources(&self, database: &str) -> Vec<(String, Value)> {
        self.lock()
            .sources
            .iter()
            .filter(|x| x.database == database)
            .map(|x| (x.id.clone(), x.body.clone()))
            .collect()
    }

    /// The AWS keys received inline with S3 creates, in order.
    pub fn aws_credentials(&self) -> Vec<AwsCredential> {
        self.lock().aws_credentials.clone()
    }

    /// Stores a source directly, as if someone else had created it.
    pub fn insert_source(&self, body: Value) -> String {
        let mut inner = self.lock();
        inner.seq += 1;
        let id = uuid::Uuid::new_v4().to_string();
        let seq = inner.seq;
        inner.sources.push(Stored {
            id: id.clone(),
            database: body["database_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            created_at: jiff::Timestamp::now(),
            seq,
            body,
        });
        id
    }

    /// Removes a source directly, as if someone had deleted it in the dashboard.
    pub fn remove_source(&self, id: &str) -> bool {
        self.lock().sources.remove(id)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn set_tokens(&self, tokens: Tokens) {
        self.lock().tokens = tokens;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in state")
    }

    fn note_injected(inner: &mut Inner, kind: &str) {
        *inner.injected.entry(kind.to_owned()).or_default() += 1;
    }

    fn count(&self, endpoint: &str, status: StatusCode) {
        *self
            .lock()
            .counters
            .entry(endpoint.to_owned())
            .or_default()
            .entry(status.as_u16().to_string())
            .or_default() += 1;
    }
}

/// The outcome of the fault dice for one request.
enum Injected {
    None,
    Fail(StatusCode),
    RateLimit(u64),
    Drop,
    Garble,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

/// A response whose body fails after the headers: the client sees a connection cut mid-answer.
fn dropped(status: StatusCode) -> Response {
    let stream = futures::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", "64")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

impl StandIn {
    /// Counts the request; in limited mode, whether `token` is over its limit (then the
    /// latency to apply before the 429).
    fn limited(&self, endpoint: &str, token: Option<&str>) -> Option<u64> {
        let mut inner = self.lock();
        *inner.received.entry(endpoint.to_owned()).or_default() += 1;
        let (rate, burst) = (inner.faults.calls_per_second, burst_of(&inner.faults));
        if rate <= 0.0 {
            return None;
        }
        let now = std::time::Instant::now();
        let bucket = inner
            .buckets
            .entry(token_key(token?))
            .or_insert_with(|| Bucket::full(burst, now));
        if bucket.take(rate, burst, now) {
            return None;
        }
        Self::note_injected(&mut inner, "limited");
        Some(inner.faults.latency_ms)
    }

    /// Applies limited mode's limit for `token`, then latency, and decides the fault for the
    /// request.
    async fn faults_for(&self, endpoint: &str, token: Option<&str>) -> (Injected, Faults) {
        if let Some(latency) = self.limited(endpoint, token) {
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            return (Injected::RateLimit(1), Faults::default());
        }
        let (latency, injected, faults) = {
            let mut inner = self.lock();
            let f = &mut inner.faults;
            if !f.endpoints.is_empty() && !f.endpoints.iter().any(|e| e == endpoint) {
                return (Injected::None, Faults::default());
            }
            let status = StatusCode::from_u16(if f.error_status == 0 {
                503
            } else {
                f.error_status
            })
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let injected = if f.fail_next > 0 {
                f.fail_next -= 1;
                Injected::Fail(status)
            } else if f.rate_limit_next > 0 {
                f.rate_limit_next -= 1;
                Injected::RateLimit(f.retry_after_secs)
            } else if f.drop_next > 0 {
                f.drop_next -= 1;
                Injected::Drop
            } else if f.garble_next > 0 {
                f.garble_next -= 1;
                Injected::Garble
            } else if f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate {
                Injected::Fail(status)
            } else {
                Injected::None
            };
            let (latency, faults) = (f.latency_ms, f.clone());
            let kind = match injected {
                Injected::None => None,
                Injected::Fail(_) => Some("fail"),
                Injected::RateLimit(_) => Some("rate_limit"),
                Injected::Drop => Some("drop"),
                Injected::Garble => Some("garble"),
            };
            for kind in kind.into_iter().chain((latency > 0).then_some("latency")) {
                Self::note_injected(&mut inner, kind);
            }
            (latency, injected, faults)
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        (injected, faults)
    }

    /// Authenticates; `write` calls need an admin token. `Some` is the refusal to send.
    fn refusal(&self, headers: &HeaderMap, write: bool) -> Option<Response> {
        let Some(token) = headers.get("x-chroma-token").and_then(|v| v.to_str().ok()) else {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing x-chroma-token header",
            ));
        };
        let inner = self.lock();
        if inner.tokens.admin.contains(token) || (!write && inner.tokens.viewer.contains(token)) {
            None
        } else if inner.tokens.viewer.contains(token) {
            Some(error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "only team owners and admins may create or delete sources",
            ))
        } else {
            Some(error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "invalid x-chroma-token",
            ))
        }
    }
}

/// A request being handled, counted in the stand-in's `in_flight` until it is dropped (also when
/// the client goes away mid-request).
struct InFlight<'a>(&'a StandIn);

impl<'a> InFlight<'a> {
    fn enter(s: &'a StandIn) -> Self {
        let mut inner = s.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        Self(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// Runs `handler` under faults and auth, counting the final status for `endpoint`.
async fn guarded(
    s: &StandIn,
    endpoint: &'static str,
    headers: &HeaderMap,
    write: bool,
    handler: impl AsyncFnOnce(&Faults) -> Response,
) -> Response {
    let _counted = InFlight::enter(s);
    let token = headers.get("x-chroma-token").and_then(|v| v.to_str().ok());
    let (injected, faults) = s.faults_for(endpoint, token).await;
    let response = match injected {
        Injected::Fail(status) => error(status, "ServerError", "injected failure"),
        Injected::RateLimit(secs) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "rate limited",
            );
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("a number"));
            r
        }
        Injected::None | Injected::Drop | Injected::Garble => match s.refusal(headers, write) {
            Some(refusal) => refusal,
            None => handler(&faults).await,
        },
    };
    s.count(endpoint, response.status());
    match injected {
        Injected::Drop => dropped(response.status()),
        Injected::Garble => (
            response.status(),
            [("content-type", "application/json")],
            "{\"source_",
        )
            .into_response(),
        _ => response,
    }
}

async fn health(State(s): State<StandIn>) -> Response {
    s.count("health", StatusCode::OK);
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn create_source(State(s): State<StandIn>, headers: HeaderMap, body: String) -> Response {
    guarded(&s, "create_source", &headers, true, async |faults| {
        let body: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    format!("body is not JSON: {e}"),
                );
            }
        };
        if let Err(message) = s.schemas.check_create(&body) {
            return error(StatusCode::BAD_REQUEST, "InvalidRequest", message);
        }
        let database = body["database_name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = natural_key(&body);
        let id = {
            let mut inner = s.lock();
            let body = inner.store_inline_credentials(body);
            if !inner.databases.contains(&database) {
                return error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("database {database:?} not found"),
                );
            }
            if inner.sources.holds(&database, &key) {
                return error(StatusCode::CONFLICT, "Conflict", "Source exists");
            }
            let id = uuid::Uuid::new_v4().to_string();
            inner.seq += 1;
            let seq = inner.seq;
            inner.sources.push(Stored {
                id: id.clone(),
                database,
                created_at: jiff::Timestamp::now(),
                seq,
                body,
            });
            id
        };
        if faults.create_commit_delay_ms > 0 {
            StandIn::note_injected(&mut s.lock(), "commit_delay");
            tokio::time::sleep(Duration::from_millis(faults.create_commit_delay_ms)).await;
        }
        (StatusCode::CREATED, axum::Json(json!({ "source_id": id }))).into_response()
    })
    .await
}

#[derive(Deserialize)]
struct ListQuery {
    database_name: Option<String>,
    source_type: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    order_by: Option<String>,
}

async fn list_sources(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    guarded(&s, "list_sources", &headers, false, async |_| {
        let inner = s.lock();
        if let Some(db) = &q.database_name
            && !inner.databases.contains(db)
        {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("database {db:?} not found"),
            );
        }
        let mut items: Vec<&Stored> = inner
            .sources
            .iter()
            .filter(|x| q.database_name.as_ref().is_none_or(|d| &x.database == d))
            .filter(|x| {
                q.source_type
                    .as_ref()
                    .is_none_or(|t| x.body.get(t.as_str()).is_some())
            })
            .collect();
        items.sort_by_key(|x| (x.created_at, x.seq));
        if q.order_by.as_deref() != Some("ASC") {
            items.reverse();
        }
        let page: Vec<Value> = items
            .into_iter()
            .skip(q.offset.unwrap_or(0))
            .take(q.limit.unwrap_or(100))
            .map(render)
            .collect();
        axum::Json(page).into_response()
    })
    .await
}

async fn get_source(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guarded(&s, "get_source", &headers, false, async |_| {
        match s.lock().sources.iter().find(|x| x.id == id) {
            Some(x) => axum::Json(render(x)).into_response(),
            None => error(StatusCode::NOT_FOUND, "NotFound", "source not found"),
        }
    })
    .await
}

async fn delete_source(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guarded(&s, "delete_source", &headers, true, async |_| {
        if !s.lock().sources.remove(&id) {
            error(StatusCode::NOT_FOUND, "NotFound", "source not found")
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    })
    .await
}

/// A stored source as the API returns it (`Source`): the payload plus id and created_at, with
/// the service's defaults for what the create left out.
fn render(x: &Stored) -> Value {
    let mut v = x.body.clone();
    let dense = json!({ "model": "Qwen/Qwen3-Embedding-0.6B" });
    let obj = v.as_object_mut().expect("validated bodies are objects");
    obj.insert("id".into(), json!(x.id));
    obj.insert("created_at".into(), json!(x.created_at.to_string()));
    obj.entry("chunking")
        .or_insert_with(|| json!({ "type": "tree_sitter" }));
    obj.entry("embedding")
        .or_insert_with(|| json!({ "dense": dense, "sparse": null }));
    if obj.get("embedding_model").is_none_or(Value::is_null) {
        obj.insert("embedding_model".into(), dense);
    }
    v
}

/// The service's (assumed) identity of a source within a database; see
/// `chroma_sync_operator::source::payload::NaturalKey`, which the operator uses to find its
/// sources again.
fn natural_key(body: &Value) -> Value {
    if let Some(g) = body.get("github") {
        json!(["github", g["repository"]])
    } else if let Some(w) = body.get("web_scrape") {
        json!(["web_scrape", w["starting_url"]])
    } else if let Some(s) = body.get("s3") {
        json!(["s3", s["bucket_name"], s["collection_name"]])
    } else {
        Value::Null
    }
}

async fn counters(State(s): State<StandIn>) -> Response {
    let inner = s.lock();
    axum::Json(json!({
        "received": inner.received,
        "answered": inner.counters,
        "injected": inner.injected,
        "max_in_flight": inner.max_in_flight,
        "sources": inner.sources.len(),
        "invocations": inner.runs.len(),
    }))
    .into_response()
}

async fn reset(State(s): State<StandIn>) -> Response {
    s.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn set_faults(State(s): State<StandIn>, axum::Json(f): axum::Json<Faults>) -> Response {
    s.lock().faults = f;
    StatusCode::NO_CONTENT.into_response()
}

async fn set_tokens(State(s): State<StandIn>, axum::Json(t): axum::Json<Tokens>) -> Response {
    s.lock().tokens = t;
    StatusCode::NO_CONTENT.into_response()
}

async fn set_databases(
    State(s): State<StandIn>,
    axum::Json(d): axum::Json<BTreeSet<String>>,
) -> Response {
    s.lock().databases = d;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, database: &str, repository: &str) -> Stored {
        Stored {
            id: id.into(),
            database: database.into(),
            created_at: jiff::Timestamp::now(),
            seq: 0,
            body: json!({"database_name": database, "github": {"repository": repository}}),
        }
    }

    #[test]
    fn the_limit_lets_a_burst_through_then_the_rate() {
        let t0 = std::time::Instant::now();
        let mut b = Bucket::full(3.0, t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert!((0..3).all(|_| b.take(10.0, 3.0, t0)), "the burst");
        assert!(!b.take(10.0, 3.0, t0), "then nothing until a token grows");
        assert!(!b.take(10.0, 3.0, ms(90)));
        assert!(b.take(10.0, 3.0, ms(101)), "100 ms later, one");
        assert!(!b.take(10.0, 3.0, ms(150)));
        // An idle bucket fills up to the burst, no further.
        assert!((0..3).all(|_| b.take(10.0, 3.0, ms(60_000))));
        assert!(!b.take(10.0, 3.0, ms(60_000)));
        // Over 10 s at 20 calls a second tried 100 times a second, 20 + 200 go (the burst first).
        let mut b = Bucket::full(20.0, t0);
        let passed = (0..1000).filter(|i| b.take(20.0, 20.0, ms(i * 10))).count();
        assert!((219..=221).contains(&passed), "{passed}");
    }

    #[test]
    fn the_burst_defaults_to_one_seconds_worth() {
        let f = |calls_per_second, burst| Faults {
            calls_per_second,
            burst,
            ..Default::default()
        };
        assert_eq!(burst_of(&f(20.0, 0)), 20.0);
        assert_eq!(burst_of(&f(0.5, 0)), 1.0);
        assert_eq!(burst_of(&f(20.0, 5)), 5.0);
    }

    #[tokio::test]
    async fn limited_mode_answers_429_per_token_above_the_rate_and_counts_them() {
        let s = StandIn::new(
            ["db".to_owned()],
            Tokens {
                admin: ["a".to_owned(), "b".to_owned()].into(),
                viewer: BTreeSet::new(),
            },
        );
        s.set_faults(Faults {
            calls_per_second: 1.0,
            burst: 2,
            ..Default::default()
        });
        let headers = |token: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-chroma-token", token.parse().unwrap());
            h
        };
        let call = async |token: &str| {
            guarded(&s, "get_source", &headers(token), false, async |_| {
                StatusCode::OK.into_response()
            })
            .await
        };
        let mut statuses = Vec::new();
        for token in ["a", "a", "a", "b", "b", "b"] {
            statuses.push(call(token).await.status().as_u16());
        }
        // Each token has its own bucket: two go at once, the third is refused.
        assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
        let refused = call("a").await;
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(s.calls("get_source", "429"), 3);
        assert_eq!(s.calls("get_source", "200"), 4);
        assert_eq!(s.injected().get("limited"), Some(&3));
        // Changed at run time: no limit, no 429.
        s.set_faults(Faults::default());
        assert_eq!(call("a").await.status(), 200);
        assert_eq!(s.max_in_flight(), 1, "one call at a time here");
        // The buckets keep no token in the clear.
        assert!(s.lock().buckets.keys().all(|k| *k != 0), "hashed keys only");
    }

    #[test]
    fn the_conflict_index_follows_creates_and_deletes() {
        let key = |repository: &str| natural_key(&stored("", "db", repository).body);
        let mut sources = Sources::default();
        sources.push(stored("a", "db", "o/r"));
        assert!(sources.holds("db", &key("o/r")));
        assert!(
            !sources.holds("other", &key("o/r")),
            "keys are per database"
        );
        assert!(!sources.holds("db", &key("o/s")));
        // Two sources with one key (one stored directly, as by someone else): the key stays
        // until both are gone.
        sources.push(stored("b", "db", "o/r"));
        assert!(sources.remove("a"));
        assert!(sources.holds("db", &key("o/r")));
        assert!(!sources.remove("a"), "already removed");
        assert!(sources.remove("b"));
        assert!(!sources.holds("db", &key("o/r")));
        assert_eq!(sources.len(), 0);
    }
}
