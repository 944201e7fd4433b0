//! Prometheus metrics: reconciles, their durations and errors by reason, Chroma calls by
//! endpoint and status code, and SyncRuns by phase and source kind; for alerts, the conditions of
//! every cached object (read from the controllers' caches at scrape time), whether this replica
//! leads, and the build; and the process's own `process_*` series (metrics/process.rs). Labels never carry object contents (but an object's namespace and name)
//! or secrets.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

mod process;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    phase: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// One condition of one object, as the condition gauge shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectCondition<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
}

/// Which objects the condition gauge shows: at 100,000 objects every object's series make a
/// scrape of megabytes, while alerts read only the objects that are not Ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConditionScope {
    /// Every object (the default).
    #[default]
    All,
    /// Only objects whose `Ready` is not `True`.
    NotReady,
    /// None: the gauge has no series.
    Off,
}

/// Lists, when called (at each scrape), every condition of every object of one kind.
pub type ConditionSource = Box<dyn Fn(&mut dyn FnMut(ObjectCondition<'_>)) + Send + Sync>;

/// The condition sources, by kind.
type ConditionSources = Arc<RwLock<Vec<(String, ConditionSource)>>>;

/// `condition{kind, namespace, name, type, status, reason} 1` for each condition the sources
/// list at scrape time, as Flux's `gotk_reconcile_condition`: an object's series go with it, and
/// nothing is kept per object between scrapes.
struct Conditions(ConditionSources);

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let kinds: Vec<&str> = sources.iter().map(|(kind, _)| kind.as_str()).collect();
        f.debug_tuple("Conditions").field(&kinds).finish()
    }
}

impl Collector for Conditions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "condition",
            "The conditions of each SyncSource and SyncRun (1 per condition present), by kind, \
             namespace, name, type, status and reason.",
            None,
            MetricType::Gauge,
        )?;
        let sources = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut written = Ok(());
        for (kind, source) in sources.iter() {
            source(&mut |c| {
                if written.is_err() {
                    return;
                }
                let labels = [
                    ("kind", kind.as_str()),
                    ("namespace", c.namespace),
                    ("name", c.name),
                    ("type", c.type_),
                    ("status", c.status),
                    ("reason", c.reason),
                ];
                written = metric
                    .encode_family(&labels)
                    .and_then(|mut series| series.encode_gauge(&1i64));
            });
        }
        written
    }
}

struct Inner {
    registry: Registry,
    /// The `process_*` series, unprefixed.
    process: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    chroma_calls: Family<CallLabels, Counter>,
    chroma_duration: Family<EndpointLabels, Histogram>,
    events_dropped: Counter,
    runs: Family<RunLabels, Counter>,
    sync_ticks_skipped: Counter,
    run_duration: Family<RunLabels, Histogram>,
    sources_missing: Family<ActionLabels, Counter>,
    drift_checks: Family<ResultLabels, Counter>,
    invocations_seen: Family<OriginLabels, Counter>,
    notifications: Family<ResultLabels, Counter>,
    leader: Gauge,
    conditions: ConditionSources,
    condition_scope: Arc<RwLock<ConditionScope>>,
    rate_limited: Family<ConnectionLabels, Counter>,
    limiter_wait: Family<ConnectionLabels, Histogram>,
    calls_in_flight: Family<ConnectionLabels, Gauge>,
    rate_limit: Family<ConnectionLabels, Gauge<f64, AtomicU64>>,
}

/// The series of one connection's limiter (`chroma::limit`), labelled `connection`.
#[derive(Clone, Debug)]
pub struct LimiterMetrics {
    /// Calls answered 429.
    pub limited: Counter,
    /// Seconds a call waited for the limiter (a free slot, the bucket, a pause).
    pub waited: Histogram,
    /// Calls sent and not yet answered.
    pub in_flight: Gauge,
    rate: Gauge<f64, AtomicU64>,
}

impl LimiterMetrics {
    /// The rate the limiter paces calls at now; 0 while there is none (unlimited).
    pub fn set_rate(&self, rate: Option<f64>) {
        self.rate.set(rate.unwrap_or(0.0));
    }
}

/// Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chroma_sync_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, whatever their outcome, by kind",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error or a condition needing attention, by kind and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took, by kind",
            reconcile_duration.clone(),
        );
        let chroma_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "chroma_requests",
            "Calls to the Chroma Sync API by endpoint and HTTP status code (\"error\" when no answer)",
            chroma_calls.clone(),
        );
        let chroma_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "chroma_request_duration_seconds",
            "Latency of calls to the Chroma Sync API",
            chroma_duration.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not written because the queue was full (the apiserver slower than they came)",
            events_dropped.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "SyncRuns that reached a phase, by phase and source kind",
            runs.clone(),
        );
        let run_duration = Family::<RunLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 16))
        });
        registry.register(
            "run_duration_seconds",
            "Time from a SyncRun's creation to its final phase, by that phase and source kind",
            run_duration.clone(),
        );
        let sync_ticks_skipped = Counter::default();
        registry.register(
            "sync_ticks_skipped",
            "Schedule ticks of spec.sync that found a run still going, and so started none",
            sync_ticks_skipped.clone(),
        );
        let notifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "notifications",
            "Events posted to --events-addr (Flux's event format), by result: sent, duplicate (the receiver had it already), failed (given up after the retries)",
            notifications.clone(),
        );
        let sources_missing = Family::<ActionLabels, Counter>::default();
        registry.register(
            "sources_missing",
            "Recorded sources found gone from Chroma, by what was done (recreated, reported)",
            sources_missing.clone(),
        );
        let drift_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "drift_checks",
            "Drift checks of one database (a paged list of its sources), by result (ok, error)",
            drift_checks.clone(),
        );
        let invocations_seen = Family::<OriginLabels, Counter>::default();
        registry.register(
            "invocations_seen",
            "Invocations of S3 sources first seen in status.recentRuns, by origin (operator, service)",
            invocations_seen.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The operator's version (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (it holds the Lease, or leader election \
             is off), 0 while it stands by",
            leader.clone(),
        );
        let rate_limited = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "chroma_rate_limited",
            "Calls to the Chroma Sync API answered 429 (rate limited), by connection",
            rate_limited.clone(),
        );
        let limiter_wait = Family::<ConnectionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "chroma_limiter_wait_seconds",
            "How long a call to the Chroma Sync API waited for its connection's limiter (a free \
             slot, the rate, a pause after a 429), by connection",
            limiter_wait.clone(),
        );
        let calls_in_flight = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "chroma_calls_in_flight",
            "Calls to the Chroma Sync API sent and not yet answered, by connection",
            calls_in_flight.clone(),
        );
        let rate_limit = Family::<ConnectionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "chroma_rate_limit",
            "The rate (calls per second) a connection's calls are paced at now, as configured \
             and adapted to 429s; 0 while unlimited",
            rate_limit.clone(),
        );
        let conditions = ConditionSources::default();
        registry.register_collector(Box::new(Conditions(conditions.clone())));
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Self(Arc::new(Inner {
            process,
            condition_scope: Arc::default(),
            rate_limited,
            limiter_wait,
            calls_in_flight,
            rate_limit,
            leader,
            conditions,
            sources_missing,
            drift_checks,
            invocations_seen,
            notifications,
            events_dropped,
            sync_ticks_skipped,
            runs,
            run_duration,
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            chroma_calls,
            chroma_duration,
        }))
    }

    /// A reconcile of a `kind` object took `took`, and failed on `error_reason` if any.
    pub fn reconciled(
        &self,
        kind: &'static str,
        took: Duration,
        error_reason: Option<&'static str>,
    ) {
        let labels = KindLabels { kind };
        self.0.reconciles.get_or_create(&labels).inc();
        self.0
            .reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.0
                .reconcile_errors
                .get_or_create(&ReasonLabels { kind, reason })
                .inc();
        }
    }

    pub fn chroma_call(&self, endpoint: &'static str, code: &str, took: Duration) {
        self.0
            .chroma_calls
            .get_or_create(&CallLabels {
                endpoint,
                code: code.to_owned(),
            })
            .inc();
        self.0
            .chroma_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// The series of the limiter of the connection `connection` (a label: never a secret).
    pub fn limiter(&self, connection: &str) -> LimiterMetrics {
        let labels = ConnectionLabels {
            connection: connection.to_owned(),
        };
        LimiterMetrics {
            limited: self.0.rate_limited.get_or_create(&labels).clone(),
            waited: self.0.limiter_wait.get_or_create(&labels).clone(),
            in_flight: self.0.calls_in_flight.get_or_create(&labels).clone(),
            rate: self.0.rate_limit.get_or_create(&labels).clone(),
        }
    }

    /// A SyncRun reached `phase`; `since_created` is set for a final phase.
    pub fn run_phase(
        &self,
        phase: &'static str,
        kind: &'static str,
        since_created: Option<Duration>,
    ) {
        let labels = RunLabels { phase, kind };
        self.0.runs.get_or_create(&labels).inc();
        if let Some(took) = since_created {
            self.0
                .run_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
    }

    /// A recorded source was found gone; `action` is `recreated` or `reported`.
    pub fn source_missing(&self, action: &'static str) {
        self.0
            .sources_missing
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    /// One database's drift check ended; `result` is `ok` or `error`.
    pub fn drift_checked(&self, result: &'static str) {
        self.0
            .drift_checks
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// An invocation of an S3 source seen for the first time; `origin` is `operator` or
    /// `service`.
    pub fn invocation_seen(&self, origin: &'static str) {
        self.0
            .invocations_seen
            .get_or_create(&OriginLabels { origin })
            .inc();
    }

    /// An event posted to the events address: `sent`, `duplicate` or `failed`.
    pub fn notification(&self, result: &'static str) {
        self.0
            .notifications
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn sync_tick_skipped(&self) {
        self.0.sync_ticks_skipped.inc();
    }

    pub fn event_dropped(&self) {
        self.0.events_dropped.inc();
    }

    /// Whether this replica runs the controllers (holds the Lease, or elects no leader).
    pub fn set_leader(&self, leads: bool) {
        self.0.leader.set(i64::from(leads));
    }

    /// Shows the conditions `source` lists, as those of objects of `kind`, at every scrape; it
    /// replaces an earlier source of the same kind (a controller built again).
    pub fn show_conditions(&self, kind: impl Into<String>, source: ConditionSource) {
        let kind = kind.into();
        let mut sources = self
            .0
            .conditions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        sources.retain(|(k, _)| *k != kind);
        sources.push((kind, source));
    }

    /// Which objects the condition gauge shows from now on.
    pub fn set_condition_scope(&self, scope: ConditionScope) {
        *self
            .0
            .condition_scope
            .write()
            .unwrap_or_else(PoisonError::into_inner) = scope;
    }

    /// Shows the conditions of every object in `caches` (a controller's reflector stores, one
    /// per watched scope), read from them at each scrape, as the condition scope says.
    pub fn show_cached_conditions<K>(
        &self,
        caches: Vec<Store<K>>,
        conditions: fn(&K) -> &[Condition],
    ) where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let kind = K::kind(&()).into_owned();
        let scope = self.0.condition_scope.clone();
        self.show_conditions(
            kind,
            Box::new(move |emit| {
                let scope = *scope.read().unwrap_or_else(PoisonError::into_inner);
                if scope == ConditionScope::Off {
                    return;
                }
                for cache in &caches {
                    for obj in cache.state() {
                        let ready = conditions(&obj)
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True");
                        if ready && scope == ConditionScope::NotReady {
                            continue;
                        }
                        let meta = obj.meta();
                        let namespace = meta.namespace.as_deref().unwrap_or_default();
                        let name = meta.name.as_deref().unwrap_or_default();
                        for c in conditions(&obj) {
                            emit(ObjectCondition {
                                namespace,
                                name,
                                type_: &c.type_,
                                status: &c.status,
                                reason: &c.reason,
                            });
                        }
                    }
                }
            }),
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &self.0.registry)
            .and_then(|()| encode_registry(&mut out, &self.0.process))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::run::SyncRun;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::json;
    use std::sync::Mutex;

    /// The rendered lines of the series `name` (with its labels), in order.
    fn series(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .map(str::to_owned)
            .collect()
    }

    /// A condition source over `objects`: (namespace, name, [(type, status, reason)]).
    type Fake = Arc<Mutex<Vec<(&'static str, &'static str, Vec<[&'static str; 3]>)>>>;

    fn fake_source(objects: &Fake) -> ConditionSource {
        let objects = objects.clone();
        Box::new(move |emit| {
            for (namespace, name, conditions) in objects.lock().unwrap().iter() {
                for [type_, status, reason] in conditions {
                    emit(ObjectCondition {
                        namespace,
                        name,
                        type_,
                        status,
                        reason,
                    });
                }
            }
        })
    }

    #[test]
    fn the_condition_gauge_shows_each_condition_the_sources_list_at_each_scrape() {
        let metrics = Metrics::new();
        let text = metrics.render();
        assert!(
            text.contains(
                "and reason.\n# TYPE chroma_sync_operator_condition gauge\n# HELP process_"
            ),
            "{text}"
        );
        assert_eq!(series(&text, "chroma_sync_operator_condition"), [""; 0]);

        let sources: Fake = Arc::new(Mutex::new(vec![
            ("team-a", "docs", vec![["Ready", "True", "SourceReady"]]),
            (
                "team-b",
                "web",
                vec![
                    ["Ready", "False", "Unauthorized"],
                    ["Stalled", "True", "Unauthorized"],
                ],
            ),
        ]));
        let runs: Fake = Arc::new(Mutex::new(vec![(
            "team-a",
            "docs-main",
            vec![["Ready", "False", "Paused"]],
        )]));
        metrics.show_conditions("SyncSource", fake_source(&sources));
        metrics.show_conditions("SyncRun", fake_source(&runs));
        assert_eq!(
            series(&metrics.render(), "chroma_sync_operator_condition"),
            [
                r#"chroma_sync_operator_condition{kind="SyncSource",namespace="team-a",name="docs",type="Ready",status="True",reason="SourceReady"} 1"#,
                r#"chroma_sync_operator_condition{kind="SyncSource",namespace="team-b",name="web",type="Ready",status="False",reason="Unauthorized"} 1"#,
                r#"chroma_sync_operator_condition{kind="SyncSource",namespace="team-b",name="web",type="Stalled",status="True",reason="Unauthorized"} 1"#,
                r#"chroma_sync_operator_condition{kind="SyncRun",namespace="team-a",name="docs-main",type="Ready",status="False",reason="Paused"} 1"#,
            ]
        );

        // An object gone from the cache is gone from the next scrape; a source registered again
        // for its kind replaces the first.
        sources.lock().unwrap().remove(1);
        let replacement: Fake = Arc::new(Mutex::new(vec![(
            "team-c",
            "nightly",
            vec![["Ready", "True", "Complete"]],
        )]));
        metrics.show_conditions("SyncRun", fake_source(&replacement));
        assert_eq!(
            series(&metrics.render(), "chroma_sync_operator_condition"),
            [
                r#"chroma_sync_operator_condition{kind="SyncSource",namespace="team-a",name="docs",type="Ready",status="True",reason="SourceReady"} 1"#,
                r#"chroma_sync_operator_condition{kind="SyncRun",namespace="team-c",name="nightly",type="Ready",status="True",reason="Complete"} 1"#,
            ]
        );
    }

    fn run(name: &str, conditions: serde_json::Value) -> SyncRun {
        serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1",
            "kind": "SyncRun",
            "metadata": {"namespace": "team-a", "name": name, "uid": name},
            "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs"},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason,
               "message": "token ghp_secret is wrong", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn cached_conditions_are_read_from_the_caches_at_each_scrape_and_never_show_messages() {
        let metrics = Metrics::new();
        let mut cache = Writer::<SyncRun>::default();
        metrics.show_cached_conditions(vec![cache.as_reader()], |r: &SyncRun| {
            r.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
        let failed = run(
            "failed",
            json!([
                condition("Ready", "False", "RunFailed"),
                condition("Stalled", "True", "RunFailed")
            ]),
        );
        cache.apply_watcher_event(&watcher::Event::Apply(failed.clone()));
        cache.apply_watcher_event(&watcher::Event::Apply(run("new", json!([]))));
        let text = metrics.render();
        let mut lines = series(&text, "chroma_sync_operator_condition");
        lines.sort();
        assert_eq!(
            lines,
            [
                r#"chroma_sync_operator_condition{kind="SyncRun",namespace="team-a",name="failed",type="Ready",status="False",reason="RunFailed"} 1"#,
                r#"chroma_sync_operator_condition{kind="SyncRun",namespace="team-a",name="failed",type="Stalled",status="True",reason="RunFailed"} 1"#,
            ]
        );
        assert!(!text.contains("ghp_secret"), "{text}");

        cache.apply_watcher_event(&watcher::Event::Delete(failed));
        assert_eq!(
            series(&metrics.render(), "chroma_sync_operator_condition"),
            [""; 0]
        );
    }

    #[test]
    fn the_condition_scope_shows_all_objects_the_not_ready_ones_or_none() {
        let metrics = Metrics::new();
        let mut cache = Writer::<SyncRun>::default();
        metrics.show_cached_conditions(vec![cache.as_reader()], |r: &SyncRun| {
            r.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
        let done = run("done", json!([condition("Ready", "True", "Complete")]));
        let failed = run("failed", json!([condition("Ready", "False", "RunFailed")]));
        cache.apply_watcher_event(&watcher::Event::Apply(done));
        cache.apply_watcher_event(&watcher::Event::Apply(failed));
        let names = |m: &Metrics| {
            let mut names: Vec<String> = series(&m.render(), "chroma_sync_operator_condition")
                .iter()
                .map(|l| {
                    l.split("name=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&metrics), ["done", "failed"]);
        metrics.set_condition_scope(ConditionScope::NotReady);
        assert_eq!(names(&metrics), ["failed"]);
        metrics.set_condition_scope(ConditionScope::Off);
        assert!(names(&metrics).is_empty());
    }

    #[test]
    fn the_leader_gauge_says_whether_this_replica_leads() {
        let metrics = Metrics::new();
        let leader = |m: &Metrics| series(&m.render(), "chroma_sync_operator_leader");
        assert_eq!(leader(&metrics), ["chroma_sync_operator_leader 0"]);
        metrics.set_leader(true);
        assert_eq!(leader(&metrics), ["chroma_sync_operator_leader 1"]);
        // Every clone shares the gauge (main holds one, the server another).
        metrics.clone().set_leader(false);
        assert_eq!(leader(&metrics), ["chroma_sync_operator_leader 0"]);
    }

    /// The process series are there, unprefixed, with values this very process can check.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_series_describe_this_process() {
        // Enough CPU for a clock tick (10 ms) to be counted.
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let text = Metrics::new().render();
        let value = |name: &str| -> f64 {
            let line = series(&text, name);
            assert_eq!(line.len(), 1, "{name}: {line:?}\n{text}");
            line[0].rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_cpu_seconds_total") > 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && now - started < 86_400.0,
            "{started} vs {now}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn build_info_names_the_version() {
        assert_eq!(
            series(&Metrics::new().render(), "chroma_sync_operator_build_info"),
            [format!(
                r#"chroma_sync_operator_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )]
        );
    }
}
