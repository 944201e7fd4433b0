//! The Chroma client as the client-level tests build it, and the create body they send.

use crate::standin::DATABASE;
use chroma_sync_operator::chroma::wire::{CreateSourcePayload, GithubConfig, SourceConfig};
use chroma_sync_operator::chroma::{ChromaClient, ClientConfig};
use chroma_sync_operator::metrics::Metrics;
use std::time::Duration;

/// A client of `base_url` that gives up after `timeout` and trusts the CAs in `ca_pem` as well
/// as the system's.
pub fn client(base_url: String, timeout: Duration, ca_pem: Option<Vec<u8>>) -> ChromaClient {
    let config = ClientConfig {
        name: "test".into(),
        api_url: base_url.clone(),
        base_url,
        timeout,
        extra_ca_pem: ca_pem,
        limits: Default::default(),
    };
    ChromaClient::new(&config, Metrics::new()).unwrap()
}

/// The create body of a source for GitHub repository `repo`, in [`DATABASE`].
pub fn github_payload(repo: &str) -> CreateSourcePayload {
    CreateSourcePayload {
        database_name: DATABASE.into(),
        source: SourceConfig::Github(GithubConfig {
            repository: repo.into(),
            app_id: None,
            include_globs: None,
        }),
        chunking: None,
        embedding: None,
        embedding_model: None,
    }
}
