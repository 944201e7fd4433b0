//! Notifications: events POSTed to `--events-addr` in Flux's event format (`eventv1.Event` of
//! fluxcd/pkg/apis/event), the one Flux's controllers post to notification-controller, so its
//! Alerts and Providers (or any receiver of that JSON) can forward them.
//!
//! Posted the way fluxcd/pkg/runtime/events' Recorder posts: `POST <address>` with
//! `Content-Type: application/json`, each attempt bounded (5 s), connection errors and 5xx
//! retried with doubling waits (1 s, 2 s, 4 s, 8 s: four retries, as its retryablehttp client),
//! a 429 taken as "a duplicate" (notification-controller answers so for an event it has had
//! within its rate-limit window) and not retried. Every post runs in its own task: a reconcile
//! never waits for the receiver, and at most [`IN_FLIGHT`] posts go at once (more are dropped
//! and counted as failed, as a full Event queue drops).
//!
//! What is sent is said by the callers (a failed SyncRun, once: see `run::reconcile`); an event
//! carries the object's reference, a reason, the message its Kubernetes Event has, and metadata
//! that names no secret (the SyncSource's name, the invocation id, the object's own
//! `event.toolkit.fluxcd.io/*` annotations as Flux's Recorder adds them).

use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::{debug, warn};

/// Posts going at once, at most.
pub const IN_FLIGHT: usize = 256;
/// The longest wait for one attempt (Flux's Recorder: 5 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after the first attempt (retryablehttp's default RetryMax).
const RETRIES: u32 = 4;
/// The first wait before a retry; each next one doubles.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest message kept (notification-controller refuses longer ones).
const MAX_MESSAGE_CHARS: usize = 39_000;
/// Annotations of the object that ride along as metadata (Flux's Recorder does the same).
const EVENT_ANNOTATION_PREFIX: &str = "event.toolkit.fluxcd.io/";

/// `eventv1.Event` of fluxcd/pkg/apis/event/v1beta1, field for field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    pub involved_object: ObjectReference,
    /// `info` or `error`.
    pub severity: String,
    pub timestamp: Time,
    pub message: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Error => "error",
        }
    }
}

/// What the receiver made of one post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// 429: the receiver had the same event already.
    Duplicate,
    Failed,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Duplicate => "duplicate",
            Self::Failed => "failed",
        }
    }
}

/// Posts events to the events address; does nothing without one.
#[derive(Clone, Default)]
pub struct Notifier(Option<Arc<Target>>);

struct Target {
    url: reqwest::Url,
    http: reqwest::Client,
    controller: String,
    instance: String,
    metrics: Metrics,
    in_flight: AtomicUsize,
    /// The wait before the first retry (shorter in tests).
    first_wait: Duration,
}

impl Notifier {
    /// A notifier posting to `address` (an http:// or https:// URL, checked here so that a typo
    /// stops the operator at start).
    pub fn new(
        address: &str,
        controller: &str,
        instance: &str,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        // The address is not repeated in errors: it may carry a token.
        let url = reqwest::Url::parse(address)
            .map_err(|e| anyhow::anyhow!("--events-addr is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https") && url.has_host(),
            "--events-addr: not an http:// or https:// URL"
        );
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("chroma-sync-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self(Some(Arc::new(Target {
            url,
            http,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            metrics,
            in_flight: AtomicUsize::new(0),
            first_wait: FIRST_WAIT,
        }))))
    }

    /// None: nothing is posted.
    pub fn disabled() -> Self {
        Self(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Posts an event about `obj` in the background; never waits.
    pub fn notify<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        severity: Severity,
        reason: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        let Some(target) = self.0.clone() else {
            return;
        };
        let event = flux_event(
            obj,
            severity,
            reason,
            message,
            metadata,
            (&target.controller, &target.instance),
            jiff::Timestamp::now(),
        );
        if target.in_flight.fetch_add(1, Ordering::SeqCst) >= IN_FLIGHT {
            target.in_flight.fetch_sub(1, Ordering::SeqCst);
            target.metrics.notification(Delivery::Failed.as_str());
            debug!(reason, "too many notifications in flight; dropped one");
            return;
        }
        tokio::spawn(async move {
            let delivery = target.post(&event).await;
            target.metrics.notification(delivery.as_str());
            target.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Waits, at most `within`, until every post has ended (at shutdown).
    pub async fn flush(&self, within: Duration) {
        let Some(target) = &self.0 else { return };
        let deadline = tokio::time::Instant::now() + within;
        while target.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[cfg(test)]
    fn with_first_wait(self, wait: Duration) -> Self {
        let target = self.0.map(|t| {
            let t = Arc::into_inner(t).expect("not shared yet");
            Arc::new(Target {
                first_wait: wait,
                ..t
            })
        });
        Self(target)
    }
}

impl Target {
    /// One event, with the retries; the outcome.
    async fn post(&self, event: &FluxEvent) -> Delivery {
        let mut wait = self.first_wait;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            let sent = self.http.post(self.url.clone()).json(event).send().await;
            match sent.map(|r| r.status()) {
                Ok(s) if s.is_success() => return Delivery::Sent,
                Ok(s) if s.as_u16() == 429 => return Delivery::Duplicate,
                Ok(s) if s.is_server_error() => {
                    debug!(status = %s, attempt, "events address answered; trying again");
                }
                Ok(s) => {
                    warn!(status = %s, "events address refused an event");
                    return Delivery::Failed;
                }
                // Without the URL: an address may carry a token (a generic webhook's path).
                Err(e) => {
                    let e = e.without_url();
                    debug!(error = %e, attempt, "events address not reached; trying again");
                }
            }
        }
        warn!(
            retries = RETRIES,
            reason = %event.reason,
            "could not post an event to the events address"
        );
        Delivery::Failed
    }
}

/// The event about `obj` (pure, but for what it is given).
pub fn flux_event<K: Resource<DynamicType = ()>>(
    obj: &K,
    severity: Severity,
    reason: &str,
    message: &str,
    mut metadata: BTreeMap<String, String>,
    (controller, instance): (&str, &str),
    now: jiff::Timestamp,
) -> FluxEvent {
    for (key, value) in obj.annotations() {
        if key.starts_with(EVENT_ANNOTATION_PREFIX) {
            metadata.insert(key.clone(), value.clone());
        }
    }
    // As client-go's reference.GetReference makes it, with the resourceVersion.
    let involved_object = ObjectReference {
        resource_version: obj.resource_version(),
        ..obj.object_ref(&())
    };
    FluxEvent {
        involved_object,
        severity: severity.as_str().to_owned(),
        timestamp: Time(now),
        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        reason: reason.to_owned(),
        metadata,
        reporting_controller: controller.to_owned(),
        reporting_instance: instance.to_owned(),
    }
}

/// A receiver of events on loopback, for the tests of the flows that notify.
#[cfg(test)]
pub mod testing {
    use super::*;
    use axum::http::StatusCode;
    use std::sync::Mutex;

    /// A receiver on loopback answering with `answers` in turn (then 202), recording bodies.
    pub async fn receiver(answers: Vec<u16>) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                let answers = answers.clone();
                async move {
                    seen.lock().unwrap().push(body.0);
                    let code = answers.lock().unwrap().next().unwrap_or(202);
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, got)
    }

    /// A notifier posting to `address`, retrying after 10 ms.
    pub fn notifier(address: &str, metrics: &Metrics) -> Notifier {
        crate::chroma::install_crypto_provider();
        Notifier::new(address, "chroma-sync-operator", "pod-0", metrics.clone())
            .unwrap()
            .with_first_wait(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{notifier, receiver};
    use super::*;
    use crate::crd::run::SyncRun;

    fn failed_run() -> SyncRun {
        let mut run: SyncRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "chromasync.dev/v1alpha1",
            "kind": "SyncRun",
            "metadata": {
                "name": "nightly-1", "namespace": "docs", "uid": "6f1c",
                "resourceVersion": "42",
                "annotations": {
                    "event.toolkit.fluxcd.io/team": "search",
                    "chromasync.dev/pause": "no",
                },
            },
            "spec": { "sourceRef": { "name": "handbook" } },
        }))
        .unwrap();
        run.status = None;
        run
    }

    #[test]
    fn the_body_is_fluxs_event_shape() {
        let now: jiff::Timestamp = "2026-12-04T20:30:00.123Z".parse().unwrap();
        let metadata = BTreeMap::from([("chromasync.dev/source".into(), "handbook".into())]);
        let event = flux_event(
            &failed_run(),
            Severity::Error,
            "RunFailed",
            "invocation j-1 failed: boom",
            metadata,
            ("chroma-sync-operator", "chroma-sync-operator-0"),
            now,
        );
        let body = serde_json::to_value(&event).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "involvedObject": {
                    "apiVersion": "chromasync.dev/v1alpha1",
                    "kind": "SyncRun",
                    "name": "nightly-1",
                    "namespace": "docs",
                    "uid": "6f1c",
                    "resourceVersion": "42",
                },
                "severity": "error",
                // metav1.Time: RFC 3339 in whole seconds.
                "timestamp": "2026-12-04T20:30:00Z",
                "message": "invocation j-1 failed: boom",
                "reason": "RunFailed",
                // Our group's keys reach an Alert (notification-controller keeps the keys
                // prefixed by the object's group or its own); other annotations do not ride.
                "metadata": {
                    "chromasync.dev/source": "handbook",
                    "event.toolkit.fluxcd.io/team": "search",
                },
                "reportingController": "chroma-sync-operator",
                "reportingInstance": "chroma-sync-operator-0",
            })
        );
        let long = flux_event(
            &failed_run(),
            Severity::Info,
            "R",
            &"é".repeat(50_000),
            BTreeMap::new(),
            ("c", ""),
            now,
        );
        assert_eq!(long.message.chars().count(), MAX_MESSAGE_CHARS);
        let body = serde_json::to_value(&long).unwrap();
        assert_eq!(body["severity"], "info");
        assert!(body.get("reportingInstance").is_none());
        let only_annotations = serde_json::json!({ "event.toolkit.fluxcd.io/team": "search" });
        assert_eq!(body["metadata"], only_annotations);
    }

    fn post_one(n: &Notifier) {
        n.notify(
            &failed_run(),
            Severity::Error,
            "RunFailed",
            "failed",
            BTreeMap::new(),
        );
    }

    fn scraped(metrics: &Metrics, result: &str) -> bool {
        let text = metrics.render();
        let line = format!("chroma_sync_operator_notifications_total{{result=\"{result}\"}} 1");
        text.lines().any(|l| l == line)
    }

    #[tokio::test]
    async fn a_server_error_is_retried_and_a_duplicate_is_not() {
        let metrics = Metrics::new();
        let (address, got) = receiver(vec![500, 503]).await;
        let n = notifier(&address, &metrics);
        post_one(&n);
        n.flush(Duration::from_secs(10)).await;
        let bodies = got.lock().unwrap().clone();
        assert_eq!(bodies.len(), 3, "two 5xx, then accepted");
        assert_eq!(bodies[2]["involvedObject"]["kind"], "SyncRun");
        assert!(scraped(&metrics, "sent"));

        let metrics = Metrics::new();
        let (address, got) = receiver(vec![429]).await;
        let n = notifier(&address, &metrics);
        post_one(&n);
        n.flush(Duration::from_secs(10)).await;
        assert_eq!(
            got.lock().unwrap().len(),
            1,
            "a 429 means the receiver has it"
        );
        assert!(scraped(&metrics, "duplicate"));
    }

    #[tokio::test]
    async fn retries_are_bounded_and_a_refusal_ends_them() {
        let metrics = Metrics::new();
        let (address, got) = receiver(vec![500; 10]).await;
        let n = notifier(&address, &metrics);
        post_one(&n);
        n.flush(Duration::from_secs(10)).await;
        assert_eq!(got.lock().unwrap().len(), 1 + RETRIES as usize);
        assert!(scraped(&metrics, "failed"));

        let metrics = Metrics::new();
        let (address, got) = receiver(vec![400]).await;
        let n = notifier(&address, &metrics);
        post_one(&n);
        n.flush(Duration::from_secs(10)).await;
        assert_eq!(got.lock().unwrap().len(), 1, "a 4xx is not tried again");
        assert!(scraped(&metrics, "failed"));
    }

    #[test]
    fn an_address_that_is_no_url_stops_the_start() {
        let metrics = Metrics::new();
        for bad in ["notification-controller", "ftp://x/", "http://"] {
            assert!(
                Notifier::new(bad, "c", "i", metrics.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(!Notifier::disabled().is_enabled());
    }
}
