//! Connections: where and as whom the operator calls Chroma Sync for an object.
//! `ChromaSyncConnection` serves the objects of its own namespace; `ClusterChromaSyncConnection`
//! serves the namespaces its `namespaceSelector` / `namespaces` admit (as External Secrets'
//! `SecretStore` and `ClusterSecretStore`, or Crossplane's `ProviderConfig`).
//!
//! `///` comments here become the CRDs' descriptions (`kubectl explain`): written for users.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The name of the namespaced connection an object without `connectionRef` uses, when its
/// namespace has one.
pub const DEFAULT_CONNECTION: &str = "default";

/// A Chroma Sync endpoint and account for the SyncSources and SyncRuns of this namespace: the
/// service URL, the token (from a Secret of this namespace) and the limits the operator keeps
/// to when it calls through this connection. An object uses it by `spec.connectionRef`; an object
/// without one uses the connection named `default` of its namespace, if there is one.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chromasync.dev",
    version = "v1alpha1",
    kind = "ChromaSyncConnection",
    plural = "chromasyncconnections",
    shortname = "csconn",
    namespaced,
    status = "ConnectionStatus",
    category = "chromasync",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.tokenSecretRef.namespace)",
        "message": "a ChromaSyncConnection reads the Secret of its own namespace: remove tokenSecretRef.namespace",
        "fieldPath": ".tokenSecretRef.namespace"
    },
    {
        "rule": "!has(self.caBundle) || !has(self.caBundle.namespace)",
        "message": "a ChromaSyncConnection reads the CA bundle of its own namespace: remove caBundle.namespace",
        "fieldPath": ".caBundle.namespace"
    }
]))]
pub struct ChromaSyncConnectionSpec {
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// A Chroma Sync endpoint and account for the SyncSources and SyncRuns of every namespace it
/// admits (`namespaceSelector`, `namespaces`; neither set admits every namespace). Kept by
/// cluster administrators; teams use it by `spec.connectionRef` with `kind:
/// ClusterChromaSyncConnection`. An object of a namespace it does not admit is refused
/// (`ConnectionNotPermitted`) without any call to the service.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chromasync.dev",
    version = "v1alpha1",
    kind = "ClusterChromaSyncConnection",
    plural = "clusterchromasyncconnections",
    shortname = "ccsconn",
    status = "ConnectionStatus",
    category = "chromasync",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.tokenSecretRef.namespace)",
        "message": "a ClusterChromaSyncConnection names the namespace of its token Secret: set tokenSecretRef.namespace",
        "fieldPath": ".tokenSecretRef.namespace"
    },
    {
        "rule": "!has(self.caBundle) || has(self.caBundle.namespace)",
        "message": "a ClusterChromaSyncConnection names the namespace of its CA bundle: set caBundle.namespace",
        "fieldPath": ".caBundle.namespace"
    }
]))]
pub struct ClusterChromaSyncConnectionSpec {
    #[serde(flatten)]
    pub endpoint: Endpoint,

    /// The namespaces whose objects may use this connection, by label. With `namespaces`, a
    /// namespace that either admits may use it; with neither, every namespace may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The namespaces whose objects may use this connection, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = 1000))]
    pub namespaces: Option<Vec<String>>,
}

/// What both kinds of connection declare.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The Chroma Sync service, e.g. `https://sync.trychroma.com`. Plain `http://` is refused
    /// unless the operator runs with `--allow-insecure-http` (a local stand-in).
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[hH][tT][tT][pP][sS]?://[^/?#]+')",
        "message": "url must be an absolute http(s) URL, e.g. https://sync.trychroma.com"
    }]))]
    pub url: String,

    /// The Chroma API (collections), e.g. `https://api.trychroma.com`, which
    /// `spec.sync.keepCollections` deletes old collections through with the same token. The
    /// operator's `--chroma-api-url` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[hH][tT][tT][pP][sS]?://[^/?#]+')",
        "message": "apiUrl must be an absolute http(s) URL, e.g. https://api.trychroma.com"
    }]))]
    pub api_url: Option<String>,

    /// The Secret key that holds the Chroma API token. The token is never written to status,
    /// Events or logs; a new value is used from the next call, with no restart.
    pub token_secret_ref: ConnectionSecretRef,

    /// Extra CA certificates (PEM) to trust for `url`, from a Secret or ConfigMap key: a private
    /// endpoint or a TLS-intercepting proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,

    /// How long one call may take, e.g. `30s`, `2m` or `1m30s`. The operator's `--chroma-timeout` when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// What the operator keeps to when it calls through this connection: every object using it
    /// shares these limits. The operator's flags when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// A key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret's data.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The Secret's namespace: required for a ClusterChromaSyncConnection, not allowed for a
    /// ChromaSyncConnection (which reads its own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

fn default_token_key() -> String {
    "token".into()
}

/// A key of a Secret or a ConfigMap that holds PEM certificates.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secretName) != has(self.configMapName)",
    "message": "set exactly one of secretName or configMapName"
}]))]
pub struct CaBundleRef {
    /// A Secret that holds the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// A ConfigMap that holds the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: Option<String>,
    /// The key that holds the PEM certificates.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The namespace: required for a ClusterChromaSyncConnection, not allowed for a
    /// ChromaSyncConnection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// Limits on the calls made through one connection. Calls that would pass them wait; a 429 from
/// the service pauses every caller of the connection for its `Retry-After` and lowers the rate
/// until calls succeed again.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Calls per second at most (your account's limit). The operator's
    /// `--chroma-calls-per-second` when unset (by default unlimited until the service answers
    /// 429, then learnt from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub calls_per_second: Option<i32>,
    /// Calls that may go at once above the rate after a quiet spell. The operator's
    /// `--chroma-burst` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<i32>,
    /// Calls waiting for an answer at once, at most. The operator's `--chroma-calls-in-flight`
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub calls_in_flight: Option<i32>,
}

/// Which connection an object uses.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// `ChromaSyncConnection` (of the object's namespace; the default) or
    /// `ClusterChromaSyncConnection`.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// The connection's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of connection.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConnectionKind {
    #[default]
    ChromaSyncConnection,
    ClusterChromaSyncConnection,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChromaSyncConnection => "ChromaSyncConnection",
            Self::ClusterChromaSyncConnection => "ClusterChromaSyncConnection",
        }
    }
}

/// What the operator found when it checked the connection.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The `metadata.generation` this status describes; -1 until the operator has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is true once an authenticated call through this connection succeeded (it is
    /// checked again on an interval, and at once when its Secret changes); `Reconciling` is
    /// true while it is being checked or a retryable error is in progress; `Stalled` is true
    /// when a person must change something (the token is refused, the URL is not allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The ChromaSyncConnection CustomResourceDefinition, as committed under `crds/`.
pub fn crd() -> CustomResourceDefinition {
    super::tidy(
        ChromaSyncConnection::crd(),
        "A Chroma Sync endpoint and account for the objects of one namespace, used by chroma-sync-operator.",
        json!({ "observedGeneration": -1 }),
    )
}

/// The ClusterChromaSyncConnection CustomResourceDefinition, as committed under `crds/`.
pub fn cluster_crd() -> CustomResourceDefinition {
    super::tidy(
        ClusterChromaSyncConnection::crd(),
        "A Chroma Sync endpoint and account for the objects of the namespaces it admits, used by chroma-sync-operator.",
        json!({ "observedGeneration": -1 }),
    )
}
