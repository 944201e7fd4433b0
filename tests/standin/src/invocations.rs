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
    if given("target_collection_name").and_then(Value::as_str) == Some("") {
        return Err("target_collection_name: must not be empty".into());
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
            let key = (source.database.clone(), target.collection.clone());
            // A deleted collection holds no finished sync any more.
            if inner.collections.contains(&key)
                && holds_finished_sync(&inner.runs, &source.database, &target.collection, now)
            {
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
            inner.collections.insert(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> Value {
        json!({"database_name": "db", "github": {"repository": "o/r"}})
    }

    fn web() -> Value {
        json!({"database_name": "db", "web_scrape": {"starting_url": "https://x.dev"}})
    }

    fn s3(prefix: Option<&str>) -> Value {
        json!({"database_name": "db", "s3": {"bucket_name": "b", "region": "r",
            "collection_name": "default-c", "aws_credential_id": 1, "path_prefix": prefix}})
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn run(kind: Kind, collection: &str, created: Timestamp, plan: RunPlan) -> Run {
        Run {
            id: format!("run-{collection}-{}", created.as_second()),
            source_id: "src".into(),
            database: "db".into(),
            kind,
            collection: collection.into(),
            kind_metadata: Map::new(),
            object_key: None,
            created_at: created,
            seq: 0,
            plan,
            cancelled_at: None,
        }
    }

    fn plan(pending_s: u64, processing_s: u64, fail_with: Option<&str>) -> RunPlan {
        RunPlan {
            pending_ms: pending_s * 1000,
            processing_ms: processing_s * 1000,
            fail_with: fail_with.map(str::to_owned),
        }
    }

    fn refusal(source: &Value, payload: Value) -> String {
        target(source, &payload).unwrap_err()
    }

    #[test]
    fn each_kind_needs_its_fields_and_refuses_the_others() {
        // GitHub: a collection and a ref.
        let t = target(
            &github(),
            &json!({"target_collection_name": "c", "ref_identifier": {"sha": "abc"}}),
        )
        .unwrap();
        assert_eq!((t.kind, t.collection.as_str()), (Kind::Github, "c"));
        assert_eq!(
            Value::Object(t.kind_metadata),
            json!({"github": {"git_ref_identifier": {"sha": "abc"}}})
        );
        for (payload, field) in [
            (
                json!({"ref_identifier": {"branch": "main"}}),
                "target_collection_name:",
            ),
            (
                json!({"target_collection_name": "", "ref_identifier": {"branch": "m"}}),
                "target_collection_name:",
            ),
            (json!({"target_collection_name": "c"}), "ref_identifier:"),
            (
                json!({"target_collection_name": "c", "ref_identifier": null}),
                "ref_identifier:",
            ),
            (
                json!({"target_collection_name": "c", "ref_identifier": {"branch": ""}}),
                "ref_identifier.branch:",
            ),
            (
                json!({"target_collection_name": "c", "ref_identifier": {"sha": "a"}, "object_key": "k"}),
                "object_key:",
            ),
            (
                json!({"target_collection_name": "c", "ref_identifier": {"sha": "a"}, "custom_id": "i"}),
                "custom_id:",
            ),
            (
                json!({"target_collection_name": "c", "ref_identifier": {"sha": "a"}, "metadata": {}}),
                "metadata:",
            ),
        ] {
            let message = refusal(&github(), payload.clone());
            assert!(message.starts_with(field), "{payload}: {message}");
        }
        // Web: a collection, nothing else.
        let t = target(&web(), &json!({"target_collection_name": "w"})).unwrap();
        assert_eq!(Value::Object(t.kind_metadata), json!({"web_scrape": null}));
        assert!(refusal(&web(), json!({})).starts_with("target_collection_name:"));
        assert!(
            refusal(
                &web(),
                json!({"target_collection_name": "w", "ref_identifier": {"sha": "a"}})
            )
            .starts_with("ref_identifier:")
        );
        assert!(
            refusal(
                &web(),
                json!({"target_collection_name": "w", "object_key": "k"})
            )
            .starts_with("object_key:")
        );
        // Null is the same as absent.
        assert!(
            target(
                &web(),
                &json!({"target_collection_name": "w", "object_key": null, "custom_id": null})
            )
            .is_ok()
        );
    }

    #[test]
    fn s3_needs_a_full_key_under_the_prefix_and_defaults_the_collection() {
        let source = s3(Some("docs/"));
        let t = target(
            &source,
            &json!({"object_key": "docs/a.md", "custom_id": "id-1", "metadata": {"k": 1}}),
        )
        .unwrap();
        assert_eq!(
            t.collection, "default-c",
            "the source's collection by default"
        );
        assert_eq!(t.object_key.as_deref(), Some("docs/a.md"));
        assert_eq!(
            Value::Object(t.kind_metadata),
            json!({"s3": {"bucket_name": "b", "object_key": "docs/a.md", "custom_id": "id-1",
                          "additional_metadata": {"k": 1}}})
        );
        let t = target(
            &source,
            &json!({"object_key": "docs/b", "target_collection_name": "o"}),
        );
        assert_eq!(t.unwrap().collection, "o");
        for payload in [
            json!({"object_key": "a.md"}),
            json!({"object_key": "doc/a.md"}),
        ] {
            let message = refusal(&source, payload.clone());
            assert!(
                message.starts_with("object_key:") && message.contains("docs/"),
                "{message}"
            );
        }
        assert!(
            refusal(&source, json!({"target_collection_name": "o"})).starts_with("object_key:")
        );
        assert!(
            refusal(
                &source,
                json!({"object_key": "docs/a", "ref_identifier": {"sha": "a"}})
            )
            .starts_with("ref_identifier:")
        );
        let empty = refusal(
            &source,
            json!({"object_key": "docs/a", "target_collection_name": ""}),
        );
        assert!(empty.starts_with("target_collection_name:"), "{empty}");
        // No prefix: any key.
        assert!(target(&s3(None), &json!({"object_key": "any/key"})).is_ok());
        // A source kind without invocations here (one inserted directly, say).
        let upload = json!({"database_name": "db", "file_upload": {}});
        assert!(refusal(&upload, json!({})).starts_with("source_id:"));
    }

    #[test]
    fn the_lifecycle_follows_the_plan_from_the_creation_time() {
        let r = run(Kind::Github, "c", at(0), plan(2, 3, None));
        assert_eq!(phase_at(&r, at(-1)), Phase::Pending, "a clock step back");
        assert_eq!(phase_at(&r, at(0)), Phase::Pending);
        assert_eq!(phase_at(&r, at(2)), Phase::Processing);
        assert_eq!(phase_at(&r, at(4)), Phase::Processing);
        let done = Phase::Complete {
            finished_at: at(5),
            duration_ms: 3000,
        };
        assert_eq!(phase_at(&r, at(5)), done);
        assert_eq!(phase_at(&r, at(500)), done, "finished runs do not change");
        assert_eq!(
            done.to_json(),
            json!({"complete": {"finished_at": at(5).to_string(), "duration_ms": 3000}})
        );
        assert_eq!(Phase::Processing.to_json(), json!("processing"));

        let failing = run(Kind::Github, "c", at(0), plan(0, 1, Some("clone failed")));
        assert_eq!(phase_at(&failing, at(0)), Phase::Processing);
        let failed = phase_at(&failing, at(1));
        assert_eq!(
            failed.to_json(),
            json!({"failed": {"error": "clone failed"}})
        );

        let mut cancelled = run(Kind::Github, "c", at(0), plan(10, 1, None));
        cancelled.cancelled_at = Some(at(1));
        assert_eq!(phase_at(&cancelled, at(100)), Phase::Cancelled);
        assert_eq!(Phase::Cancelled.to_json(), json!("cancelled"));

        // Plans far beyond any clock saturate instead of overflowing.
        let forever = run(
            Kind::Github,
            "c",
            at(0),
            RunPlan {
                pending_ms: u64::MAX,
                processing_ms: u64::MAX,
                fail_with: None,
            },
        );
        assert_eq!(phase_at(&forever, at(1_000_000_000)), Phase::Pending);
        let instant = run(Kind::Github, "c", at(0), plan(0, 0, None));
        assert!(matches!(
            phase_at(&instant, at(0)),
            Phase::Complete { duration_ms: 0, .. }
        ));
    }

    #[test]
    fn only_a_finished_github_or_web_sync_closes_its_collection() {
        let done = plan(0, 1, None);
        let runs = [
            run(Kind::Github, "gh", at(0), done.clone()),
            run(Kind::WebScrape, "web", at(0), done.clone()),
            run(Kind::S3, "s3", at(0), done.clone()),
            run(Kind::Github, "failed", at(0), plan(0, 1, Some("boom"))),
            run(Kind::Github, "slow", at(0), plan(0, 100, None)),
        ];
        let closed = |collection: &str, now| holds_finished_sync(&runs, "db", collection, now);
        assert!(!closed("gh", at(0)), "still processing: appended to");
        assert!(closed("gh", at(1)));
        assert!(closed("web", at(1)));
        assert!(!closed("s3", at(1)), "S3 runs append");
        assert!(!closed("failed", at(1)));
        assert!(!closed("slow", at(50)));
        assert!(!closed("new", at(1)));
        assert!(
            !holds_finished_sync(&runs, "other-db", "gh", at(1)),
            "per database"
        );
    }

    fn query(pairs: &[(&str, &str)]) -> RunsQuery {
        let mut q = RunsQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "source_id" => q.source_id = v,
                "database_name" => q.database_name = v,
                "source_type" => q.source_type = v,
                "status" => q.status = v,
                "limit" => q.limit = v,
                "offset" => q.offset = v,
                "order_by" => q.order_by = v,
                _ => unreachable!(),
            }
        }
        q
    }

    #[test]
    fn list_parameters_are_checked_and_named() {
        for (pairs, field) in [
            (
                &[("source_id", "a"), ("database_name", "d")][..],
                "source_id:",
            ),
            (&[("status", "Pending")], "status:"),
            (&[("status", "{\"complete\":{}}")], "status:"),
            (&[("limit", "-1")], "limit:"),
            (&[("offset", "x")], "offset:"),
            (&[("order_by", "desc")], "order_by:"),
            (&[("source_type", "file_upload")], "source_type:"),
        ] {
            let message = Filter::parse(query(pairs)).unwrap_err();
            assert!(message.starts_with(field), "{pairs:?}: {message}");
        }
        let f = Filter::parse(query(&[])).unwrap();
        assert_eq!((f.limit, f.offset, f.ascending), (100, 0, false));
    }

    #[test]
    fn listing_is_newest_first_filtered_and_paged() {
        let mut runs: Vec<Run> = (0..5)
            .map(|i| {
                let mut r = run(Kind::Github, &format!("c{i}"), at(i), plan(0, 10, None));
                r.seq = i as u64;
                r
            })
            .collect();
        runs[4].kind = Kind::S3;
        runs[3].source_id = "other".into();
        let ids = |f: &Filter, now| {
            f.apply(&runs, now)
                .into_iter()
                .map(|r| r.collection.clone())
                .collect::<Vec<_>>()
        };
        let all = Filter::parse(query(&[])).unwrap();
        assert_eq!(ids(&all, at(5)), ["c4", "c3", "c2", "c1", "c0"]);
        let page = Filter::parse(query(&[("limit", "2"), ("offset", "1")])).unwrap();
        assert_eq!(ids(&page, at(5)), ["c3", "c2"]);
        let asc = Filter::parse(query(&[("order_by", "ASC"), ("limit", "2")])).unwrap();
        assert_eq!(ids(&asc, at(5)), ["c0", "c1"]);
        let of_source = Filter::parse(query(&[("source_id", "src")])).unwrap();
        assert_eq!(ids(&of_source, at(5)), ["c4", "c2", "c1", "c0"]);
        let s3 = Filter::parse(query(&[("source_type", "s3")])).unwrap();
        assert_eq!(ids(&s3, at(5)), ["c4"]);
        // At 11 s the first two have finished (10 s of processing), the rest still process.
        let complete = Filter::parse(query(&[("status", "complete")])).unwrap();
        assert_eq!(ids(&complete, at(11)), ["c1", "c0"]);
        let processing = Filter::parse(query(&[("status", "processing")])).unwrap();
        assert_eq!(ids(&processing, at(11)), ["c4", "c3", "c2"]);
        // Same creation time: the later one is newer.
        let mut tied = runs.clone();
        tied[1].created_at = at(0);
        let order: Vec<&str> = all
            .apply(&tied, at(5))
            .into_iter()
            .map(|r| r.collection.as_str())
            .collect();
        assert_eq!(order[3..], ["c1", "c0"]);
    }

    #[test]
    fn latest_by_keys_takes_the_newest_run_per_key_of_that_source() {
        let keyed = |key: &str, second: i64, source: &str| {
            let mut r = run(Kind::S3, key, at(second), plan(0, 0, None));
            r.object_key = Some(key.into());
            r.source_id = source.into();
            r.id = format!("{key}@{second}");
            r
        };
        let runs = [
            keyed("a", 0, "src"),
            keyed("a", 2, "src"),
            keyed("b", 1, "src"),
            keyed("a", 9, "elsewhere"),
        ];
        let keys = ["a", "b", "missing"].map(String::from);
        let found: Vec<(String, String)> = latest_by_keys(&runs, "src", &keys)
            .into_iter()
            .map(|(k, r)| (k, r.id.clone()))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_owned(), "a@2".to_owned()),
                ("b".into(), "b@1".into())
            ]
        );
    }

    #[test]
    fn a_rendered_job_has_the_published_fields() {
        let mut r = run(Kind::Github, "c", at(0), plan(5, 5, None));
        r.kind_metadata = target(
            &github(),
            &json!({"target_collection_name": "c", "ref_identifier": {"branch": "main"}}),
        )
        .unwrap()
        .kind_metadata;
        assert_eq!(
            render(&r, at(1)),
            json!({
                "id": r.id,
                "status": "pending",
                "metadata": {"database_name": "db", "collection_name": "c",
                             "github": {"git_ref_identifier": {"branch": "main"}}},
                "created_at": at(0).to_string(),
                "source_id": "src",
            })
        );
    }
}
