//! Drift detection: at an interval, checks that every recorded source still exists, by listing
//! each database's sources page by page (one token and database at a time), not by a GET per
//! object: 10,000 sources in one database cost about 100 list calls. The calls are spread over
//! the interval so they never burst. An object whose source is not listed is suspected and
//! reconciled; its reconcile confirms with one GET before it acts (a page listed while sources
//! are deleted can skip one), so a listing can cost a look, never a wrong recreate. Nothing is
//! written when nothing drifted.

use super::Sources;
use super::status;
use crate::chroma::{ChromaError, LIST_PAGE};
use crate::crd::SyncSource;
use crate::kernel::connections::Endpoint;
use crate::kernel::driver::Driver;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// One watched scope's cache, and the way to make its controller reconcile an object.
pub(super) struct Scope {
    pub store: Store<SyncSource>,
    pub trigger: UnboundedSender<ObjectRef<SyncSource>>,
}

/// The recorded sources of one database, as one endpoint (URL and token) sees them.
struct Check {
    endpoint: Endpoint,
    database: String,
    /// (scope, object, recorded source id)
    members: Vec<(usize, ObjectRef<SyncSource>, String)>,
}

/// The recorded source id of an object at rest: Ready with a recorded source, not paused, not
/// being deleted. Objects in any other state are being reconciled anyway, or already report
/// their source missing.
pub(super) fn recorded_at_rest(obj: &SyncSource) -> Option<&String> {
    let status = obj.status.as_ref()?;
    let at_rest = status::ready_reason(Some(status)) == Some(super::Reason::SourceReady.as_str())
        && obj.metadata.deletion_timestamp.is_none()
        && !crate::kernel::intent::paused(&obj.metadata);
    at_rest.then_some(status.source_id.as_ref()).flatten()
}

/// What one interval checks: every object at rest (Ready with a recorded source, not paused,
/// not being deleted), grouped by endpoint and database. Objects in any other state are being
/// reconciled anyway, or already report their source missing.
fn plan<'a>(
    scopes: impl IntoIterator<Item = (usize, &'a SyncSource)>,
    endpoint_of: impl Fn(&SyncSource) -> Option<Endpoint>,
) -> Vec<Check> {
    let mut checks: BTreeMap<(String, usize), Check> = BTreeMap::new();
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (scope, obj) in scopes {
        let Some(id) = recorded_at_rest(obj) else {
            continue;
        };
        let Some(endpoint) = endpoint_of(obj) else {
            continue;
        };
        // Endpoints are grouped by index, so that the map's key (and its order) holds no secret.
        let t = match endpoints.iter().position(|k| *k == endpoint) {
            Some(t) => t,
            None => {
                endpoints.push(endpoint.clone());
                endpoints.len() - 1
            }
        };
        let database = obj.spec.database_name.clone();
        checks
            .entry((database.clone(), t))
            .or_insert_with(|| Check {
                endpoint,
                database,
                members: Vec::new(),
            })
            .members
            .push((scope, ObjectRef::from_obj(obj), id.clone()));
    }
    checks.into_values().collect()
}

/// The pause between two list calls: the interval's first half holds them all, and no call
/// follows another sooner than `MIN_GAP` or later than `MAX_GAP`.
pub(super) fn pace(interval: Duration, calls: usize) -> Duration {
    const MIN_GAP: Duration = Duration::from_millis(50);
    const MAX_GAP: Duration = Duration::from_secs(2);
    (interval / 2)
        .checked_div(calls.max(1) as u32)
        .unwrap_or(MAX_GAP)
        .clamp(MIN_GAP, MAX_GAP)
}

/// Runs a drift check every `interval` (with jitter) until the task is dropped.
pub(super) async fn run(sources: Arc<Driver<Sources>>, scopes: Vec<Scope>, interval: Duration) {
    // The first check comes some way into the first interval, so that replicas restarted
    // together do not list together.
    let mut wait = interval.mul_f64(rand::random_range(0.5..1.0));
    loop {
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        sweep(&sources.flows, &scopes, interval).await;
        super::recent::sweep(&sources.flows, &scopes, interval).await;
        let next = interval.mul_f64(rand::random_range(0.9..1.1));
        wait = next.saturating_sub(started.elapsed());
    }
}

async fn sweep(ctx: &Sources, scopes: &[Scope], interval: Duration) {
    let objects: Vec<(usize, Arc<SyncSource>)> = scopes
        .iter()
        .enumerate()
        .flat_map(|(i, scope)| scope.store.state().into_iter().map(move |o| (i, o)))
        .collect();
    // The tokens of objects at rest may not have been read since a restart: read each
    // referenced Secret (once: a current one is not read again).
    let mut loaded = HashSet::new();
    for (_, obj) in &objects {
        let Some(from) = ctx.peek_token_from(obj) else {
            continue;
        };
        if loaded.insert(format!("{from:?}")) {
            let _ = ctx.credentials.load(&from).await;
        }
    }
    let at_rest = objects.iter().map(|(i, o)| (*i, o.as_ref()));
    let checks = plan(at_rest, |o| ctx.peek_endpoint(o));
    drop(objects);
    let calls: usize = checks
        .iter()
        .map(|c| c.members.len().div_ceil(LIST_PAGE).max(1))
        .sum();
    let gap = pace(interval, calls);
    let mut suspected = 0;
    for check in &checks {
        let missing = match unlisted(check, gap).await {
            Ok(missing) => {
                ctx.metrics.drift_checked("ok");
                missing
            }
            // No such database: none of its sources can exist (each reconcile confirms).
            Err(ChromaError::Api { status: 404, .. }) => {
                ctx.metrics.drift_checked("ok");
                check.members.iter().map(|(_, _, id)| id.as_str()).collect()
            }
            Err(e) => {
                ctx.metrics.drift_checked("error");
                warn!(database = %check.database, error = %e, "drift check failed; trying again next interval");
                continue;
            }
        };
        for (scope, obj, id) in &check.members {
            if missing.contains(id.as_str()) {
                info!(namespace = ?obj.namespace, name = %obj.name, source_id = %id, "drift check: the source was not listed; looking at it");
                suspected += 1;
                ctx.suspect(obj.clone());
                let _ = scopes[*scope].trigger.unbounded_send(obj.clone());
            }
        }
        tokio::time::sleep(gap).await;
    }
    debug!(
        databases = checks.len(),
        calls, suspected, "drift check done"
    );
}

/// The members' ids that the database's listing does not hold. Pages are read newest first
/// until every member is found or the listing ends.
async fn unlisted(check: &Check, gap: Duration) -> Result<HashSet<&str>, ChromaError> {
    let mut wanted: HashSet<&str> = check.members.iter().map(|(_, _, id)| id.as_str()).collect();
    for page in 0.. {
        if page > 0 {
            tokio::time::sleep(gap).await;
        }
        let Endpoint { chroma, token, .. } = &check.endpoint;
        let items = chroma
            .list_sources_page(token, &check.database, page)
            .await?;
        for s in &items {
            wanted.remove(s.id.as_str());
        }
        if items.len() < LIST_PAGE || wanted.is_empty() {
            break;
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, db: &str, id: Option<&str>, reason: &str, paused: bool) -> SyncSource {
        let annotations = if paused {
            json!({ crate::crd::PAUSED_ANNOTATION: "true" })
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
            "metadata": {"name": name, "namespace": "n", "annotations": annotations},
            "spec": {"databaseName": db, "github": {"repository": "a/b"}},
            "status": {"sourceId": id, "conditions": [{
                "type": "Ready", "status": if reason == "SourceReady" {"True"} else {"False"},
                "reason": reason, "message": "", "lastTransitionTime": "2026-12-02T00:00:00Z"
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn the_plan_groups_objects_at_rest_by_database_and_endpoint() {
        let objs = [
            obj("a", "docs", Some("1"), "SourceReady", false),
            obj("b", "docs", Some("2"), "SourceReady", false),
            obj("c", "wiki", Some("3"), "SourceReady", false),
            obj("paused", "docs", Some("4"), "SourceReady", true),
            obj("stalled", "docs", Some("5"), "SourceMissing", false),
            obj("new", "docs", None, "SourceReady", false),
            obj("other-token", "docs", Some("6"), "SourceReady", false),
            obj("other-url", "docs", Some("7"), "SourceReady", false),
        ];
        let client = |url: &str| {
            let config = crate::chroma::ClientConfig {
                name: "test".into(),
                limits: Default::default(),
                base_url: url.into(),
                api_url: url.into(),
                timeout: Duration::from_secs(1),
                extra_ca_pem: None,
            };
            crate::chroma::ChromaClient::new(&config, crate::metrics::Metrics::new()).unwrap()
        };
        let (here, there) = (client("https://a.example"), client("https://b.example"));
        let endpoint = |o: &SyncSource| {
            let name = o.metadata.name.as_deref();
            let t = if name == Some("other-token") {
                "t2"
            } else {
                "t1"
            };
            let chroma = if name == Some("other-url") {
                &there
            } else {
                &here
            };
            Some(Endpoint {
                via: crate::kernel::connections::Via::Operator,
                chroma: chroma.clone(),
                token: crate::chroma::Token::new(t)?,
            })
        };
        let checks = plan(objs.iter().map(|o| (0, o)), endpoint);
        let summary: Vec<(&str, Vec<&str>)> = checks
            .iter()
            .map(|c| {
                let ids = c.members.iter().map(|(_, _, id)| id.as_str()).collect();
                (c.database.as_str(), ids)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("docs", vec!["1", "2"]),
                ("docs", vec!["6"]),
                ("docs", vec!["7"]),
                ("wiki", vec!["3"])
            ]
        );
        assert!(plan(objs.iter().map(|o| (0, o)), |_| None).is_empty());
    }

    #[test]
    fn the_pace_spreads_calls_over_half_the_interval_within_bounds() {
        let ten_min = Duration::from_secs(600);
        assert_eq!(pace(ten_min, 100), Duration::from_secs(2), "capped");
        assert_eq!(
            pace(Duration::from_secs(20), 100),
            Duration::from_millis(100)
        );
        assert_eq!(
            pace(Duration::from_secs(1), 1000),
            Duration::from_millis(50),
            "floored"
        );
        assert_eq!(pace(ten_min, 0), Duration::from_secs(2));
    }
}
