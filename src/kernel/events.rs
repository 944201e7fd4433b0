//! Events, written off the reconcile path: a reconcile queues its Event and goes on; one task
//! writes them (`events.k8s.io/v1`, create only).
//!
//! Events mark what a person may want to hear beyond status: a source replaced by a spec change,
//! adopted after a lost answer, retained at deletion, and every failure. The normal life of a
//! source is not: a create is recorded in status (`sourceId`, the Ready condition), and an Event
//! for it would be a third API write per object where the floor is two (finalizer, status); a
//! delete removes the object such an Event would be about. Both are logged at info.
//!
//! Nothing is cached (kube-runtime's `Recorder` keeps every Event it sent for six minutes to
//! count series, and rescans them on each publish): Events come on transitions only, so there
//! is no series to count, and memory stays flat whatever the number of objects. When the queue
//! is full (Events coming faster than the apiserver takes them) new ones are dropped and
//! counted, as client-go's broadcaster does.

use super::Reason;
use crate::metrics::Metrics;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Events waiting to be written, at most.
const QUEUE: usize = 1024;
/// The longest wait for one Event write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest note kept (the apiserver refuses notes over 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

pub struct Events {
    queue: mpsc::Sender<Event>,
    /// Queued or being written.
    pending: Arc<AtomicUsize>,
    controller: String,
    instance: String,
    metrics: Metrics,
}

impl Events {
    /// Starts the writer task (so: inside a Tokio runtime).
    pub fn start(client: Client, controller: &str, instance: &str, metrics: Metrics) -> Self {
        let (queue, mut incoming) = mpsc::channel::<Event>(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = pending.clone();
        tokio::spawn(async move {
            while let Some(event) = incoming.recv().await {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let params = PostParams::default();
                match tokio::time::timeout(WRITE_TIMEOUT, api.create(&params, &event)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "could not write an Event"),
                    Err(_) => warn!("could not write an Event: no answer in time"),
                }
                written.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Self {
            queue,
            pending,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            metrics,
        }
    }

    /// Queues an Event about `obj`; never waits.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: Kind,
        reason: impl Reason,
        note: String,
    ) {
        let reason = reason.as_str();
        let event = self.event(obj, kind, reason, note, jiff::Timestamp::now());
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.queue.try_send(event).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.metrics.event_dropped();
            debug!(reason, "Event queue full; dropped an Event");
        }
    }

    /// Waits, at most `within`, until every queued Event is written (at shutdown).
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: Kind,
        reason: &str,
        note: String,
        now: jiff::Timestamp,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&obj.name_any(), now)),
                // A cluster-scoped object's Events go to `default`, as client-go puts them.
                namespace: obj.namespace().or_else(|| Some("default".into())),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(format!("{kind:?}")),
            reason: Some(reason.to_owned()),
            action: Some("Reconcile".to_owned()),
            note: Some(truncate(note)),
            regarding: Some(obj.object_ref(&())),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// `<object>.<nanoseconds in hex>`, as client-go names Events, within the 253 characters a
/// name may have.
fn event_name(object: &str, now: jiff::Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let keep = object.len().min(253 - suffix.len());
    format!("{}{suffix}", &object[..keep])
}

fn truncate(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let t = jiff::Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        assert_eq!(event_name("site", t), "site.17979cfe3d85cd15");
        let long = event_name(&"a".repeat(253), t);
        assert_eq!(long.len(), 253);
        assert!(long.ends_with(".17979cfe3d85cd15"));
        let later = t + jiff::SignedDuration::from_nanos(1);
        assert_ne!(event_name("site", t), event_name("site", later));
    }

    #[test]
    fn notes_fit_the_apiserver_limit() {
        let long = "é".repeat(2000);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_NOTE_BYTES && cut.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }
}
