//! The Chroma Sync API's JSON, as the service spells it (snake_case).
//!
//! Request types are exact; response types are lenient (every field the operator does not need
//! is ignored, unknown source types decode), because the service may add fields or kinds.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/sources` (`CreateSourcePayload`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CreateSourcePayload {
    pub database_name: String,
    #[serde(flatten)]
    pub source: SourceConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<ChunkingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<DenseEmbeddingModel>,
}

impl CreateSourcePayload {
    /// The values this payload carries that are secret (an S3 source's inline AWS key).
    pub fn secret_values(&self) -> Vec<&str> {
        match &self.source {
            SourceConfig::S3(S3Config {
                inline_credentials: Some(keys),
                ..
            }) => vec![
                keys.aws_access_key_id.as_str(),
                keys.aws_secret_access_key.as_str(),
            ],
            _ => Vec::new(),
        }
    }
}

/// The source type: exactly one key of `github`, `web_scrape`, `s3`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    Github(GithubConfig),
    WebScrape(WebScrapeConfig),
    S3(S3Config),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GithubConfig {
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_globs: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WebScrapeConfig {
    pub starting_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_path_regexes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_path_regexes: Option<Vec<String>>,
}

/// The fields are declared in the order they serialise, and that order is part of
/// `status.payloadHash` (see `source::payload::fingerprint`): new fields go last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct S3Config {
    pub bucket_name: String,
    pub region: String,
    pub collection_name: String,
    /// Either this or [`InlineAwsCredentials`] (the published API's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_credential_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Sent only for modes other than `none`, the service's default (the seed document's
    /// `trigger_mode`, renamed by the published one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sync: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub inline_credentials: Option<InlineAwsCredentials>,
}

/// An AWS access key sent inline with a create (`aws_access_key_id`, `aws_secret_access_key`).
/// Its `Debug` is redacted, so a payload printed by mistake shows no key.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct InlineAwsCredentials {
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
}

impl std::fmt::Debug for InlineAwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineAwsCredentials(<redacted>)")
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChunkingConfig {
    TreeSitter {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size_bytes: Option<i64>,
    },
    Lines {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_lines: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size_bytes: Option<i64>,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EmbeddingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<DenseEmbeddingModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseEmbeddingConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DenseEmbeddingModel {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<EmbeddingTask>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EmbeddingTask {
    pub task_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SparseEmbeddingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Body of a 201 from `POST /api/v1/sources`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CreateSourceResponse {
    pub source_id: String,
}

/// Every error body (`ErrorResponse`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorResponse {
    pub error: String,
    pub message: String,
}

/// One item of `GET /api/v1/sources`, reduced to what identifies it. Any source type decodes;
/// the ones the operator cannot create (`file_upload`) simply match nothing.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ListedSource {
    pub id: String,
    #[serde(default)]
    pub created_at: Option<jiff::Timestamp>,
    #[serde(default)]
    pub github: Option<ListedGithub>,
    #[serde(default)]
    pub web_scrape: Option<ListedWebScrape>,
    #[serde(default)]
    pub s3: Option<ListedS3>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ListedGithub {
    pub repository: String,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ListedWebScrape {
    pub starting_url: String,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ListedS3 {
    pub bucket_name: String,
    pub collection_name: String,
}

/// Body of `POST /api/v1/sources/{id}/invocations` (`CreateJobPayload`). Every field is
/// optional; an unset one is left out of the request, not sent as `null`. Which fields a source
/// kind needs is the caller's business (GitHub: collection and ref; web: collection; S3: object
/// key, and only S3 takes `object_key`, `custom_id` and `metadata`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CreateJobPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_collection_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_identifier: Option<GitRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A Git ref (`GitRefIdentifier`): `{"sha": ".."}` or `{"branch": ".."}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GitRef {
    Sha(String),
    Branch(String),
}

impl GitRef {
    /// Leniently from an answer: an object with a string `sha` (preferred) or `branch`.
    fn from_value(value: &serde_json::Value) -> Option<Self> {
        let field = |key: &str| value.get(key).and_then(serde_json::Value::as_str);
        field("sha")
            .map(|s| GitRef::Sha(s.to_owned()))
            .or_else(|| field("branch").map(|b| GitRef::Branch(b.to_owned())))
    }
}

/// Body of `POST /api/v1/sources/{id}/invocations/latest-by-keys` (`LatestByKeysRequest`): the
/// S3 object keys whose newest invocation is asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LatestByKeysRequest {
    pub object_keys: Vec<String>,
}

/// Body of a 201 from `POST /api/v1/sources/{id}/invocations` (`CreateJobResponse`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CreateJobResponse {
    pub invocation_id: String,
}

/// An invocation as `GET /api/v1/invocations[/{id}]` returns it (`Job`). Lenient: unknown
/// fields are ignored, an unknown status or metadata kind decodes, and `created_at`,
/// `source_id` and `metadata` may be missing. The earlier guide calls the id `invocation_id`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Job {
    #[serde(alias = "invocation_id")]
    pub id: String,
    pub status: JobStatus,
    #[serde(default)]
    pub created_at: Option<jiff::Timestamp>,
    #[serde(default)]
    pub source_id: Option<String>,
    #[serde(default)]
    pub metadata: JobMetadata,
}

/// An invocation's state (`JobStatus`). The service spells it in two forms, both accepted: the
/// plain strings `"pending"`, `"processing"`, `"cancelled"` and the objects
/// `{"complete": {"finished_at", "duration_ms"}}`, `{"failed": {"error"}}`. Anything else is
/// kept as [`JobStatus::Unknown`] with its text, never a decode error: a status the service adds
/// later must not make a run unreadable.
#[derive(Clone, Debug, PartialEq)]
pub enum JobStatus {
    Pending,
    Processing,
    Cancelled,
    Complete {
        finished_at: Option<jiff::Timestamp>,
        duration_ms: Option<i64>,
    },
    Failed {
        error: String,
    },
    /// The raw text: the string itself, or the JSON of anything else.
    Unknown(String),
}

impl JobStatus {
    /// Whether the run has ended and will not change again. An unknown status is not taken as
    /// an end: the run is followed until it reaches one the operator knows.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobStatus::Cancelled | JobStatus::Complete { .. } | JobStatus::Failed { .. }
        )
    }

    fn from_value(value: serde_json::Value) -> Self {
        use serde_json::Value;
        let unit = |name: &str| match name {
            "pending" => Some(JobStatus::Pending),
            "processing" => Some(JobStatus::Processing),
            "cancelled" => Some(JobStatus::Cancelled),
            _ => None,
        };
        match &value {
            Value::String(name) => match name.as_str() {
                // The list filter's names: a bare terminal name carries no details.
                "complete" => JobStatus::Complete {
                    finished_at: None,
                    duration_ms: None,
                },
                "failed" => JobStatus::Failed {
                    error: String::new(),
                },
                other => unit(other).unwrap_or_else(|| JobStatus::Unknown(name.clone())),
            },
            Value::Object(map) if map.len() == 1 => {
                let (tag, details) = map.iter().next().expect("one entry");
                let empty = details.is_null() || details.as_object().is_some_and(|m| m.is_empty());
                match tag.as_str() {
                    "complete" => JobStatus::Complete {
                        finished_at: details
                            .get("finished_at")
                            .and_then(Value::as_str)
                            .and_then(|t| t.parse().ok()),
                        duration_ms: details.get("duration_ms").and_then(Value::as_i64),
                    },
                    "failed" => JobStatus::Failed {
                        error: details
                            .get("error")
                            .or(Some(details))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    },
                    // Serde's map form of a unit variant: `{"pending": null}`.
                    other if empty => {
                        unit(other).unwrap_or_else(|| JobStatus::Unknown(value.to_string()))
                    }
                    _ => JobStatus::Unknown(value.to_string()),
                }
            }
            _ => JobStatus::Unknown(value.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(JobStatus::from_value)
    }
}

/// What an invocation ran on (`IndexJobMetadata`), reduced to what identifies a run: its target
/// collection and, by source kind, the Git ref (GitHub) or the object key and custom id (S3).
///
/// The published schema is `allOf` of the kind and `{database_name, collection_name}`. As a
/// Rust service's `#[serde(flatten)]` writes it, the kind's key sits beside those two:
/// `{"database_name", "collection_name", "github": {"git_ref_identifier": {..}}}`,
/// `{.., "s3": {"bucket_name", "object_key", "custom_id", "additional_metadata"}}`,
/// `{.., "web_scrape": null}`. A kind nested under a key of its own (`kind`, `source_type`, as
/// the earlier guide nests a source's type) is read too; a string kind (`"web_scrape"`,
/// `"Unknown"`) or any other shape simply identifies nothing. Never a decode error.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JobMetadata {
    pub collection_name: Option<String>,
    pub database_name: Option<String>,
    pub git_ref: Option<GitRef>,
    pub object_key: Option<String>,
    pub custom_id: Option<String>,
}

impl JobMetadata {
    /// Keys under which a kind may be nested rather than flattened.
    const KIND_WRAPPERS: [&'static str; 4] = ["kind", "source_type", "type", "source"];

    fn from_value(value: &serde_json::Value) -> Self {
        use serde_json::Value;
        let Some(top) = value.as_object() else {
            return Self::default();
        };
        let holders: Vec<&serde_json::Map<String, Value>> = std::iter::once(top)
            .chain(
                Self::KIND_WRAPPERS
                    .iter()
                    .filter_map(|k| top.get(*k).and_then(Value::as_object)),
            )
            .collect();
        let find = |key: &str| {
            holders
                .iter()
                .find_map(|h| h.get(key).filter(|v| !v.is_null()))
        };
        let text = |v: Option<&Value>, key: &str| {
            v.and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let name = |key: &str| {
            holders
                .iter()
                .find_map(|h| h.get(key)?.as_str())
                .map(str::to_owned)
        };
        let github = find("github");
        let s3 = find("s3");
        Self {
            collection_name: name("collection_name"),
            database_name: name("database_name"),
            git_ref: github.and_then(|g| {
                g.get("git_ref_identifier")
                    .and_then(GitRef::from_value)
                    .or_else(|| GitRef::from_value(g))
            }),
            object_key: text(s3, "object_key"),
            custom_id: text(s3, "custom_id"),
        }
    }
}

impl<'de> Deserialize<'de> for JobMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| JobMetadata::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(value: serde_json::Value) -> JobStatus {
        serde_json::from_value(value).expect("a status always decodes")
    }

    #[test]
    fn unset_payload_fields_are_left_out_and_refs_are_tagged() {
        assert_eq!(
            serde_json::to_value(CreateJobPayload::default()).unwrap(),
            json!({})
        );
        let payload = CreateJobPayload {
            target_collection_name: Some("c".into()),
            ref_identifier: Some(GitRef::Branch("main".into())),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&payload).unwrap(),
            json!({"target_collection_name": "c", "ref_identifier": {"branch": "main"}})
        );
        assert_eq!(
            serde_json::to_value(GitRef::Sha("abc".into())).unwrap(),
            json!({"sha": "abc"})
        );
    }

    #[test]
    fn both_status_forms_decode() {
        assert_eq!(status(json!("pending")), JobStatus::Pending);
        assert_eq!(status(json!("processing")), JobStatus::Processing);
        assert_eq!(status(json!("cancelled")), JobStatus::Cancelled);
        assert_eq!(status(json!({"pending": null})), JobStatus::Pending);
        assert_eq!(status(json!({"cancelled": {}})), JobStatus::Cancelled);
        assert_eq!(
            status(json!({"complete": {"finished_at": "2026-01-02T03:04:05Z", "duration_ms": 42}})),
            JobStatus::Complete {
                finished_at: Some("2026-01-02T03:04:05Z".parse().unwrap()),
                duration_ms: Some(42),
            }
        );
        // The earlier guide's form has no duration; a bad time is no reason to lose the end.
        assert_eq!(
            status(json!({"complete": {"finished_at": "yesterday"}})),
            JobStatus::Complete {
                finished_at: None,
                duration_ms: None
            }
        );
        assert_eq!(
            status(json!({"failed": {"error": "clone failed"}})),
            JobStatus::Failed {
                error: "clone failed".into()
            }
        );
        assert_eq!(
            status(json!({"failed": "bare message"})),
            JobStatus::Failed {
                error: "bare message".into()
            }
        );
        assert_eq!(
            status(json!("complete")),
            JobStatus::Complete {
                finished_at: None,
                duration_ms: None
            }
        );
        assert_eq!(
            status(json!("failed")),
            JobStatus::Failed {
                error: String::new()
            }
        );
        for (value, raw) in [
            (json!("queued"), "queued"),
            (json!("Pending"), "Pending"),
            (json!({"paused": {}}), r#"{"paused":{}}"#),
            (
                json!({"pending": {"since": 1}}),
                r#"{"pending":{"since":1}}"#,
            ),
            (
                json!({"complete": {}, "failed": {}}),
                r#"{"complete":{},"failed":{}}"#,
            ),
            (json!(7), "7"),
            (json!(null), "null"),
        ] {
            assert_eq!(status(value), JobStatus::Unknown(raw.into()));
        }
    }

    #[test]
    fn only_ended_runs_are_terminal() {
        for (s, terminal) in [
            (JobStatus::Pending, false),
            (JobStatus::Processing, false),
            (JobStatus::Unknown("queued".into()), false),
            (JobStatus::Cancelled, true),
            (
                JobStatus::Complete {
                    finished_at: None,
                    duration_ms: None,
                },
                true,
            ),
            (
                JobStatus::Failed {
                    error: String::new(),
                },
                true,
            ),
        ] {
            assert_eq!(s.is_terminal(), terminal, "{s:?}");
        }
    }

    #[test]
    fn metadata_decodes_in_every_plausible_form() {
        let meta = |v: serde_json::Value| -> JobMetadata { serde_json::from_value(v).unwrap() };
        let github = JobMetadata {
            collection_name: Some("c".into()),
            database_name: Some("d".into()),
            git_ref: Some(GitRef::Branch("main".into())),
            ..Default::default()
        };
        // Flattened, as the published allOf and serde's flatten write it.
        assert_eq!(
            meta(json!({"database_name": "d", "collection_name": "c",
                        "github": {"git_ref_identifier": {"branch": "main"}}})),
            github
        );
        // Nested under a key of its own.
        for wrapper in ["kind", "source_type"] {
            assert_eq!(
                meta(json!({"database_name": "d", "collection_name": "c",
                            wrapper: {"github": {"git_ref_identifier": {"branch": "main"}}}})),
                github,
                "{wrapper}"
            );
        }
        // The ref directly under `github`.
        assert_eq!(
            meta(
                json!({"database_name": "d", "collection_name": "c", "github": {"branch": "main"}})
            ),
            github
        );
        assert_eq!(
            meta(
                json!({"collection_name": "c", "s3": {"bucket_name": "b", "object_key": "p/k",
                        "custom_id": "id-1", "additional_metadata": {"x": 1}}})
            ),
            JobMetadata {
                collection_name: Some("c".into()),
                object_key: Some("p/k".into()),
                custom_id: Some("id-1".into()),
                ..Default::default()
            }
        );
        for plain in [
            json!({"database_name": "d", "collection_name": "c", "web_scrape": null}),
            json!({"database_name": "d", "collection_name": "c", "kind": "web_scrape"}),
            json!({"database_name": "d", "collection_name": "c", "Unknown": null}),
        ] {
            assert_eq!(
                meta(plain.clone()),
                JobMetadata {
                    collection_name: Some("c".into()),
                    database_name: Some("d".into()),
                    ..Default::default()
                },
                "{plain}"
            );
        }
        for nothing in [
            json!("web_scrape"),
            json!("Unknown"),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(meta(nothing), JobMetadata::default());
        }
    }

    #[test]
    fn a_job_decodes_leniently() {
        let job: Job = serde_json::from_value(json!({
            "invocation_id": "j-1", "status": "processing", "extra": [1],
            "metadata": null, "source_id": null,
        }))
        .unwrap();
        assert_eq!(
            (job.id.as_str(), &job.status, job.created_at, job.source_id),
            ("j-1", &JobStatus::Processing, None, None)
        );
        assert_eq!(job.metadata, JobMetadata::default());
        assert!(
            serde_json::from_value::<Job>(json!({"id": "j"})).is_err(),
            "no status"
        );
        assert!(
            serde_json::from_value::<Job>(json!({"id": "j", "status": "pending",
                                                  "created_at": "not a time"}))
            .is_err(),
            "a created_at that is there must be a time"
        );
    }
}
