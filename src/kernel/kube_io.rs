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
