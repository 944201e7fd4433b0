//! Pure status decisions: what a reconcile's outcome looks like in `status`, in the shape
//! kstatus (Flux, Helm 4), Argo CD health scripts and people read.
//!
//! `Ready` is always present. `Reconciling` and `Stalled` appear only while true (the
//! "abnormal-true" convention), so an object that is neither reads cleanly.

use crate::crd::{LastError, SyncSourceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Stable reasons (CamelCase) shown in conditions, events and metrics.
pub mod reason {
    pub const SOURCE_READY: &str = "SourceReady";
    pub const SOURCE_EXISTS: &str = "SourceExists";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const DATABASE_NOT_FOUND: &str = "DatabaseNotFound";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const SERVER_ERROR: &str = "ServerError";
    pub const TIMEOUT: &str = "Timeout";
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
    pub const INVALID_RESPONSE: &str = "InvalidResponse";
    pub const MISSING_CREDENTIALS: &str = "MissingCredentials";
    pub const REPLACING: &str = "Replacing";
}

/// Where an object stands after a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The source exists and matches the spec.
    Ready,
    /// Work, or a retryable error, is in progress; the operator will try again by itself.
    Reconciling {
        reason: &'static str,
        message: String,
        error: Option<LastError>,
    },
    /// The operator cannot go on until a person changes something.
    Stalled {
        reason: &'static str,
        message: String,
        error: Option<LastError>,
    },
}

impl State {
    pub fn reason(&self) -> &'static str {
        match self {
            State::Ready => reason::SOURCE_READY,
            State::Reconciling { reason, .. } | State::Stalled { reason, .. } => reason,
        }
    }
}

/// The recorded source: its id and the fingerprint of the payload it was created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: String,
    pub payload_hash: Option<String>,
}

impl Recorded {
    pub fn of(status: &SyncSourceStatus) -> Option<Self> {
        status.source_id.as_ref().map(|id| Self {
            id: id.clone(),
            payload_hash: status.payload_hash.clone(),
        })
    }
}

/// The status to write for `state` at `generation`. Conditions keep their
/// `lastTransitionTime` unless their status flips, so an unchanged outcome yields a status equal
/// to `previous`, and the caller writes nothing.
pub fn next(
    previous: &SyncSourceStatus,
    generation: i64,
    source: Option<&Recorded>,
    state: &State,
    now: jiff::Timestamp,
) -> SyncSourceStatus {
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: Some(generation),
            last_transition_time,
        }
    };
    let (conditions, last_error) = match state {
        State::Ready => {
            let id = source.map(|s| s.id.as_str()).unwrap_or_default();
            let message = format!("Chroma source {id} matches the spec");
            (
                vec![condition(READY, true, reason::SOURCE_READY, &message)],
                None,
            )
        }
        State::Reconciling {
            reason,
            message,
            error,
        }
        | State::Stalled {
            reason,
            message,
            error,
        } => {
            let abnormal = if matches!(state, State::Stalled { .. }) {
                STALLED
            } else {
                RECONCILING
            };
            (
                vec![
                    condition(READY, false, reason, message),
                    condition(abnormal, true, reason, message),
                ],
                error.clone(),
            )
        }
    };
    SyncSourceStatus {
        observed_generation: Some(generation),
        source_id: source.map(|s| s.id.clone()),
        payload_hash: source.and_then(|s| s.payload_hash.clone()),
        conditions,
        last_error,
    }
}

/// A JSON merge patch that makes the stored status equal `status`: fields that are unset are
/// sent as `null`, so they are removed rather than left behind.
pub fn merge_patch(status: &SyncSourceStatus) -> Value {
    json!({
        "status": {
            "observedGeneration": status.observed_generation,
            "sourceId": status.source_id,
            "payloadHash": status.payload_hash,
            "conditions": status.conditions,
            "lastError": status.last_error,
        }
    })
}

/// The `Ready` condition's reason, if any.
pub fn ready_reason(status: Option<&SyncSourceStatus>) -> Option<&str> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn stalled() -> State {
        State::Stalled {
            reason: reason::SOURCE_EXISTS,
            message: "Source exists".into(),
            error: Some(LastError {
                http_status: Some(409),
                error: Some("Conflict".into()),
                message: "Source exists".into(),
            }),
        }
    }

    #[test]
    fn ready_has_only_a_true_ready_condition_and_no_error() {
        let rec = Recorded {
            id: "abc".into(),
            payload_hash: Some("h".into()),
        };
        let s = next(&Default::default(), 3, Some(&rec), &State::Ready, t(10));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.source_id.as_deref(), Some("abc"));
        assert_eq!(s.payload_hash.as_deref(), Some("h"));
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, READY);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].observed_generation, Some(3));
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true_with_the_error() {
        let s = next(&Default::default(), 1, None, &stalled(), t(10));
        let types: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("Ready", "False", "SourceExists"),
                ("Stalled", "True", "SourceExists")
            ]
        );
        assert_eq!(s.last_error.unwrap().http_status, Some(409));
    }

    #[test]
    fn an_unchanged_outcome_is_idempotent() {
        let first = next(&Default::default(), 1, None, &stalled(), t(10));
        let again = next(&first, 1, None, &stalled(), t(99));
        assert_eq!(first, again, "same outcome later must not produce a write");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = next(&Default::default(), 1, None, &stalled(), t(10));
        let rec = Recorded {
            id: "x".into(),
            payload_hash: None,
        };
        let ready = next(&first, 2, Some(&rec), &State::Ready, t(20));
        assert_eq!(ready.conditions[0].last_transition_time, Time(t(20)));
        let retry = State::Reconciling {
            reason: reason::SERVER_ERROR,
            message: "boom".into(),
            error: None,
        };
        let a = next(&first, 1, None, &retry, t(30));
        // Ready stayed False: its transition time is kept even though the reason changed.
        assert_eq!(a.conditions[0].last_transition_time, Time(t(10)));
        assert_eq!(a.conditions[0].reason, reason::SERVER_ERROR);
    }

    #[test]
    fn merge_patch_nulls_what_is_unset() {
        let s = next(&Default::default(), 1, None, &stalled(), t(1));
        let p = merge_patch(&s);
        assert_eq!(p["status"]["sourceId"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("sourceId"));
        assert_eq!(p["status"]["lastError"]["httpStatus"], json!(409));
    }
}
