//! A small client for the Chroma Sync API: the source and invocation calls the operator makes.
//!
//! Every outcome is sorted into [`ChromaError`] here, at the edge, so the reconciler decides on
//! plain values. The token is carried in [`Token`], which never prints itself. Lookups that read
//! the same listing share one paged pass over it ([`shared`]). Every call of a client, and of its
//! clones, goes through the client's one [`limit::Limiter`]: the rate, the calls in flight, the
//! pause after a 429 (which the client retries itself, a few times: a 429 means the request was
//! not processed).

pub mod decode;
pub mod limit;
pub mod shared;
pub mod wire;

use crate::metrics::Metrics;
pub use limit::Limits;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use std::fmt;
use std::time::Duration;
use wire::{CreateJobPayload, CreateSourcePayload, Job, LatestByKeysRequest, ListedSource};

/// The header the service authenticates with.
pub const TOKEN_HEADER: &str = "x-chroma-token";

/// A Chroma API token. Its `Debug` is redacted and it has no `Display`, so it cannot reach a log
/// line, an event or a status by accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into().trim().to_owned();
        (!value.is_empty()).then_some(Self(value))
    }

    fn header(&self) -> Result<HeaderValue, ChromaError> {
        let mut value = HeaderValue::from_str(&self.0).map_err(|_| ChromaError::Transport {
            kind: TransportKind::Other,
            message: "the token contains characters that cannot be sent in a header".into(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChromaError {
    /// The service answered with an error status.
    #[error("Chroma Sync answered {status}: {message}")]
    Api {
        status: u16,
        error: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No usable answer: timeout, refused or reset connection, TLS failure.
    #[error("calling Chroma Sync failed ({kind}): {message}")]
    Transport {
        kind: TransportKind,
        message: String,
    },
    /// The service answered success with a body that does not decode. For a create this is an
    /// ambiguous outcome: the source may exist.
    #[error("Chroma Sync answered {status} with an unreadable body: {message}")]
    Decode { status: u16, message: String },
}

impl ChromaError {
    /// The error with each of `values` (a request's secrets) replaced in its texts, in case the
    /// service quotes the body it refused.
    fn redacting(self, values: &[&str]) -> Self {
        let clean = |text: String| {
            values
                .iter()
                .filter(|v| !v.is_empty())
                .fold(text, |t, v| t.replace(v, "<redacted>"))
        };
        match self {
            ChromaError::Api {
                status,
                error,
                message,
                retry_after,
            } => ChromaError::Api {
                status,
                error: error.map(clean),
                message: clean(message),
                retry_after,
            },
            ChromaError::Transport { kind, message } => ChromaError::Transport {
                kind,
                message: clean(message),
            },
            ChromaError::Decode { status, message } => ChromaError::Decode {
                status,
                message: clean(message),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timeout",
            TransportKind::Connect => "connection failed",
            TransportKind::Other => "transport error",
        })
    }
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Now,
    AlreadyGone,
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// 202: the run was pending and will not start.
    Now,
    /// 412: the run is no longer pending (processing, or already finished); the API cannot stop it.
    NotPending,
    /// 404: no such invocation.
    AlreadyGone,
}

/// Client settings: one client per connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The connection's label on the limiter's metrics (`operator` for the one the flags
    /// configure). Never a secret.
    pub name: String,
    pub base_url: String,
    /// The Chroma API (collections, identity), e.g. `https://api.trychroma.com`: the same
    /// token, limiter and metrics as the Chroma Sync calls.
    pub api_url: String,
    pub timeout: Duration,
    /// Extra PEM CA certificates to trust (corporate proxies).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The service's limits as this client keeps them.
    pub limits: Limits,
}

/// Cheap to clone; clones share the connection pool and the limiter.
#[derive(Clone)]
pub struct ChromaClient {
    http: reqwest::Client,
    base: String,
    api: String,
    metrics: Metrics,
    limiter: std::sync::Arc<limit::Limiter>,
    /// How long the 429s of one call may keep it waiting, in all (the call timeout).
    retry_within: Duration,
}

/// Page size for listing; the service's own default.
pub const LIST_PAGE: usize = 100;

impl ChromaClient {
    pub fn new(config: &ClientConfig, metrics: Metrics) -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("chroma-sync-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let limiter = limit::Limiter::new(&config.limits, metrics.limiter(&config.name));
        Ok(Self {
            http: builder.build()?,
            base: config.base_url.trim_end_matches('/').to_owned(),
            api: config.api_url.trim_end_matches('/').to_owned(),
            metrics,
            limiter: std::sync::Arc::new(limiter),
            retry_within: config.timeout,
        })
    }

    /// The service's base URL (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The cheapest call that proves a token: `GET /api/v1/sources?limit=1` (the tenant's
    /// newest source, if any). `/health` proves no token.
    pub async fn check_token(&self, token: &Token) -> Result<(), ChromaError> {
        let (status, body) = self
            .call::<()>(
                "list_sources",
                Method::GET,
                "/api/v1/sources?limit=1",
                token,
                None,
            )
            .await?;
        decode::listed(status.as_u16(), &body).map(drop)
    }

    /// The Chroma API's base URL (no trailing slash).
    pub fn api_base(&self) -> &str {
        &self.api
    }

    /// `GET /api/v2/auth/identity` on the Chroma API: the token's tenant, which every
    /// collection path names (Chroma's published way for a client to learn it).
    pub async fn tenant(&self, token: &Token) -> Result<String, ChromaError> {
        let (status, body) = self
            .call_at::<()>(
                Base::Api,
                "get_identity",
                Method::GET,
                "/api/v2/auth/identity",
                token,
                None,
            )
            .await?;
        decode::tenant(status.as_u16(), &body)
    }

    /// `DELETE /api/v2/tenants/{tenant}/databases/{database}/collections/{name}` on the Chroma
    /// API (the server takes the last segment as the collection's name, as Chroma's own
    /// clients send it); a 404 means it is already gone.
    pub async fn delete_collection(
        &self,
        token: &Token,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<Deleted, ChromaError> {
        let path = collection_path(tenant, database, name);
        match self
            .call_at::<()>(
                Base::Api,
                "delete_collection",
                Method::DELETE,
                &path,
                token,
                None,
            )
            .await
        {
            Ok(_) => Ok(Deleted::Now),
            Err(ChromaError::Api { status: 404, .. }) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// The rate this client's calls are paced at now (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.limiter.rate()
    }

    /// `POST /api/v1/sources`: the new source's id.
    pub async fn create_source(
        &self,
        token: &Token,
        payload: &CreateSourcePayload,
    ) -> Result<String, ChromaError> {
        let answer = self
            .call(
                "create_source",
                Method::POST,
                "/api/v1/sources",
                token,
                Some(payload),
            )
            .await;
        // An S3 payload may carry an AWS key: an answer that quotes it must not pass it on.
        let secrets = payload.secret_values();
        let (status, body) = answer.map_err(|e| e.redacting(&secrets))?;
        decode::created(status.as_u16(), &body).map_err(|e| e.redacting(&secrets))
    }

    /// `DELETE /api/v1/sources/{id}`; a 404 means it is already gone.
    pub async fn delete_source(&self, token: &Token, id: &str) -> Result<Deleted, ChromaError> {
        let path = format!("/api/v1/sources/{}", urlencode(id));
        match self
            .call::<()>("delete_source", Method::DELETE, &path, token, None)
            .await
        {
            Ok(_) => Ok(Deleted::Now),
            Err(ChromaError::Api { status: 404, .. }) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v1/sources/{id}`: the source as the service holds it, or None when it does not
    /// exist (404).
    pub async fn get_source(
        &self,
        token: &Token,
        id: &str,
    ) -> Result<Option<serde_json::Value>, ChromaError> {
        let path = format!("/api/v1/sources/{}", urlencode(id));
        match self
            .call::<()>("get_source", Method::GET, &path, token, None)
            .await
        {
            Ok((status, body)) => decode::source(status.as_u16(), &body).map(Some),
            Err(ChromaError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sources of a database, newest first, page by page, until `keep_going` says stop for a
    /// page's last item or the listing ends.
    pub async fn list_sources_while(
        &self,
        token: &Token,
        database: &str,
        mut keep_going: impl FnMut(&[ListedSource]) -> bool,
    ) -> Result<Vec<ListedSource>, ChromaError> {
        let mut all = Vec::new();
        for page in 0.. {
            let items = self.list_sources_page(token, database, page).await?;
            let more = items.len() == LIST_PAGE && keep_going(&items);
            all.extend(items);
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Page `page` (from 0) of a database's sources, newest first, [`LIST_PAGE`] to a page: a
    /// shorter page is the last.
    pub async fn list_sources_page(
        &self,
        token: &Token,
        database: &str,
        page: usize,
    ) -> Result<Vec<ListedSource>, ChromaError> {
        let path = format!(
            "/api/v1/sources?database_name={}&limit={LIST_PAGE}&offset={}&order_by=DESC",
            urlencode(database),
            page * LIST_PAGE
        );
        let (status, body) = self
            .call::<()>("list_sources", Method::GET, &path, token, None)
            .await?;
        decode::listed(status.as_u16(), &body)
    }

    /// `POST /api/v1/sources/{id}/invocations`: the new invocation's id. Not idempotent: after
    /// an ambiguous failure (transport error, unreadable 201) the run may exist.
    pub async fn create_invocation(
        &self,
        token: &Token,
        source_id: &str,
        payload: &CreateJobPayload,
    ) -> Result<String, ChromaError> {
        let path = format!("/api/v1/sources/{}/invocations", urlencode(source_id));
        let (status, body) = self
            .call(
                "create_invocation",
                Method::POST,
                &path,
                token,
                Some(payload),
            )
            .await?;
        decode::invocation_created(status.as_u16(), &body)
    }

    /// `GET /api/v1/invocations/{id}`; a 404 stays an error (`Api { status: 404 }`).
    pub async fn get_invocation(&self, token: &Token, id: &str) -> Result<Job, ChromaError> {
        let path = format!("/api/v1/invocations/{}", urlencode(id));
        let (status, body) = self
            .call::<()>("get_invocation", Method::GET, &path, token, None)
            .await?;
        decode::job(status.as_u16(), &body)
    }

    /// Invocations of a source, newest first, page by page, until `keep_going` says stop for a
    /// page or the listing ends.
    pub async fn list_invocations_while(
        &self,
        token: &Token,
        source_id: &str,
        mut keep_going: impl FnMut(&[Job]) -> bool,
    ) -> Result<Vec<Job>, ChromaError> {
        let mut all = Vec::new();
        for page in 0.. {
            let items = self.list_invocations_page(token, source_id, page).await?;
            let more = items.len() == LIST_PAGE && keep_going(&items);
            all.extend(items);
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Page `page` (from 0) of a source's invocations, newest first, [`LIST_PAGE`] to a page:
    /// a shorter page is the last.
    pub async fn list_invocations_page(
        &self,
        token: &Token,
        source_id: &str,
        page: usize,
    ) -> Result<Vec<Job>, ChromaError> {
        let path = format!(
            "/api/v1/invocations?source_id={}&limit={LIST_PAGE}&offset={}&order_by=DESC",
            urlencode(source_id),
            page * LIST_PAGE
        );
        let (status, body) = self
            .call::<()>("list_invocations", Method::GET, &path, token, None)
            .await?;
        decode::jobs(status.as_u16(), &body)
    }

    /// `POST /api/v1/sources/{id}/invocations/latest-by-keys`: the newest invocation of each of
    /// an S3 source's `keys` that has one. A read (it creates nothing), so one call answers for
    /// any number of keys where a listing pages through every run of the source.
    pub async fn latest_by_keys(
        &self,
        token: &Token,
        source_id: &str,
        keys: &[String],
    ) -> Result<std::collections::BTreeMap<String, Job>, ChromaError> {
        let path = format!(
            "/api/v1/sources/{}/invocations/latest-by-keys",
            urlencode(source_id)
        );
        let body = LatestByKeysRequest {
            object_keys: keys.to_vec(),
        };
        let (status, body) = self
            .call(
                "latest_invocations_by_keys",
                Method::POST,
                &path,
                token,
                Some(&body),
            )
            .await?;
        decode::jobs_by_key(status.as_u16(), &body)
    }

    /// `PUT /api/v1/invocations/{id}` (no body): cancels a pending run. 412 (not pending) and
    /// 404 (no such run) are answers, not errors.
    pub async fn cancel_invocation(
        &self,
        token: &Token,
        id: &str,
    ) -> Result<Cancelled, ChromaError> {
        let path = format!("/api/v1/invocations/{}", urlencode(id));
        match self
            .call::<()>("cancel_invocation", Method::PUT, &path, token, None)
            .await
        {
            Ok(_) => Ok(Cancelled::Now),
            Err(ChromaError::Api { status: 412, .. }) => Ok(Cancelled::NotPending),
            Err(ChromaError::Api { status: 404, .. }) => Ok(Cancelled::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// One call through the limiter; a 429 pauses every caller of this client and is tried
    /// again after the pause (the service did not process it), up to [`limit::MAX_ATTEMPTS`]
    /// times and within the call timeout in all; then the 429 goes to the caller.
    async fn call<B: serde::Serialize>(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        token: &Token,
        body: Option<&B>,
    ) -> Result<(StatusCode, bytes::Bytes), ChromaError> {
        self.call_at(Base::Sync, endpoint, method, path, token, body)
            .await
    }

    /// [`Self::call`] at either base: one limiter, one retry rule, one metric for both.
    async fn call_at<B: serde::Serialize>(
        &self,
        base: Base,
        endpoint: &'static str,
        method: Method,
        path: &str,
        token: &Token,
        body: Option<&B>,
    ) -> Result<(StatusCode, bytes::Bytes), ChromaError> {
        let url = match base {
            Base::Sync => format!("{}{path}", self.base),
            Base::Api => format!("{}{path}", self.api),
        };
        let mut paused = Duration::ZERO;
        for attempt in 1.. {
            let admitted = self.limiter.admit().await;
            let sent = admitted.sent;
            let result = self
                .call_once(endpoint, method.clone(), &url, token, body)
                .await;
            drop(admitted);
            match &result {
                Err(ChromaError::Api {
                    status: 429,
                    retry_after,
                    ..
                }) => {
                    let pause = self.limiter.limited(sent, *retry_after);
                    if limit::retry_again(attempt, paused, pause, self.retry_within) {
                        paused += pause;
                        continue;
                    }
                }
                // Answered: what the service processes. (No answer says nothing of its limit.)
                Ok(_) | Err(ChromaError::Api { .. } | ChromaError::Decode { .. }) => {
                    self.limiter.succeeded()
                }
                Err(ChromaError::Transport { .. }) => {}
            }
            return result;
        }
        unreachable!("the attempts end in a return")
    }

    async fn call_once<B: serde::Serialize>(
        &self,
        endpoint: &'static str,
        method: Method,
        url: &str,
        token: &Token,
        body: Option<&B>,
    ) -> Result<(StatusCode, bytes::Bytes), ChromaError> {
        let mut request = self
            .http
            .request(method, url)
            .header(TOKEN_HEADER, token.header()?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let result = async {
            let response = request.send().await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| decode::retry_after(v.as_bytes()));
            let body = read_bounded(response).await?;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        }
        .await;
        let elapsed = started.elapsed();
        match result {
            Err(e) => {
                self.metrics.chroma_call(endpoint, "error", elapsed);
                Err(transport_error(e))
            }
            Ok((status, _, None)) => {
                self.metrics.chroma_call(endpoint, status.as_str(), elapsed);
                Err(ChromaError::Decode {
                    status: status.as_u16(),
                    message: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
                })
            }
            Ok((status, retry_after, Some(body))) => {
                self.metrics.chroma_call(endpoint, status.as_str(), elapsed);
                if status.is_success() {
                    return Ok((status, body));
                }
                Err(decode::error(status.as_u16(), retry_after, &body))
            }
        }
    }
}

/// Which service a call goes to.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// Chroma Sync (sources, invocations).
    Sync,
    /// The Chroma API (identity, collections).
    Api,
}

/// The Chroma API path of a collection; public for the contract tests.
pub fn collection_path(tenant: &str, database: &str, name: &str) -> String {
    format!(
        "/api/v2/tenants/{}/databases/{}/collections/{}",
        urlencode(tenant),
        urlencode(database),
        urlencode(name)
    )
}

/// The Chroma API's default base URL (Chroma Cloud).
pub const DEFAULT_API_URL: &str = "https://api.trychroma.com";

/// The largest answer read. The service's answers are small (a list page is well under this);
/// a larger one is not the service's, and reading it whole would cost memory for nothing.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The body, or None once it passes [`MAX_BODY_BYTES`] (the rest is not read).
async fn read_bounded(
    mut response: reqwest::Response,
) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Why a Chroma base URL is refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("the Chroma URL is not an absolute URL: {0}")]
    Invalid(String),
    #[error(
        "refusing plain http Chroma URL {0}: the token would travel unencrypted; pass --allow-insecure-http for a local stand-in"
    )]
    InsecureHttp(String),
    #[error("the Chroma URL must be https:// (got scheme {0:?})")]
    Scheme(String),
}

/// The start-up check of `--chroma-url`: https, or http only with `--allow-insecure-http`. The
/// scheme is compared as parsed (so `HTTP://` is plain http too), not as typed.
pub fn check_base_url(url: &str, allow_insecure_http: bool) -> Result<(), BaseUrlError> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| BaseUrlError::Invalid(e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http => Ok(()),
        "http" => {
            // Never echo a password someone put in the URL.
            let _ = parsed.set_password(None);
            Err(BaseUrlError::InsecureHttp(parsed.to_string()))
        }
        other => Err(BaseUrlError::Scheme(other.to_owned())),
    }
}

/// rustls needs one process-wide crypto provider; this crate uses ring (as kube does here).
pub fn install_crypto_provider() {
    // Err only means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn transport_error(e: reqwest::Error) -> ChromaError {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    // reqwest's Display names the URL (no token: it travels in a header) and the cause chain.
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ChromaError::Transport { kind, message }
}

/// Percent-encodes a path segment or query value.
fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints() {
        let token = Token::new("s3cr3t-value").unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert_eq!(Token::new("  \n"), None);
    }

    #[test]
    fn only_https_unless_plain_http_is_allowed() {
        for url in ["https://sync.trychroma.com", "HTTPS://Sync.trychroma.com/"] {
            assert_eq!(check_base_url(url, false), Ok(()), "{url}");
        }
        // Case does not matter to the URL parser, so it must not matter here either.
        for url in ["http://127.0.0.1:8089", "HTTP://127.0.0.1:8089", "Http://x"] {
            assert!(
                matches!(
                    check_base_url(url, false),
                    Err(BaseUrlError::InsecureHttp(_))
                ),
                "{url}"
            );
            assert_eq!(check_base_url(url, true), Ok(()), "{url}");
        }
        let e = check_base_url("http://me:hunter2@x.dev", false).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            check_base_url("ftp://x.dev", true),
            Err(BaseUrlError::Scheme(_))
        ));
        assert!(matches!(
            check_base_url("sync.trychroma.com", true),
            Err(BaseUrlError::Invalid(_))
        ));
    }

    #[test]
    fn an_answer_that_quotes_a_secret_of_the_request_is_stripped_of_it() {
        let secrets = ["AKIA-ID-1", "s3cr3t/value"];
        let quoted =
            "body {\"aws_access_key_id\":\"AKIA-ID-1\",\"aws_secret_access_key\":\"s3cr3t/value\"}";
        let api = ChromaError::Api {
            status: 400,
            error: Some("Invalid s3cr3t/value".into()),
            message: quoted.into(),
            retry_after: None,
        };
        let transport = ChromaError::Transport {
            kind: TransportKind::Other,
            message: quoted.into(),
        };
        let decode = ChromaError::Decode {
            status: 201,
            message: quoted.into(),
        };
        for e in [api, transport, decode] {
            let shown = format!("{e} {e:?}");
            let clean = e.redacting(&secrets);
            let text = format!("{clean} {clean:?}");
            assert!(shown.contains("s3cr3t"), "the case quotes it");
            assert!(
                !text.contains("s3cr3t") && !text.contains("AKIA-ID-1"),
                "{text}"
            );
            assert!(text.contains("<redacted>"), "{text}");
        }
        // Nothing to strip: the error is as it was (an empty value strips nothing).
        let plain = ChromaError::Decode {
            status: 201,
            message: "m".into(),
        };
        assert_eq!(plain.clone().redacting(&[""]), plain);
    }

    #[test]
    fn urlencode_escapes_reserved_bytes() {
        assert_eq!(urlencode("my db/ü"), "my%20db%2F%C3%BC");
        assert_eq!(urlencode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
