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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct S3Config {
    pub bucket_name: String,
    pub region: String,
    pub collection_name: String,
    pub aws_credential_id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Sent only for modes other than `none`: the published API has renamed this field, so
    /// the default is best left to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_mode: Option<String>,
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
