//! Kubernetes IO every flow shares: each call bounded in time, every write under the operator's
//! field manager, an object's own API, and a fresh read past the cache.

use super::{Error, FIELD_MANAGER};
use kube::api::{Api, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// The longest wait for one Kubernetes call. kube's client has no read timeout by default, so
/// a request sent on a connection that died without a reset would hold its reconcile, and so
/// the object, forever (seen in `cut_apiserver_connections_lose_nothing_and_duplicate_nothing`).
/// Giving up is safe at any point: it is a lost answer, which the guarded mark already covers.
const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, given up as [`Error::KubeTimeout`] when it takes too long.
pub async fn bounded<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, Error> {
    match tokio::time::timeout(KUBE_CALL_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(Error::KubeTimeout(KUBE_CALL_TIMEOUT)),
    }
}

/// The field manager's patch parameters.
pub fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// The API of `obj`'s namespace.
pub fn api_of<K>(client: &Client, obj: &K) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
}

/// The object as stored now (not as cached), or None if it is gone or cannot be read.
pub async fn fresh<K>(client: &Client, obj: &K) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    bounded(api_of(client, obj).get_opt(&obj.name_any()))
        .await
        .ok()
        .flatten()
}

/// The JSON merge patch (RFC 7386) that makes a stored `before` equal `after`: every field of
/// `after`, and `null` for each field `before` has and `after` lacks, inside nested objects too
/// (a merge patch merges objects key by key, so a field merely left out would be kept: a new
/// `lastError` without `httpStatus` would keep the old one's). Every kind's status is written
/// with it, guarded by the resourceVersion `before` was read at.
pub fn merge_patch(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in after {
                let merged = match before.get(key) {
                    Some(old) => merge_patch(old, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), merged);
            }
            for key in before.keys().filter(|k| !after.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

/// The status patch that takes `before` to `after`, guarded by `resource_version`; `None` when
/// they are equal: an unchanged outcome costs no write (and so no watch event).
pub fn status_patch<S: serde::Serialize + PartialEq>(
    before: &S,
    after: &S,
    resource_version: Option<String>,
) -> Option<serde_json::Value> {
    if before == after {
        return None;
    }
    let json = |s: &S| serde_json::to_value(s).expect("a status serializes");
    Some(serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "status": merge_patch(&json(before), &json(after)),
    }))
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    /// RFC 7386 as the apiserver applies it.
    fn apply(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(target), Some(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        apply(target.entry(key.clone()).or_insert(json!({})), value);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn the_patch_turns_before_into_after_nested_fields_included() {
        let before = json!({"sourceId": "a", "lastError": {"httpStatus": 409, "message": "x"},
            "conditions": [{"type": "Ready"}], "kept": 1});
        let after = json!({"lastError": {"message": "slow"}, "conditions": [], "kept": 1});
        let patch = merge_patch(&before, &after);
        assert_eq!(patch["sourceId"], serde_json::Value::Null);
        assert_eq!(
            patch["lastError"],
            json!({"httpStatus": null, "message": "slow"})
        );
        let mut stored = before.clone();
        apply(&mut stored, &patch);
        assert_eq!(stored, after);
    }
}
