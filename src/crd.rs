//! The `SyncSource` custom resource: the create-source payload of the Chroma Sync API in
//! Kubernetes camelCase, plus the fields the operator itself needs.
//!
//! `///` comments here become the CRD's descriptions, which `kubectl explain` shows: they are
//! written for users. Admission rules (`x-kubernetes-validations`, enums, ranges, set lists)
//! mirror what the service would reject, so bad input fails at `kubectl apply`, not later.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub mod connection;
pub mod run;

pub use connection::{
    ChromaSyncConnection, ClusterChromaSyncConnection, ConnectionKind, ConnectionRef,
};
pub use run::{SyncRun, SyncRunSpec, SyncRunStatus};

/// API group of the operator's resources.
pub const GROUP: &str = "chromasync.dev";
/// Finalizer that keeps a SyncSource until its Chroma source is deleted (or retained).
pub const FINALIZER: &str = "chromasync.dev/source";
/// Annotation written, in the same guarded write as the finalizer, before every create call.
/// Its value is the time of the attempt. While it is present and `status.sourceId` is empty, a
/// source may exist that the status does not record yet; see the README's crash-safety design.
pub const CREATE_PENDING_ANNOTATION: &str = "chromasync.dev/create-pending";
/// Annotation that pauses an object: while its value is `"true"` the operator makes no call to
/// the service and no write for it, except the one status write that says it is paused.
pub const PAUSED_ANNOTATION: &str = "chromasync.dev/paused";
/// Annotation that asks for a reconcile now (any new value, as Flux's
/// `reconcile.fluxcd.io/requestedAt`): the operator looks at the object's source or run at once
/// and echoes the value in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "chromasync.dev/reconcile-requested-at";
/// Flux's reconcile-now annotation, which a Flux webhook `Receiver` sets on the objects it names
/// (on a push, say). On a SyncSource with `spec.sync`, a new value of it or of
/// [`RECONCILE_REQUEST_ANNOTATION`] starts one run.
pub const FLUX_REQUEST_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// Declares one Chroma Sync source. The operator creates it with the Chroma Sync API, records
/// its id in `status.sourceId`, and deletes it when this object is deleted. Exactly one of
/// `github`, `webScrape` or `s3` must be set. Chroma Sync has no update call: changing a field
/// that is sent to the service replaces the source (the old one is deleted, a new one created).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chromasync.dev",
    version = "v1alpha1",
    kind = "SyncSource",
    plural = "syncsources",
    shortname = "syncsrc",
    namespaced,
    status = "SyncSourceStatus",
    category = "chromasync",
    printcolumn = r#"{"name":"Source ID","type":"string","jsonPath":".status.sourceId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Database","type":"string","priority":1,"jsonPath":".spec.databaseName"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"string","priority":1,"jsonPath":".status.lastSync.name"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.github), has(self.webScrape), has(self.s3)].filter(x, x).size() == 1",
        "message": "exactly one of github, webScrape or s3 must be set"
    },
    {
        "rule": "!has(oldSelf.sourceId) || !has(self.sourceId) || self.sourceId == oldSelf.sourceId",
        "message": "sourceId cannot be changed once set (it may be removed)",
        "fieldPath": ".sourceId"
    },
    {
        "rule": "!has(self.sync) || !has(self.s3)",
        "message": "sync is for GitHub and web sources; sync S3 objects with SyncRuns (objectKey)",
        "fieldPath": ".sync"
    },
    {
        "rule": "!has(self.sync) || !has(self.github) || has(self.sync.ref)",
        "message": "sync.ref (a branch or sha) is required for a GitHub source",
        "fieldPath": ".sync.ref"
    },
    {
        "rule": "!has(self.sync) || !has(self.webScrape) || !has(self.sync.ref)",
        "message": "sync.ref is for GitHub sources only",
        "fieldPath": ".sync.ref"
    }
]))]
// The source kinds and option groups are boxed: a cached object holds one of the three kinds,
// and inline every cached SyncSource would carry the room of all of them (tests/bench/HISTORY.md).
pub struct SyncSourceSpec {
    /// Name of the Chroma database the source writes to. The database must already exist.
    #[schemars(length(min = 1, max = 512))]
    pub database_name: String,

    /// Sync a GitHub repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<Box<GithubSource>>,

    /// Sync a web site by crawling it from a starting URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_scrape: Option<Box<WebScrapeSource>>,

    /// Sync objects of an S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<Box<S3Source>>,

    /// How documents are split into chunks. The service's default applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<Box<Chunking>>,

    /// Dense and sparse embedding settings for the chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Box<Embedding>>,

    /// The dense embedding model (the older, top-level form of `embedding.dense`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<Box<DenseEmbeddingModel>>,

    /// The Secret, in this object's namespace, that holds the Chroma API token. When unset, the
    /// connection's token is used (or the operator's default token). The token is never written
    /// to status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,

    /// The connection (Chroma Sync endpoint, account and limits) to call the service through.
    /// When unset: the ChromaSyncConnection named `default` in this namespace if there is one,
    /// else the operator's own settings. A source is only ever deleted or looked at through the
    /// connection it was created through (`status.connection`): pointing an object with a
    /// source at another connection is refused (`ConnectionChanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,

    /// What happens to the Chroma source when this object is deleted: `Delete` (the default)
    /// deletes it, `Retain` leaves it in Chroma.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Manage this existing Chroma source instead of creating one (adoption). The operator reads
    /// it, checks that it matches this spec (kind, database and every field the spec sets) and
    /// records it; a source that differs is reported (`SourceMismatch`) and left unchanged. It
    /// is never replaced while this is set. Cannot be changed once set. `deletionPolicy` applies
    /// to an adopted source as to any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub source_id: Option<String>,

    /// What to do when the service answers that the source already exists (409): `Fail` (the
    /// default) reports `SourceExists`; `Adopt` finds that source and manages it, if it matches
    /// this spec (otherwise `SourceMismatch`, naming the fields that differ).
    #[serde(default, skip_serializing_if = "ConflictPolicy::is_default")]
    pub on_conflict: ConflictPolicy,

    /// What to do when the recorded source no longer exists in Chroma (deleted outside the
    /// operator): `Recreate` (the default) creates it again, with a Warning Event naming the old
    /// and new ids; `Report` leaves it and reports `Ready=False`, reason `SourceMissing`.
    #[serde(default, skip_serializing_if = "MissingPolicy::is_default")]
    pub on_source_missing: MissingPolicy,

    /// Keep the source's collection in sync: the operator starts a SyncRun (owned by this
    /// object) when the source is first created or replaced, when this field changes (say a
    /// new `ref.sha`), and at each tick of `schedule`; never two at once. GitHub and web
    /// sources only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Box<SyncPolicy>>,
}

/// How a SyncSource keeps its collection in sync.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// The name the runs' collections start with. Chroma Sync refuses a second finished sync
    /// into one collection, so each run writes its own, `<targetCollectionName>-<suffix>`
    /// (GitHub: forked copy-on-write from the previous one, only the diff processed);
    /// `status.lastSync.collectionName` names the newest.
    #[schemars(length(min = 1, max = 480))]
    pub target_collection_name: String,
    /// The Git ref to sync (GitHub sources; required there).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<run::GitRef>,
    /// When to sync again: a standard five-field cron expression, in UTC (`0 * * * *` is
    /// hourly). A tick that finds a run still going is skipped; ticks missed while the operator
    /// was down start one run, not one each. Unset: only the first run and changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128), regex(pattern = r"^\S+(\s+\S+){4}$"))]
    pub schedule: Option<String>,
    /// Finished runs that completed to keep (the newest); older ones are deleted. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: Option<i32>,
    /// Failed (or cancelled) runs to keep. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: Option<i32>,
    /// Where to publish the newest completed run, so applications can mount it instead of
    /// reading this object: a ConfigMap in this namespace, owned by this object (deleted with
    /// it), with the keys `collection`, `database`, `invocationId` and `finishedAt`. Written
    /// when a run completes (never for a failed one, never back to an older one). An existing
    /// ConfigMap this object does not own is left alone (`PublishConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_to: Option<PublishTo>,
    /// How many of the collections its runs made to keep in Chroma: after a run ends, the
    /// collections of this object's own runs beyond the newest `keepCollections` completed ones
    /// are deleted through Chroma's API (the connection's token and `apiUrl`), failed runs'
    /// ones included. Never the newest completed or the published one, never a collection
    /// another object made, never while a run is going, never with `deletionPolicy: Retain`.
    /// Unset: every collection is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_collections: Option<i32>,
}

/// The ConfigMap `spec.sync` publishes the newest completed run to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishTo {
    /// The ConfigMap's name (a DNS subdomain), in this object's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "message": "sync.publishTo.configMapName must be a DNS subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    }]))]
    pub config_map_name: String,
}

/// A GitHub repository to sync.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubSource {
    /// The repository, as `owner/name`.
    #[schemars(length(min = 1, max = 256))]
    pub repository: String,
    /// ID of the GitHub App installation that grants access to a private repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub app_id: Option<String>,
    /// Only files matching one of these globs are synced. Items must be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = 256))]
    pub include_globs: Option<Vec<String>>,
}

/// A web site to crawl.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebScrapeSource {
    /// The http(s) URL the crawl starts from.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))",
        "message": "must be an absolute http:// or https:// URL"
    }]))]
    pub starting_url: String,
    /// How many links deep the crawl follows from the starting URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_depth: Option<i32>,
    /// The most pages the crawl fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub page_limit: Option<i32>,
    /// Only paths matching one of these regular expressions (RE2 syntax) are synced. Items must
    /// be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // CEL compiles each pattern: on a valid one either side of the rule holds, on an invalid one
    // both fail, so a bad pattern is refused at admission with the parser's own message.
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string",
        "maxLength": 1024,
        "x-kubernetes-validations": [{
            "rule": "''.matches(self) || !''.matches(self)",
            "message": "must be a valid regular expression (RE2 syntax)"
        }]
    }), length(max = 256))]
    pub include_path_regexes: Option<Vec<String>>,
    /// Paths matching one of these regular expressions (RE2 syntax) are skipped. Items must be
    /// unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string",
        "maxLength": 1024,
        "x-kubernetes-validations": [{
            "rule": "''.matches(self) || !''.matches(self)",
            "message": "must be a valid regular expression (RE2 syntax)"
        }]
    }), length(max = 256))]
    pub exclude_path_regexes: Option<Vec<String>>,
}

/// An S3 bucket to sync.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.awsCredentialId) != has(self.credentialsSecretRef)",
        "message": "exactly one of awsCredentialId or credentialsSecretRef must be set"
    },
    {
        "rule": "!has(self.autoSync) || !has(self.triggerMode)",
        "message": "triggerMode is the deprecated name of autoSync: set autoSync only",
        "fieldPath": ".triggerMode"
    }
]))]
pub struct S3Source {
    /// The bucket's name.
    #[schemars(length(min = 1, max = 255))]
    pub bucket_name: String,
    /// The bucket's AWS region, such as `us-east-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// The Chroma collection the objects are synced into.
    #[schemars(length(min = 1, max = 512))]
    pub collection_name: String,
    /// ID of the AWS credentials saved in the Chroma dashboard. Exactly one of
    /// `awsCredentialId` and `credentialsSecretRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2147483648, max = 2147483647))]
    pub aws_credential_id: Option<i32>,
    /// A Secret, in this object's namespace, holding an AWS access key that is sent inline
    /// with the create (the service stores it on your team). Exactly one of `awsCredentialId`
    /// and `credentialsSecretRef` is set. The key's values are never written to status, Events
    /// or logs. Chroma Sync has no update call: when the values change, the source is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<AwsCredentialsSecretRef>,
    /// Only objects whose keys start with this prefix are synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// What starts a sync: `none` (manual invocations only, the service's default and the only
    /// mode it supports so far), `direct` or `metadata` (S3 events). `none` is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sync: Option<S3AutoSync>,
    /// Deprecated: the earlier name of `autoSync`, sent as `autoSync` is. Set one of them, not
    /// both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_mode: Option<S3AutoSync>,
}

/// A Secret holding an AWS access key: its name and the keys of its data that hold the access
/// key id and the secret access key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentialsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret's data that holds the AWS access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub access_key_id_key: String,
    /// The key within the Secret's data that holds the AWS secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}

fn default_secret_access_key_key() -> String {
    "secretAccessKey".into()
}

impl S3Source {
    /// What starts its syncs: `autoSync`, else its deprecated alias `triggerMode`, else none.
    pub fn auto_sync_mode(&self) -> S3AutoSync {
        self.auto_sync
            .or(self.trigger_mode)
            .unwrap_or(S3AutoSync::None)
    }
}

/// What starts an S3 sync.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum S3AutoSync {
    None,
    Direct,
    Metadata,
}

/// How documents are split into chunks.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.type == 'lines' || !has(self.maxLines)",
    "message": "maxLines applies only to type lines",
    "fieldPath": ".maxLines"
}]))]
pub struct Chunking {
    /// `tree_sitter` splits code along its syntax tree; `lines` splits by line count.
    #[serde(rename = "type")]
    pub kind: ChunkingType,
    /// Largest chunk, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_size_bytes: Option<i64>,
    /// Most lines in a chunk (type `lines` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_lines: Option<i64>,
}

/// A chunking strategy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChunkingType {
    TreeSitter,
    Lines,
}

/// Embedding settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Embedding {
    /// The dense embedding model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<DenseEmbeddingModel>,
    /// An optional sparse embedding, stored under its own metadata key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseEmbedding>,
}

/// A dense embedding model and the task it embeds for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DenseEmbeddingModel {
    /// The model. `Qwen/Qwen3-Embedding-0.6B` is the one the service offers.
    pub model: DenseModel,
    /// Instructions for the model, for instruction-tuned models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<EmbeddingTask>,
}

/// Dense embedding models the service offers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DenseModel {
    #[serde(rename = "Qwen/Qwen3-Embedding-0.6B")]
    Qwen3Embedding06B,
}

/// The task an instruction-tuned embedding model is told it performs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingTask {
    /// The task's name.
    #[schemars(length(min = 1))]
    pub task_name: String,
    /// Prompt prepended to queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_prompt: Option<String>,
    /// Prompt prepended to documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
}

/// A sparse embedding.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SparseEmbedding {
    /// Metadata key the sparse vector is stored under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The sparse model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<SparseModel>,
}

/// Sparse embedding models the service offers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SparseModel {
    #[serde(rename = "Chroma/BM25")]
    ChromaBm25,
    #[serde(rename = "prithivida/Splade_PP_en_v1")]
    SpladePpEnV1,
}

/// A key of a Secret in the SyncSource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret's data.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

/// What happens to the Chroma source when the SyncSource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// What the operator observed and did.
/// See `SyncSourceSpec::on_conflict`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConflictPolicy {
    #[default]
    Fail,
    Adopt,
}

impl ConflictPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// See `SyncSourceSpec::on_source_missing`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MissingPolicy {
    #[default]
    Recreate,
    Report,
}

impl MissingPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What the operator observed of the source: its id in Chroma Sync, the conditions (Ready,
/// Reconciling, Stalled, Paused), the last failure and, with `spec.sync`, the runs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncSourceStatus {
    /// The `metadata.generation` this status describes; -1 until the operator has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ID of the Chroma Sync source this object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The connection `sourceId` was created (or adopted) through: `ChromaSyncConnection/<name>`,
    /// `ClusterChromaSyncConnection/<name>`, or `operator` (the operator's own settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Fingerprint of the create payload `sourceId` was created from. A spec change that alters
    /// the payload replaces the source; one that does not (say `deletionPolicy`) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hash: Option<String>,
    /// `Ready` summarises; `Reconciling` is true while work or a retryable error is in
    /// progress; `Stalled` is true when the operator needs a person to change something.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The last error the Chroma Sync service (or the operator) reported; cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<LastError>>,
    /// The newest SyncRun that `spec.sync` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Box<LastSync>>,
    /// Where `spec.sync` stands: what its newest run was started for, and the latest schedule
    /// tick handled (run or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state: Option<Box<SyncState>>,
    /// The value of the `chromasync.dev/reconcile-requested-at` annotation the operator last
    /// acted on (as Flux's `lastHandledReconcileAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// S3 sources with `autoSync` (not `none`): the newest invocations of the source (at most 5,
    /// newest first), whoever started them: a SyncRun of this operator or Chroma Sync itself
    /// (auto-sync, the dashboard). Refreshed at the drift interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub recent_runs: Vec<RecentRun>,
}

/// One invocation of an S3 source, as `status.recentRuns` shows it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentRun {
    /// The Chroma Sync invocation.
    pub invocation_id: String,
    /// Its phase as Chroma Sync last reported it (absent for a status this operator does not
    /// know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<run::RunPhase>,
    /// The S3 object key it synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// When Chroma Sync created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When it completed (complete runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Who started it: `operator` (a SyncRun of this namespace records it, or is creating it)
    /// or `service` (Chroma Sync on its own, or anyone else).
    pub origin: RunOrigin,
}

/// Who started an invocation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOrigin {
    Operator,
    Service,
}

impl RunOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOrigin::Operator => "operator",
            RunOrigin::Service => "service",
        }
    }
}

/// A summary of the newest SyncRun that `spec.sync` started.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSync {
    /// The SyncRun's name.
    pub name: String,
    /// The collection it writes (each run of `spec.sync` writes its own; see there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_name: Option<String>,
    /// Its Chroma Sync invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// Its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<run::RunPhase>,
    /// When it reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The operator's bookkeeping of `spec.sync`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// Fingerprint of the source id and the sync settings (collection, ref) the newest run was
    /// started for: a change starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_for: Option<String>,
    /// The latest schedule tick handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The `reconcile.fluxcd.io/requestedAt` value last served by a run (recorded with the
    /// run's start): a new value starts one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_requested_at: Option<String>,
    /// The `chromasync.dev/reconcile-requested-at` value last served by a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_reconcile_requested_at: Option<String>,
    /// What `spec.sync.publishTo` holds now: `<configMapName>/<run name>`. A newer completed
    /// run, or another ConfigMap name, publishes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// With `keepCollections`: the collections this object's finished runs made, newest first,
    /// and which of them were deleted (kept as such while their SyncRun is there, so it is not
    /// deleted again). What `keepCollections` decides from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<OwnCollection>>,
    /// How many collections `keepCollections` has deleted, in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_collections: Option<i64>,
}

/// A collection a SyncSource's run made.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnCollection {
    /// The collection's name.
    pub name: String,
    /// The SyncRun that wrote it.
    pub run: String,
    /// Whether that run completed (otherwise it failed or was cancelled).
    pub complete: bool,
    /// When that run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Deleted from Chroma by `keepCollections`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// An error reported by the Chroma Sync service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// The HTTP status code, when the service answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The service's error code (`error` of its ErrorResponse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What went wrong, in words.
    pub message: String,
}

/// The CustomResourceDefinition, as committed under `crds/`.
///
/// Post-processes what the derive produces where schemars cannot say it:
/// - `status` defaults to `{observedGeneration: -1}`, so a brand-new object reads as in progress
///   (not ready) to kstatus, as Flux's own CRDs do;
/// - descriptions are reflowed (doc comments wrap at 100 columns; `kubectl explain` wraps too);
/// - `null` is dropped from enums (optional fields are already nullable), so admission errors
///   list only values a person can use;
/// - the [`KEEP_ANNOTATIONS`] keep GitOps tools and Helm from deleting it.
pub fn crd() -> CustomResourceDefinition {
    tidy(
        SyncSource::crd(),
        "A Chroma Sync source, managed by chroma-sync-operator. See spec for what it syncs.",
        json!({ "observedGeneration": -1 }),
    )
}

/// The annotations every CRD of the operator carries, whichever way it is installed (the chart,
/// `install.yaml`, `crds/`), so that no tool deletes it by accident: deleting a CRD deletes every
/// object of its kind, and with the operator running, their sources in Chroma. Helm keeps it on
/// `helm uninstall` and `helm rollback` (the chart drops this one with `crds.keep=false`), Flux
/// never prunes it, Argo CD neither prunes it nor deletes it with its Application.
pub const KEEP_ANNOTATIONS: [(&str, &str); 3] = [
    (HELM_RESOURCE_POLICY, "keep"),
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
    (
        "argocd.argoproj.io/sync-options",
        "Prune=false,Delete=false",
    ),
];
/// Helm's annotation that keeps a resource on uninstall, rollback and upgrade.
pub const HELM_RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// The post-processing every CRD of the operator gets (see [`crd`]).
fn tidy(
    crd: CustomResourceDefinition,
    description: &str,
    status_default: serde_json::Value,
) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(crd).expect("the CRD serialises");
    value["metadata"]["annotations"] = KEEP_ANNOTATIONS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    tidy_schema(&mut value);
    let root = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    root["description"] = json!(description);
    let status = &mut root["properties"]["status"];
    status["default"] = status_default;
    if let Some(obj) = status.as_object_mut() {
        obj.remove("nullable");
    }
    serde_json::from_value(value).expect("the tidied CRD deserialises")
}

fn tidy_schema(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = reflow(d);
            }
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(tidy_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_schema),
        _ => {}
    }
}

/// Joins the lines of each paragraph; keeps blank lines between paragraphs.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The CRD as YAML, exactly as committed in `crds/syncsources.chromasync.dev.yaml`.
pub fn crd_yaml() -> String {
    yaml(&crd())
}

/// Every CRD of the operator by plural name, as YAML, exactly as committed in
/// `crds/<plural>.chromasync.dev.yaml`.
pub fn all_crds_yaml() -> Vec<(&'static str, String)> {
    vec![
        ("syncsources", crd_yaml()),
        ("syncruns", yaml(&run::crd())),
        ("chromasyncconnections", yaml(&connection::crd())),
        (
            "clusterchromasyncconnections",
            yaml(&connection::cluster_crd()),
        ),
    ]
}

fn yaml(crd: &CustomResourceDefinition) -> String {
    // Descriptions on one line each, as kubectl and the CRD references show them.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(crd, options).expect("the CRD serialises")
}
