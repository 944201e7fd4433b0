//! The Kubernetes objects the tests and the benchmark make: namespaces, the token Secret, and
//! SyncSources of GitHub repositories.

use crate::standin::DATABASE;
use chroma_sync_operator::crd::SyncSource;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde_json::{Value, json};

/// The Secret that holds the stand-in's admin token, in each namespace that has SyncSources.
pub const TOKEN_SECRET: &str = "chroma-token";

pub fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("a Namespace")
}

/// Secret `name` (usually [`TOKEN_SECRET`]) with `token` under the default key, `token`.
pub fn token_secret(name: &str, token: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"token": token}
    }))
    .expect("a Secret")
}

/// The spec of a source for GitHub repository `repo`, in [`DATABASE`], with [`TOKEN_SECRET`].
pub fn github(repo: &str) -> Value {
    json!({
        "databaseName": DATABASE,
        "github": {"repository": repo},
        "tokenSecretRef": {"name": TOKEN_SECRET},
    })
}

/// SyncSource `name` with `spec`.
pub fn sync_source(name: &str, spec: Value) -> SyncSource {
    serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncSource",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a SyncSource")
}
