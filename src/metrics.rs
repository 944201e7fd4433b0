//! Prometheus metrics: reconciles, their durations and errors by reason, Chroma calls by
//! endpoint and status code, and SyncRuns by phase and source kind. Labels never carry object contents or secrets.

use crate::controller::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
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
    reason: &'static str,
}

struct Inner {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    chroma_calls: Family<CallLabels, Counter>,
    chroma_duration: Family<EndpointLabels, Histogram>,
    events_dropped: Counter,
    runs: Family<RunLabels, Counter>,
    sync_ticks_skipped: Counter,
    run_duration: Family<RunLabels, Histogram>,
    sources_missing: Family<ActionLabels, Counter>,
    drift_checks: Family<ResultLabels, Counter>,
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
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles run, whatever their outcome",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error or a condition needing attention, by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
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
        Self(Arc::new(Inner {
            sources_missing,
            drift_checks,
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

    pub fn reconciled(&self, took: Duration, error_reason: Option<Reason>) {
        self.0.reconciles.inc();
        self.0.reconcile_duration.observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.0
                .reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
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

    pub fn sync_tick_skipped(&self) {
        self.0.sync_ticks_skipped.inc();
    }

    pub fn event_dropped(&self) {
        self.0.events_dropped.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.0.registry).expect("writing to a String cannot fail");
        out
    }
}
