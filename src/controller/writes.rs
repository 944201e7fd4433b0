//! The metadata writes of the crash-safe create, shared by SyncSources and SyncRuns: the
//! finalizer and the create-pending mark in one resourceVersion-guarded patch, and the mark's
//! removal after a definite "no"; and the write that records what a create made.

use super::Error;
use super::reconcile::bounded;
use crate::crd::CREATE_PENDING_ANNOTATION;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

/// The field manager's patch parameters.
pub fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(super::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Sets (`keep`) or removes the `finalizer`, and sets the create-pending mark to `mark`, in one
/// write that fails with a conflict if the object changed since it was read. The answer is the
/// whole stored object, status included: the newest view to go on from.
pub async fn guarded_metadata_write<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    keep: bool,
    mark: Option<jiff::Timestamp>,
) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != finalizer)
        .cloned()
        .collect();
    if keep {
        finalizers.push(finalizer.to_owned());
    }
    let mut metadata = json!({
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers,
    });
    if let Some(at) = mark {
        metadata["annotations"] = json!({ CREATE_PENDING_ANNOTATION: at.to_string() });
    }
    let patch = Patch::Merge(json!({ "metadata": metadata }));
    bounded(api.patch(&obj.name_any(), &params(), &patch)).await
}

/// Removes the create-pending mark.
pub async fn clear_mark<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({ "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: null } } });
    bounded(api.patch(&obj.name_any(), &params(), &Patch::Merge(patch))).await
}

/// Conflicts a recording write meets before it goes back to the full decision.
const RECORD_RETRIES: u32 = 10;

/// Writes what a create made (its id, in status) with `write`. The write is guarded by
/// resourceVersion, so a client that keeps writing the object (labels, say) can fail it again
/// and again; each conflict reads the object afresh and writes again at once, as long as
/// `unrecorded` says the fresh copy still lacks the record. Anything else is the full
/// decision's to make: the conflict is the answer.
pub async fn record<K, T, W>(
    api: &Api<K>,
    obj: &K,
    unrecorded: impl Fn(&K) -> bool,
    mut write: impl FnMut(K) -> W,
) -> Result<T, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    W: Future<Output = Result<T, Error>>,
{
    let name = obj.name_any();
    let mut current = obj.clone();
    let mut attempt = 0;
    loop {
        match write(current).await {
            Err(e) if e.is_conflict() && attempt < RECORD_RETRIES => {
                attempt += 1;
                match bounded(api.get_opt(&name)).await {
                    Ok(Some(fresh)) if unrecorded(&fresh) => current = fresh,
                    _ => return Err(e),
                }
            }
            written => return written,
        }
    }
}

/// Is `fresh` still the object whose create `decided` made: the same object at the same
/// generation with the same create-pending mark, not being deleted?
pub fn same_create<K: Resource>(decided: &K, fresh: &K) -> bool {
    let mark = |o: &K| o.annotations().get(CREATE_PENDING_ANNOTATION).cloned();
    fresh.uid() == decided.uid()
        && fresh.meta().generation == decided.meta().generation
        && fresh.meta().deletion_timestamp.is_none()
        && mark(fresh).is_some()
        && mark(fresh) == mark(decided)
}
