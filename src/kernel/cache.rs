//! What the watch keeps of each object, and which of its events reach a reconcile. At ten
//! thousand objects these two decide most of the operator's memory (see tests/bench/HISTORY.md).

use crate::crd::{CREATE_PENDING_ANNOTATION, SyncSource};
use kube::Resource;
use kube::runtime::watcher;
use std::collections::HashMap;

/// Drops what the operator never reads before it enters the cache: managedFields, labels and
/// every annotation but its own and Flux's reconcile request (the last-applied copy of the object, GitOps tools' tracking
/// data) are most of an object's bytes. Nothing is written back from the cached copy but the
/// fields the operator owns, so nothing dropped here is lost.
pub fn slim<K: Resource>(obj: &mut K) {
    slim_keeping(obj, |_| true);
}

/// [`slim`], and the create-pending mark once status records a source: the mark is read only
/// while no source is recorded (a recorded id supersedes it), and it stays on every Ready object
/// because removing it would cost a third write; its map node and strings are a fair share of a
/// cached object (tests/bench/HISTORY.md has the estimate).
pub fn slim_source(obj: &mut SyncSource) {
    let recorded = obj.status.as_ref().is_some_and(|s| s.source_id.is_some());
    slim_keeping(obj, |key| !(recorded && key == CREATE_PENDING_ANNOTATION));
}

/// [`slim`], keeping of the operator's own annotations those `keep` accepts.
fn slim_keeping<K: Resource>(obj: &mut K, keep: impl Fn(&str) -> bool) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|key, _| {
            (key.starts_with(crate::crd::GROUP) || key == crate::crd::FLUX_REQUEST_ANNOTATION)
                && keep(key)
        });
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Passes on an object when it is new to the operator, its generation or deletion state changed,
/// or it was paused, resumed or asked to reconcile now; the operator's own metadata and status
/// writes do not pass (they would cost a
/// reconcile each). kube's `predicate_filter` does the same with a map keyed by three strings
/// per object that forgets nothing for an hour (and then passes an unchanged object again); this
/// one keys by the uid's 128 bits and forgets an object when it is deleted or missing from a
/// relist.
#[derive(Default)]
pub struct Changes {
    seen: HashMap<Uid, Observed>,
    /// The state being rebuilt by a relist in progress (a watcher sends no Apply or Delete
    /// between Init and InitDone).
    relist: Option<HashMap<Uid, Observed>>,
}

/// A uid is a UUID; any other string is hashed (a collision could only hide an event).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Uid(u128);

impl Uid {
    fn of(obj: &SyncSource) -> Self {
        let uid = obj.metadata.uid.as_deref().unwrap_or_default();
        Self(match uuid::Uuid::parse_str(uid) {
            Ok(uuid) => uuid.as_u128(),
            Err(_) => {
                use std::hash::{DefaultHasher, Hash, Hasher};
                let mut h = DefaultHasher::new();
                uid.hash(&mut h);
                u128::from(h.finish())
            }
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Observed {
    generation: Option<i64>,
    deleting: bool,
    /// The pause and reconcile-now annotations (see `intent`).
    asked: u64,
}

impl Observed {
    fn of(obj: &SyncSource) -> Self {
        Self {
            generation: obj.metadata.generation,
            deleting: obj.metadata.deletion_timestamp.is_some(),
            asked: super::intent::fingerprint(&obj.metadata),
        }
    }
}

impl Changes {
    /// The object a watch event brings to reconcile, if any.
    pub fn news(&mut self, event: watcher::Event<SyncSource>) -> Option<SyncSource> {
        match event {
            watcher::Event::Apply(obj) => {
                let now = Observed::of(&obj);
                let before = self.seen.insert(Uid::of(&obj), now);
                (before != Some(now)).then_some(obj)
            }
            watcher::Event::InitApply(obj) => {
                let (uid, now) = (Uid::of(&obj), Observed::of(&obj));
                self.relist.get_or_insert_default().insert(uid, now);
                (self.seen.get(&uid) != Some(&now)).then_some(obj)
            }
            watcher::Event::Delete(obj) => {
                self.seen.remove(&Uid::of(&obj));
                None
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.seen = relist;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use watcher::Event;

    fn obj(uid: &str, generation: i64, rv: &str) -> SyncSource {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
            "metadata": {"name": "s", "namespace": "n", "uid": uid, "generation": generation,
                         "resourceVersion": rv},
            "spec": {"databaseName": "docs", "github": {"repository": "a/b"}}
        }))
        .unwrap()
    }

    const A: &str = "6f1c2a9e-0d4b-4c1e-9a51-3d2f8e7b6a10";
    const B: &str = "0b7d4e2c-5a61-4f8e-8c3d-9e1a2b3c4d5e";

    #[test]
    fn only_new_objects_and_new_generations_pass() {
        let mut changes = Changes::default();
        let mut passes = |e| changes.news(e).is_some();
        assert!(passes(Event::Apply(obj(A, 1, "1"))), "new object");
        assert!(!passes(Event::Apply(obj(A, 1, "2"))), "own metadata write");
        assert!(!passes(Event::Apply(obj(A, 1, "3"))), "own status write");
        assert!(passes(Event::Apply(obj(A, 2, "4"))), "spec change");
        let mut deleting = obj(A, 2, "5");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(passes(Event::Apply(deleting)), "deletion begins");
        assert!(passes(Event::Apply(obj(B, 2, "6"))), "another object");
    }

    #[test]
    fn pause_resume_and_reconcile_now_pass_other_annotations_do_not() {
        let mut changes = Changes::default();
        let annotated = |rv: &str, pairs: &[(&str, &str)]| {
            let mut o = obj(A, 1, rv);
            o.metadata.annotations = Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            Event::Apply(o)
        };
        let mut passes = |e| changes.news(e).is_some();
        assert!(passes(annotated("1", &[])));
        assert!(!passes(annotated("2", &[("team", "docs")])), "unrelated");
        assert!(passes(annotated(
            "3",
            &[(crate::crd::PAUSED_ANNOTATION, "true")]
        )));
        assert!(passes(annotated("4", &[])), "resumed");
        let asked = |token| [(crate::crd::RECONCILE_REQUEST_ANNOTATION, token)];
        assert!(passes(annotated("5", &asked("a"))));
        assert!(!passes(annotated("6", &asked("a"))), "same token again");
        assert!(passes(annotated("7", &asked("b"))));
    }

    #[test]
    fn a_relist_passes_what_changed_meanwhile_and_forgets_what_is_gone() {
        let mut changes = Changes::default();
        for e in [Event::Init, Event::InitApply(obj(A, 1, "1"))] {
            changes.news(e);
        }
        changes.news(Event::InitApply(obj(B, 1, "1")));
        changes.news(Event::InitDone);
        assert_eq!(changes.seen.len(), 2);

        // The watch reconnects: A unchanged, B gone, A's generation moved on.
        changes.news(Event::Init);
        assert!(changes.news(Event::InitApply(obj(A, 1, "9"))).is_none());
        changes.news(Event::InitDone);
        assert_eq!(changes.seen.len(), 1, "B is forgotten");
        assert!(
            changes.news(Event::Apply(obj(B, 1, "10"))).is_some(),
            "B is new again"
        );
        changes.news(Event::Delete(obj(B, 1, "11")));
        assert!(changes.news(Event::Apply(obj(B, 1, "12"))).is_some());
        changes.news(Event::Init);
        assert!(changes.news(Event::InitApply(obj(A, 2, "13"))).is_some());
    }

    #[test]
    fn the_cache_keeps_only_what_the_operator_reads() {
        let mut obj: SyncSource = serde_json::from_value(serde_json::json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
            "metadata": {
                "name": "s", "namespace": "n", "finalizers": [crate::crd::FINALIZER],
                "labels": {"app": "docs"},
                "annotations": {
                    CREATE_PENDING_ANNOTATION: "2026-11-28T00:00:00Z",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "argocd.argoproj.io/tracking-id": "docs:chromasync.dev/SyncSource:n/s",
                    crate::crd::FLUX_REQUEST_ANNOTATION: "push-1"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"databaseName": "docs", "github": {"repository": "a/b"}}
        }))
        .unwrap();
        slim_source(&mut obj);
        assert_eq!(obj.metadata.managed_fields, None);
        assert_eq!(obj.metadata.labels, None);
        let annotations: Vec<_> = obj.annotations().keys().cloned().collect();
        assert_eq!(
            annotations,
            [
                CREATE_PENDING_ANNOTATION,
                crate::crd::FLUX_REQUEST_ANNOTATION
            ],
            "no source yet: the mark stays; Flux's reconcile request starts a sync run"
        );
        assert_eq!(obj.finalizers(), [crate::crd::FINALIZER]);

        obj.status = Some(crate::crd::SyncSourceStatus {
            source_id: Some("src-1".into()),
            ..Default::default()
        });
        slim_source(&mut obj);
        let annotations: Vec<_> = obj.annotations().keys().cloned().collect();
        assert_eq!(
            annotations,
            [crate::crd::FLUX_REQUEST_ANNOTATION],
            "a recorded source supersedes the mark"
        );
    }
}
