//! The `SyncRun` custom resource: one Chroma Sync invocation (a sync run) of a SyncSource's
//! source, in the manner of a Kubernetes Job. Its spec is the create-invocation payload in
//! camelCase and cannot change once created; its status tells the run's whole story.
//!
//! `///` comments here become the CRD's descriptions (`kubectl explain`): written for users.

use super::LastError;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Finalizer that keeps a SyncRun until its pending invocation is cancelled (or found running).
pub const RUN_FINALIZER: &str = "chromasync.dev/run";

/// Runs one Chroma Sync invocation of the source of a SyncSource in this namespace, as a Job
/// runs a Pod: once. The operator creates the invocation, follows it to its end, and records
/// each phase in `status`. The spec cannot change after creation; create another SyncRun to
/// sync again. Deleting a SyncRun whose invocation is still pending cancels it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chromasync.dev",
    version = "v1alpha1",
    kind = "SyncRun",
    plural = "syncruns",
    shortname = "syncrun",
    namespaced,
    status = "SyncRunStatus",
    category = "chromasync",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Invocation","type":"string","priority":1,"jsonPath":".status.invocationId"}"#,
    printcolumn = r#"{"name":"Duration (ms)","type":"integer","priority":1,"jsonPath":".status.durationMs"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self == oldSelf",
        "message": "a SyncRun's spec cannot be changed; create another SyncRun to sync again"
    },
    {
        "rule": "!has(self.objectKey) || !has(self.ref)",
        "message": "objectKey (S3 sources) and ref (GitHub sources) cannot both be set",
        "fieldPath": ".objectKey"
    }
]))]
pub struct SyncRunSpec {
    /// The SyncSource, in this namespace, whose source this run syncs. The run waits until that
    /// SyncSource is Ready, and uses its credentials.
    pub source_ref: SourceRef,

    /// The Chroma collection the run writes to. Required for GitHub and web sources; for S3
    /// sources the source's `collectionName` is used when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub target_collection_name: Option<String>,

    /// The Git ref to sync (GitHub sources; required there): a `branch` (its newest commit) or
    /// a `sha`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,

    /// The full key of the S3 object to sync, including the source's `pathPrefix` (S3 sources;
    /// required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub object_key: Option<String>,

    /// Chunk ids become `<customId>-<n>` instead of being derived from the object key, and
    /// chunks carry it as `custom_id` metadata (S3 sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120))]
    pub custom_id: Option<String>,

    /// Metadata merged into every chunk's metadata (S3 sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A SyncSource in the SyncRun's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// The SyncSource's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Git ref: exactly one of `branch` or `sha`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.branch) != has(self.sha)",
    "message": "exactly one of branch or sha must be set"
}]))]
pub struct GitRef {
    /// A branch; the run syncs its newest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// A commit sha.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub sha: Option<String>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Where a run stands. `Complete`, `Failed` and `Cancelled` are final.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    /// Created in Chroma Sync, waiting to start.
    Pending,
    /// Syncing.
    Processing,
    /// Finished; `completionTime` and `durationMs` say when and how long.
    Complete,
    /// Ended with an error (`message`), or refused by the service.
    Failed,
    /// Cancelled before it started.
    Cancelled,
}

impl RunPhase {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Processing => "Processing",
            Self::Complete => "Complete",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// What the operator observed of the run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRunStatus {
    /// The `metadata.generation` this status describes; -1 until the operator has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ID of the Chroma Sync invocation this object ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// ID of the Chroma Sync source the invocation ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The run's phase, as Chroma Sync last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// When the invocation was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How long the service took, in milliseconds (complete runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The service's failure message (failed runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Ready` is true once the run is complete; `Reconciling` is true while it is pending,
    /// processing, or waiting; `Stalled` is true when it failed or was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The last error the Chroma Sync service (or the operator) reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// The value of the `chromasync.dev/reconcile-requested-at` annotation the operator last
    /// acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The SyncRun CustomResourceDefinition, as committed under `crds/` (tidied as
/// [`super::crd`] is).
pub fn crd() -> CustomResourceDefinition {
    super::tidy(
        SyncRun::crd(),
        "One Chroma Sync run (invocation) of a SyncSource's source, managed by chroma-sync-operator.",
        json!({ "observedGeneration": -1 }),
    )
}
