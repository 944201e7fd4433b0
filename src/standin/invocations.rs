//! The stand-in's invocations (sync runs), with the published rules: a body that breaks the
//! published `CreateJobPayload` or a source kind's rules is a 400 naming the field, an unknown
//! source a 404, a target collection that already holds a finished GitHub or web sync a 409
//! "Invocation exists" (S3 runs append), cancelling a run that is no longer pending a 412.
//!
//! A run's lifecycle `pending -> processing -> complete` (or `failed {error}`) is computed from
//! its creation time and the [`RunPlan`] in force when it was created, whenever it is read: no
//! background task, and a test chooses the durations. The decisions are pure functions of the
//! stored state and the time, tested below; the handlers only read the clock and lock.

use super::{StandIn, Stored, error, guarded};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How the runs created from now on go: `pending_ms` waiting, then `processing_ms` processing,
/// then `complete`, or `failed` with `fail_with` as the error. Set with
/// [`StandIn::set_run_plan`] or `PUT /_standin/runs`; each run keeps the plan it was created
/// under.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunPlan {
    pub pending_ms: u64,
    pub processing_ms: u64,
    pub fail_with: Option<String>,
}

impl Default for RunPlan {
    /// Short enough for `make run`, long enough to see each phase.
    fn default() -> Self {
        Self {
            pending_ms: 1000,
            processing_ms: 3000,
            fail_with: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Github,
    WebScrape,
    S3,
}

impl Kind {
    const ALL: [(Kind, &'static str); 3] = [
        (Kind::Github, "github"),
        (Kind::WebScrape, "web_scrape"),
        (Kind::S3, "s3"),
    ];

    fn of(source: &Value) -> Option<Kind> {
        Self::ALL
            .into_iter()
            .find(|(_, key)| source.get(*key).is_some())
            .map(|(kind, _)| kind)
    }

    fn named(name: &str) -> Option<Kind> {
        Self::ALL
            .into_iter()
            .find(|(_, key)| *key == name)
            .map(|(kind, _)| kind)
    }

    fn key(self) -> &'static str {
        Self::ALL
            .into_iter()
            .find(|(kind, _)| *kind == self)
            .map(|(_, key)| key)
            .expect("every kind is listed")
    }

    /// Whether a finished run marks its collection finished (`finished_ingest=true`), so that
    /// a later run into it is refused. S3 runs append instead.
    fn finishes_collection(self) -> bool {
        self != Kind::S3
    }
}

/// A committed run.
#[derive(Clone, Debug)]
pub(super) struct Run {
    pub(super) id: String,
    pub(super) source_id: String,
    database: String,
    kind: Kind,
    collection: String,
    /// The kind's entry of the metadata, e.g. `{"github": {"git_ref_identifier": ..}}`.
    kind_metadata: Map<String, Value>,
    object_key: Option<String>,
    created_at: Timestamp,
    seq: u64,
    plan: RunPlan,
    cancelled_at: Option<Timestamp>,
}

/// Where a run goes and what it records, once the payload passed the source kind's rules.
#[derive(Debug, PartialEq)]
pub(super) struct Target {
    kind: Kind,
    collection: String,
    kind_metadata: Map<String, Value>,
    object_key: Option<String>,
}

/// The source kind's rules for a payload that passed the published schema. `Err` names the
/// field.
pub(super) fn target(source: &Value, payload: &Value) -> Result<Target, String> {
    let given = |field: &str| payload.get(field).filter(|v| !v.is_null());
    let text = |field: &str| {
        given(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(kind) = Kind::of(source) else {
        return Err("source_id: this source's type takes no invocations here".into());
    };
    if kind != Kind::S3 {
        // The schema's descriptions: "S3 sources only", "not allowed for other source types".
        for field in ["object_key", "custom_id", "metadata"] {
            if given(field).is_some() {
                return Err(format!(
                    "{field}: only S3 sources take {field}, this is a {} source",
                    kind.key()
                ));
            }
        }
    }
    if kind != Kind::Github && given("ref_identifier").is_some() {
        return Err(format!(
            "ref_identifier: only GitHub sources take a ref, this is a {} source",
            kind.key()
        ));
    }
    let required = |field: &str| {
        text(field).ok_or_else(|| format!("{field}: required for {} sources", kind.key()))
    };
    let mut kind_metadata = Map::new();
    let (collection, object_key) = match kind {
        Kind::Github => {
            let collection = required("target_collection_name")?;
            let Some(git_ref) = given("ref_identifier") else {
                return Err(
                    "ref_identifier: required for github sources (a branch or a sha)".into(),
                );
            };
            // The schema's oneOf let exactly one of the two through.
            let (key, name) = ["sha", "branch"]
                .into_iter()
                .find_map(|k| Some((k, git_ref.get(k)?.as_str()?)))
                .ok_or("ref_identifier: a branch or a sha is required")?;
            if name.is_empty() {
                return Err(format!("ref_identifier.{key}: must not be empty"));
            }
            kind_metadata.insert(
                "github".into(),
                json!({ "git_ref_identifier": { key: name } }),
            );
            (collection, None)
        }
        Kind::WebScrape => {
            kind_metadata.insert("web_scrape".into(), Value::Null);
            (required("target_collection_name")?, None)
        }
        Kind::S3 => {
            let key = required("object_key")?;
            let s3 = &source["s3"];
            let prefix = s3["path_prefix"].as_str().unwrap_or_default();
            if !key.starts_with(prefix) {
                return Err(format!(
                    "object_key: must be the full key, starting with the source's path_prefix {prefix:?}"
                ));
            }
            let collection = text("target_collection_name")
                .or_else(|| s3["collection_name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            kind_metadata.insert(
                "s3".into(),
                json!({
                    "bucket_name": s3["bucket_name"],
                    "object_key": key,
                    "custom_id": given("custom_id"),
                    "additional_metadata": given("metadata"),
                }),
            );
            (collection, Some(key))
        }
    };
    Ok(Target {
        kind,
        collection,
        kind_metadata,
        object_key,
    })
}

/// A run's state at `now`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Phase {
    Pending,
    Processing,
    Complete {
        finished_at: Timestamp,
        duration_ms: u64,
    },
    Failed {
        error: String,
    },
    Cancelled,
}

impl Phase {
    /// The plain name, as the list's `status` filter spells it.
    fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Processing => "processing",
            Phase::Complete { .. } => "complete",
            Phase::Failed { .. } => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// `JobStatus`: plain strings for the unit states, objects for the others.
    fn to_json(&self) -> Value {
        match self {
            Phase::Complete {
                finished_at,
                duration_ms,
            } => json!({"complete": {
                "finished_at": finished_at.to_string(),
                "duration_ms": duration_ms,
            }}),
            Phase::Failed { error } => json!({ "failed": { "error": error } }),
            other => json!(other.name()),
        }
    }
}

fn millis(ms: u64) -> SignedDuration {
    SignedDuration::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The lifecycle: pending for `pending_ms`, processing for `processing_ms`, then finished
/// (failed when the plan says so); cancelled from the moment a cancel found it pending.
/// `duration_ms` is the time spent processing.
pub(super) fn phase_at(run: &Run, now: Timestamp) -> Phase {
    if run.cancelled_at.is_some() {
        return Phase::Cancelled;
    }
    let elapsed = now.duration_since(run.created_at);
    let pending = millis(run.plan.pending_ms);
    let finished = pending.saturating_add(millis(run.plan.processing_ms));
    if elapsed < pending {
        Phase::Pending
    } else if elapsed < finished {
        Phase::Processing
    } else if let Some(error) = &run.plan.fail_with {
        Phase::Failed {
            error: error.clone(),
        }
    } else {
        Phase::Complete {
            finished_at: run
                .created_at
                .saturating_add(finished)
                .unwrap_or(Timestamp::MAX),
            duration_ms: run.plan.processing_ms,
        }
    }
}

/// Whether `database`/`collection` holds a finished sync that refuses another run into it.
pub(super) fn holds_finished_sync(
    runs: &[Run],
    database: &str,
    collection: &str,
    now: Timestamp,
) -> bool {
    runs.iter().any(|r| {
        r.database == database
            && r.collection == collection
            && r.kind.finishes_collection()
            && matches!(phase_at(r, now), Phase::Complete { .. })
    })
}

/// A run as the API returns it (`Job`).
pub(super) fn render(run: &Run, now: Timestamp) -> Value {
    let mut metadata = run.kind_metadata.clone();
    metadata.insert("database_name".into(), json!(run.database));
    metadata.insert("collection_name".into(), json!(run.collection));
    json!({
        "id": run.id,
        "status": phase_at(run, now).to_json(),
        "metadata": metadata,
        "created_at": run.created_at.to_string(),
        "source_id": run.source_id,
    })
}

/// The query of `GET /api/v1/invocations`, as sent (parsed by [`Filter::parse`] so that a bad
/// value is a 400 naming the parameter, in the service's error shape).
#[derive(Deserialize, Default)]
pub(super) struct RunsQuery {
    source_id: Option<String>,
    database_name: Option<String>,
    source_type: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    order_by: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(super) struct Filter {
    source_id: Option<String>,
    database: Option<String>,
    kind: Option<Kind>,
    status: Option<String>,
    limit: usize,
    offset: usize,
    ascending: bool,
}

impl Filter {
    const STATUSES: [&'static str; 5] =
        ["pending", "processing", "complete", "failed", "cancelled"];

    pub(super) fn parse(q: RunsQuery) -> Result<Filter, String> {
        if q.source_id.is_some() && q.database_name.is_some() {
            return Err("source_id: cannot be given together with database_name".into());
        }
        let number = |name: &str, value: Option<String>, default: usize| match value {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| format!("{name}: must be a non-negative integer, got {v:?}")),
        };
        let kind = match q.source_type.as_deref() {
            None => None,
            Some(t) => Some(Kind::named(t).ok_or_else(|| {
                format!("source_type: must be one of github, web_scrape, s3, got {t:?}")
            })?),
        };
        if let Some(s) = &q.status
            && !Self::STATUSES.contains(&s.as_str())
        {
            return Err(format!(
                "status: must be one of {}, got {s:?}",
                Self::STATUSES.join(", ")
            ));
        }
        let ascending = match q.order_by.as_deref() {
            None | Some("DESC") => false,
            Some("ASC") => true,
            Some(o) => return Err(format!("order_by: must be ASC or DESC, got {o:?}")),
        };
        Ok(Filter {
            source_id: q.source_id,
            database: q.database_name,
            kind,
            status: q.status,
            limit: number("limit", q.limit, 100)?,
            offset: number("offset", q.offset, 0)?,
            ascending,
        })
    }

    /// The page, newest first unless `ASC`.
    pub(super) fn apply<'a>(&self, runs: &'a [Run], now: Timestamp) -> Vec<&'a Run> {
        let mut items: Vec<&Run> = runs
            .iter()
            .filter(|r| self.source_id.as_ref().is_none_or(|s| &r.source_id == s))
            .filter(|r| self.database.as_ref().is_none_or(|d| &r.database == d))
            .filter(|r| self.kind.is_none_or(|k| r.kind == k))
            .filter(|r| {
                self.status
                    .as_ref()
                    .is_none_or(|s| phase_at(r, now).name() == s)
            })
            .collect();
        items.sort_by_key(|r| (r.created_at, r.seq));
        if !self.ascending {
            items.reverse();
        }
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }
}

/// The newest run of `source_id` per object key, for the keys that have one.
pub(super) fn latest_by_keys<'a>(
    runs: &'a [Run],
    source_id: &str,
    keys: &[String],
) -> Vec<(String, &'a Run)> {
    keys.iter()
        .filter_map(|key| {
            runs.iter()
                .filter(|r| r.source_id == source_id && r.object_key.as_ref() == Some(key))
                .max_by_key(|r| (r.created_at, r.seq))
                .map(|r| (key.clone(), r))
        })
        .collect()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

fn source_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NotFound", "Source not found")
}

fn invocation_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NotFound", "Invocation not found")
}

fn json_body(body: &str) -> Result<Value, String> {
    serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))
}

impl StandIn {
    /// The plan for runs created from now on.
    pub fn set_run_plan(&self, plan: RunPlan) {
        self.lock().run_plan = plan;
    }

    /// The runs of `source_id` as `GET /api/v1/invocations/{id}` would answer each now, oldest
    /// first (the source may be deleted: its runs stay).
    pub fn invocations(&self, source_id: &str) -> Vec<Value> {
        let now = Timestamp::now();
        let inner = self.lock();
        let mut runs: Vec<&Run> = inner
            .runs
            .iter()
            .filter(|r| r.source_id == source_id)
            .collect();
        runs.sort_by_key(|r| (r.created_at, r.seq));
        runs.into_iter().map(|r| render(r, now)).collect()
    }

    fn find_source(&self, id: &str) -> Option<Stored> {
        self.lock().sources.iter().find(|x| x.id == id).cloned()
    }
}

pub(super) async fn create_invocation(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(source_id): Path<String>,
    body: String,
) -> Response {
    guarded(&s, "create_invocation", &headers, true, async |faults| {
        let payload = match json_body(&body).and_then(|p| {
            s.published.check_job_payload(&p)?;
            Ok(p)
        }) {
            Ok(p) => p,
            Err(message) => return bad_request(message),
        };
        let Some(source) = s.find_source(&source_id) else {
            return source_not_found();
        };
        let target = match target(&source.body, &payload) {
            Ok(t) => t,
            Err(message) => return bad_request(message),
        };
        let now = Timestamp::now();
        let id = {
            let mut inner = s.lock();
            // The source may have gone while the lock was let go.
            if !inner.sources.iter().any(|x| x.id == source_id) {
                return source_not_found();
            }
            if holds_finished_sync(&inner.runs, &source.database, &target.collection, now) {
                return error(StatusCode::CONFLICT, "Conflict", "Invocation exists");
            }
            let id = uuid::Uuid::new_v4().to_string();
            inner.run_seq += 1;
            let run = Run {
                id: id.clone(),
                source_id,
                database: source.database,
                kind: target.kind,
                collection: target.collection,
                kind_metadata: target.kind_metadata,
                object_key: target.object_key,
                created_at: now,
                seq: inner.run_seq,
                plan: inner.run_plan.clone(),
                cancelled_at: None,
            };
            inner.runs.push(run);
            id
        };
        if faults.create_commit_delay_ms > 0 {
            StandIn::note_injected(&mut s.lock(), "commit_delay");
            tokio::time::sleep(Duration::from_millis(faults.create_commit_delay_ms)).await;
        }
        (
            StatusCode::CREATED,
            axum::Json(json!({ "invocation_id": id })),
        )
            .into_response()
    })
    .await
}

pub(super) async fn get_invocation(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guarded(&s, "get_invocation", &headers, false, async |_| {
        let now = Timestamp::now();
        match s.lock().runs.iter().find(|r| r.id == id) {
            Some(run) => axum::Json(render(run, now)).into_response(),
            None => invocation_not_found(),
        }
    })
    .await
}

pub(super) async fn list_invocations(
    State(s): State<StandIn>,
    headers: HeaderMap,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    guarded(&s, "list_invocations", &headers, false, async |_| {
        let filter = match query {
            Ok(Query(q)) => Filter::parse(q),
            Err(e) => Err(format!("query: {e}")),
        };
        let filter = match filter {
            Ok(f) => f,
            Err(message) => return bad_request(message),
        };
        let now = Timestamp::now();
        let inner = s.lock();
        if let Some(id) = &filter.source_id
            && !inner.sources.iter().any(|x| &x.id == id)
        {
            return source_not_found();
        }
        if let Some(db) = &filter.database
            && !inner.databases.contains(db)
        {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("database {db:?} not found"),
            );
        }
        let page: Vec<Value> = filter
            .apply(&inner.runs, now)
            .into_iter()
            .map(|r| render(r, now))
            .collect();
        axum::Json(page).into_response()
    })
    .await
}

pub(super) async fn cancel_invocation(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guarded(&s, "cancel_invocation", &headers, true, async |_| {
        let now = Timestamp::now();
        let mut inner = s.lock();
        let Some(run) = inner.runs.iter_mut().find(|r| r.id == id) else {
            return invocation_not_found();
        };
        match phase_at(run, now) {
            Phase::Pending => {
                run.cancelled_at = Some(now);
                (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
            }
            other => error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                format!(
                    "Invocation is not in a cancelable state: it is {}, only pending invocations can be cancelled",
                    other.name()
                ),
            ),
        }
    })
    .await
}

pub(super) async fn latest_invocations_by_keys(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path(source_id): Path<String>,
    body: String,
) -> Response {
    guarded(
        &s,
        "latest_invocations_by_keys",
        &headers,
        false,
        async |_| {
            let body = match json_body(&body).and_then(|b| {
                s.published.check_latest_by_keys(&b)?;
                Ok(b)
            }) {
                Ok(b) => b,
                Err(message) => return bad_request(message),
            };
            let keys: Vec<String> = serde_json::from_value(body["object_keys"].clone())
                .expect("the schema admits only an array of strings");
            let now = Timestamp::now();
            let inner = s.lock();
            if !inner.sources.iter().any(|x| x.id == source_id) {
                return source_not_found();
            }
            let map: Map<String, Value> = latest_by_keys(&inner.runs, &source_id, &keys)
                .into_iter()
                .map(|(key, run)| (key, render(run, now)))
                .collect();
            axum::Json(map).into_response()
        },
    )
    .await
}

pub(super) async fn set_run_plan(
    State(s): State<StandIn>,
    axum::Json(plan): axum::Json<RunPlan>,
) -> Response {
    s.set_run_plan(plan);
    StatusCode::NO_CONTENT.into_response()
}
