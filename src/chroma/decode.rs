//! Pure decoding of the service's answers: status, headers and body bytes in, a value or a typed
//! [`ChromaError`] out. Kept apart from the IO in [`super::ChromaClient`] so that it can be
//! fuzzed (`tests/decode.rs`): whatever bytes arrive, decoding returns, it never panics.

use super::ChromaError;
use super::wire::{
    CreateJobResponse, CreateSourceResponse, ErrorResponse, Job, JobStatus, ListedSource,
};
use reqwest::StatusCode;
use std::time::Duration;

/// The longest service-supplied error message kept, in bytes. It ends up in `status.lastError`,
/// conditions and Events; an unbounded one (a proxy's error page as JSON, say) could make the
/// status write itself fail.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The answer to `POST /api/v1/sources`: the new source's id.
pub fn created(status: u16, body: &[u8]) -> Result<String, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    if status != 201 && status != 200 {
        return Err(decode_error("expected 201 Created".into()));
    }
    let id = serde_json::from_slice::<CreateSourceResponse>(body)
        .map_err(|e| decode_error(e.to_string()))?
        .source_id;
    // An empty id would be recorded and later deleted as `/api/v1/sources/`: treat it as the
    // unreadable answer it is (ambiguous: the create may have happened, recovery lists).
    if id.trim().is_empty() {
        return Err(decode_error("the answer has an empty source_id".into()));
    }
    Ok(id)
}

/// The answer to `GET /api/v2/auth/identity` (Chroma API): the token's tenant. An empty one
/// would make every collection path wrong: refused as unreadable.
pub fn tenant(status: u16, body: &[u8]) -> Result<String, ChromaError> {
    #[derive(serde::Deserialize)]
    struct Identity {
        tenant: String,
    }
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let tenant = serde_json::from_slice::<Identity>(body)
        .map_err(|e| decode_error(e.to_string()))?
        .tenant;
    if tenant.trim().is_empty() {
        return Err(decode_error("the identity has an empty tenant".into()));
    }
    Ok(tenant)
}

/// One page of `GET /api/v1/sources`.
pub fn listed(status: u16, body: &[u8]) -> Result<Vec<ListedSource>, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let items: Vec<ListedSource> =
        serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    // A source without an id could be adopted and then never deleted: refuse the page instead.
    if items.iter().any(|s| s.id.trim().is_empty()) {
        return Err(decode_error("a listed source has an empty id".into()));
    }
    Ok(items)
}

/// The answer to `GET /api/v1/sources/{id}`: the source as the service holds it (the create
/// payload's fields with the service's defaults filled in, plus `id` and `created_at`), kept as
/// JSON: it is compared field by field with a spec (adoption), never sent back.
pub fn source(status: u16, body: &[u8]) -> Result<serde_json::Value, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    match value.get("id").and_then(|id| id.as_str()) {
        Some(id) if !id.trim().is_empty() => Ok(value),
        _ => Err(decode_error("the source has no id".into())),
    }
}

/// The answer to `POST /api/v1/sources/{id}/invocations`: the new invocation's id.
pub fn invocation_created(status: u16, body: &[u8]) -> Result<String, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    if status != 201 && status != 200 {
        return Err(decode_error("expected 201 Created".into()));
    }
    let id = serde_json::from_slice::<CreateJobResponse>(body)
        .map_err(|e| decode_error(e.to_string()))?
        .invocation_id;
    // An empty id would be polled as `/api/v1/invocations/`, the listing: an unreadable answer
    // (ambiguous: the run may exist, recovery lists).
    if id.trim().is_empty() {
        return Err(decode_error("the answer has an empty invocation_id".into()));
    }
    Ok(id)
}

/// The answer to `GET /api/v1/invocations/{id}`.
pub fn job(status: u16, body: &[u8]) -> Result<Job, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let job: Job = serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    if job.id.trim().is_empty() {
        return Err(decode_error("the invocation has an empty id".into()));
    }
    Ok(bounded(job))
}

/// One page of `GET /api/v1/invocations`: a bare array of `Job`.
pub fn jobs(status: u16, body: &[u8]) -> Result<Vec<Job>, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let items: Vec<Job> = serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    // A run without an id could be adopted and then never followed: refuse the page instead.
    if items.iter().any(|j| j.id.trim().is_empty()) {
        return Err(decode_error("a listed invocation has an empty id".into()));
    }
    Ok(items.into_iter().map(bounded).collect())
}

/// The answer to `POST /api/v1/sources/{id}/invocations/latest-by-keys`: an object from each
/// object key that has an invocation to its newest `Job` (keys without one are left out).
pub fn jobs_by_key(
    status: u16,
    body: &[u8],
) -> Result<std::collections::BTreeMap<String, Job>, ChromaError> {
    let decode_error = |message: String| ChromaError::Decode { status, message };
    let map: std::collections::BTreeMap<String, Job> =
        serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    if map.values().any(|j| j.id.trim().is_empty()) {
        return Err(decode_error("an invocation by key has an empty id".into()));
    }
    Ok(map.into_iter().map(|(k, j)| (k, bounded(j))).collect())
}

/// A job whose service-supplied texts that reach a status (a failure's message, an unknown
/// status) are at most [`MAX_MESSAGE_BYTES`].
fn bounded(mut job: Job) -> Job {
    match &mut job.status {
        JobStatus::Failed { error: text } | JobStatus::Unknown(text) => *text = truncate(text),
        _ => {}
    }
    job
}

/// The error an unsuccessful status means. The body is the service's `ErrorResponse` when it
/// decodes; otherwise (a proxy's HTML page, an empty body) the status's reason phrase stands in.
pub fn error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ChromaError {
    let parsed = serde_json::from_slice::<ErrorResponse>(body).ok();
    let fallback = || {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unexpected status")
            .to_owned()
    };
    ChromaError::Api {
        status,
        error: parsed.as_ref().map(|e| truncate(&e.error)),
        message: parsed
            .map(|e| truncate(&e.message))
            .unwrap_or_else(fallback),
        retry_after,
    }
}

/// The longest `Retry-After` honoured. A larger value (a misconfigured proxy's, say) would park
/// the object for months; past this the operator asks again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` in delay-seconds, at most [`MAX_RETRY_AFTER`]; the HTTP-date form is ignored
/// (the service sends seconds).
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// At most [`MAX_MESSAGE_BYTES`], cut at a character boundary, marked when cut.
fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let body = serde_json::json!({"error": "E", "message": long}).to_string();
        let ChromaError::Api { message, .. } = error(500, None, body.as_bytes()) else {
            unreachable!()
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn empty_ids_are_unreadable_answers() {
        assert!(matches!(
            created(201, br#"{"source_id": " "}"#),
            Err(ChromaError::Decode { status: 201, .. })
        ));
        assert!(matches!(
            listed(200, br#"[{"id": ""}]"#),
            Err(ChromaError::Decode { status: 200, .. })
        ));
        assert_eq!(created(201, br#"{"source_id": "a"}"#), Ok("a".to_owned()));
    }

    #[test]
    fn invocation_answers_refuse_empty_ids_and_bound_messages() {
        assert_eq!(
            invocation_created(201, br#"{"invocation_id": "i"}"#),
            Ok("i".to_owned())
        );
        for (status, body) in [
            (201, &br#"{"invocation_id": ""}"#[..]),
            (201, br#"{"source_id": "s"}"#),
            (202, br#"{"invocation_id": "i"}"#),
        ] {
            assert!(matches!(
                invocation_created(status, body),
                Err(ChromaError::Decode { status: s, .. }) if s == status
            ));
        }
        assert!(matches!(
            job(200, br#"{"id": " ", "status": "pending"}"#),
            Err(ChromaError::Decode { status: 200, .. })
        ));
        assert!(matches!(
            jobs(
                200,
                br#"[{"id": "a", "status": "pending"}, {"id": "", "status": "pending"}]"#
            ),
            Err(ChromaError::Decode { status: 200, .. })
        ));
        let long = "x".repeat(10 * MAX_MESSAGE_BYTES);
        for status in [json!({"failed": {"error": long}}), json!(long)] {
            let body = json!({"id": "a", "status": status}).to_string();
            let (JobStatus::Failed { error: text } | JobStatus::Unknown(text)) =
                job(200, body.as_bytes()).unwrap().status
            else {
                unreachable!()
            };
            assert!(text.len() <= MAX_MESSAGE_BYTES && text.ends_with('…'));
            let page = format!("[{body}]");
            let listed = jobs(200, page.as_bytes()).unwrap();
            assert_eq!(listed[0].status, job(200, body.as_bytes()).unwrap().status);
        }
    }

    #[test]
    fn an_unknown_status_has_a_fallback_reason() {
        let ChromaError::Api { message, error, .. } = error(42, None, b"<html>") else {
            unreachable!()
        };
        assert_eq!((message.as_str(), error), ("unexpected status", None));
        assert_eq!(retry_after(b" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(b"99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
