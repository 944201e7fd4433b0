//! Objects the apiserver let go with the operator's finalizer still on: found in the watch
//! stream, before the cache forgets their last known state, and handed to
//! [`reconcile::orphaned`](super::reconcile::orphaned).

use super::Sources;
use super::reconcile::{self, Namesake};
use crate::crd::SyncSource;
use crate::kernel::crds::Deletion;
use crate::kernel::driver::Driver;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// Objects the apiserver let go with the operator's finalizer still on. A delete that read the
/// object before the finalizer was added can remove it after (kubernetes/kubernetes#77988): seen
/// here after a create whose status write had already succeeded, so no reconcile ever learns of
/// it and the source would be left in Chroma. Such an object shows as a watch Delete event whose
/// last state still has the finalizer, or, when the watch was down meanwhile, as an object the
/// relist no longer has. Either way its last known state says which source to delete. (A
/// normal deletion's last state has the finalizer removed by the operator itself, or at least a
/// deletionTimestamp; a staler one costs one DELETE answered 404.)
pub(super) struct Orphans {
    store: Store<SyncSource>,
    sources: Arc<Driver<Sources>>,
    /// Uids seen by a relist in progress.
    relisted: Option<HashSet<String>>,
}

impl Orphans {
    pub(super) fn new(store: Store<SyncSource>, sources: Arc<Driver<Sources>>) -> Self {
        Self {
            store,
            sources,
            relisted: None,
        }
    }

    pub(super) fn observe(&mut self, event: &watcher::Event<SyncSource>) {
        match event {
            watcher::Event::Delete(obj) => self.check(obj),
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(seen), Some(uid)) = (self.relisted.as_mut(), obj.uid()) {
                    seen.insert(uid);
                }
            }
            watcher::Event::InitDone => {
                let Some(seen) = self.relisted.take() else {
                    return;
                };
                for obj in self.store.state() {
                    if obj.uid().is_some_and(|uid| !seen.contains(&uid)) {
                        self.check(&obj);
                    }
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }

    fn check(&self, obj: &SyncSource) {
        let ours = obj.finalizers().iter().any(|f| f == crate::crd::FINALIZER);
        // A deletion the operator saw begin is its cleanup's to finish; the bypass never has a
        // deletionTimestamp (the object goes at once).
        let bypassed = ours && obj.metadata.deletion_timestamp.is_none();
        if bypassed && crate::kernel::intent::paused(&obj.metadata) {
            warn!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
                "a paused object vanished with the finalizer on; paused means no call, so its source is left in Chroma");
            return;
        }
        if bypassed && obj.spec.deletion_policy != crate::crd::DeletionPolicy::Retain {
            let namesake = self.namesake_of(obj);
            let (sources, obj) = (self.sources.clone(), obj.clone());
            let span = info_span!("orphan", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
            tokio::spawn(
                async move {
                    // An object let go with its CRD keeps its source, as a deletion does (the
                    // kernel's `crds`); unknown (the CRD unreadable) keeps it too: nothing will
                    // ask again, and a source left is safer than one lost.
                    match sources.flows.crds.deletion(&obj).await {
                        Ok(Deletion::Cleanup) => {
                            reconcile::orphaned(&sources.flows, &obj, namesake).await
                        }
                        Ok(Deletion::Keep) => info!(
                            source_id = obj.status.as_ref().and_then(|s| s.source_id.as_deref()),
                            "a vanished object's CRD is being deleted: its source, if any, stays in Chroma"
                        ),
                        Err(e) => warn!(error = %e, "a vanished object's source, if any, is left in Chroma"),
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Whether another live object declares the same source (database and natural key), so a
    /// lookup by that key could find its source rather than the vanished object's.
    fn namesake_of(&self, gone: &SyncSource) -> Namesake {
        let key = |o: &SyncSource| {
            let p = super::payload::build(&o.spec).ok()?;
            Some((super::payload::NaturalKey::of_payload(&p), p.database_name))
        };
        let Some(wanted) = key(gone) else {
            return Namesake::None;
        };
        let declared = self
            .store
            .state()
            .iter()
            .any(|o| o.uid() != gone.uid() && key(o).as_ref() == Some(&wanted));
        if declared {
            Namesake::Declared
        } else {
            Namesake::None
        }
    }
}
