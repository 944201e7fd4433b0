//! The metadata writes of the crash-safe create, shared by SyncSources and SyncRuns: the
//! finalizer and the create-pending mark in one resourceVersion-guarded patch, and the mark's
//! removal after a definite "no".

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
