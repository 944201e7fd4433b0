//! Pure decisions shared by every kind: what class of failure a Chroma call met, whether it
//! can have created anything, and when to try again.

use crate::chroma::{ChromaError, TransportKind};
use crate::crd::LastError;
use std::time::Duration;

/// When the next attempt happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only when the object (or its Secret) changes.
    OnChange,
    /// On the long backoff: the cause is outside the operator, but may go away by itself.
    Slow,
    /// On the short exponential backoff, not before the service's `Retry-After`.
    Soon { not_before: Option<Duration> },
}

/// What kind of "no" a call met. Every kind of resource sorts a failed call the same way
/// ([`classify`]) and names each class with a reason of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 400 and the other 4xx not listed: the request itself is wrong.
    Invalid,
    /// 401: the token is not accepted.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden,
    /// 404: what the call names (a database, a source) does not exist.
    NotFound,
    /// 409: the thing exists already.
    Conflict,
    /// 429: slow down.
    RateLimited,
    /// 5xx.
    ServerError,
    /// No answer in time.
    Timeout,
    /// No connection, or one that broke.
    ConnectionFailed,
    /// An answer that could not be read.
    InvalidResponse,
}

impl Class {
    /// Only a person can change the outcome (a spec, a token, a conflicting source): Stalled.
    /// Otherwise the operator tries again by itself: Reconciling.
    pub fn needs_a_person(self) -> bool {
        matches!(
            self,
            Class::Invalid | Class::Unauthorized | Class::Forbidden | Class::Conflict
        )
    }
}

/// A failed call, sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: Class,
    /// What was tried and what came back, for status and Events.
    pub message: String,
    /// The service's answer, for `status.lastError`.
    pub error: LastError,
    pub retry: Retry,
    /// True when the call certainly did not create anything, so a create-pending mark can be
    /// cleared. False when a create may have happened (a 5xx, a timeout, a lost answer).
    pub nothing_created: bool,
}

/// Sorts a failed call. `action` names what was tried, for the message.
pub fn classify(action: &str, error: &ChromaError) -> Failure {
    let soon = |not_before| Retry::Soon { not_before };
    match error {
        ChromaError::Api {
            status,
            error,
            message,
            retry_after,
        } => {
            let (class, retry, nothing_created) = match status {
                400 | 405..=408 | 410..=428 | 430..=499 => (Class::Invalid, Retry::OnChange, true),
                401 => (Class::Unauthorized, Retry::Slow, true),
                403 => (Class::Forbidden, Retry::Slow, true),
                404 => (Class::NotFound, Retry::Slow, true),
                409 => (Class::Conflict, Retry::OnChange, true),
                429 => (Class::RateLimited, soon(*retry_after), true),
                _ => (Class::ServerError, soon(*retry_after), false),
            };
            Failure {
                class,
                message: format!("{action}: Chroma Sync answered {status}: {message}"),
                error: LastError {
                    http_status: Some(*status),
                    error: error.clone(),
                    message: message.clone(),
                },
                retry,
                nothing_created,
            }
        }
        ChromaError::Transport { kind, message } => {
            let (class, nothing_created) = match kind {
                TransportKind::Timeout => (Class::Timeout, false),
                // The request never left: the connection was not made.
                TransportKind::Connect => (Class::ConnectionFailed, true),
                TransportKind::Other => (Class::ConnectionFailed, false),
            };
            Failure {
                class,
                message: format!("{action}: {kind}: {message}"),
                error: LastError {
                    http_status: None,
                    error: None,
                    message: message.clone(),
                },
                retry: soon(None),
                nothing_created,
            }
        }
        ChromaError::Decode { status, message } => Failure {
            class: Class::InvalidResponse,
            message: format!("{action}: unreadable answer ({status}): {message}"),
            error: LastError {
                http_status: Some(*status),
                error: None,
                message: message.clone(),
            },
            retry: soon(None),
            nothing_created: false,
        },
    }
}

/// Backoff bounds.
pub const SOON_BASE: Duration = Duration::from_secs(1);
pub const SOON_MAX: Duration = Duration::from_secs(300);
pub const SLOW_BASE: Duration = Duration::from_secs(60);
pub const SLOW_MAX: Duration = Duration::from_secs(1800);

/// Exponential backoff for the `attempt`-th consecutive failure (1-based), scaled by `jitter`
/// (a factor drawn from 0.8..1.2 by the caller), never before `not_before`.
pub fn backoff(retry: Retry, attempt: u32, jitter: f64) -> Option<Duration> {
    let (base, max, not_before) = match retry {
        Retry::OnChange => return None,
        Retry::Slow => (SLOW_BASE, SLOW_MAX, None),
        Retry::Soon { not_before } => (SOON_BASE, SOON_MAX, not_before),
    };
    let exp = attempt.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1u32 << exp).min(max).mul_f64(jitter);
    Some(not_before.map_or(delay, |n| delay.max(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, retry_after: Option<u64>) -> ChromaError {
        ChromaError::Api {
            status,
            error: Some("E".into()),
            message: "m".into(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_class_table() {
        let soon = Retry::Soon { not_before: None };
        let cases = [
            (400, Class::Invalid, Retry::OnChange, true),
            (422, Class::Invalid, Retry::OnChange, true),
            (401, Class::Unauthorized, Retry::Slow, true),
            (403, Class::Forbidden, Retry::Slow, true),
            (404, Class::NotFound, Retry::Slow, true),
            (409, Class::Conflict, Retry::OnChange, true),
            (429, Class::RateLimited, soon, true),
            (500, Class::ServerError, soon, false),
            (503, Class::ServerError, soon, false),
        ];
        for (status, class, retry, nothing_created) in cases {
            let f = classify("create", &api(status, None));
            assert_eq!(f.class, class, "{status}");
            assert_eq!(f.retry, retry, "{status}");
            assert_eq!(f.nothing_created, nothing_created, "{status}");
            assert_eq!(f.error.http_status, Some(status));
        }
        let person = [409, 400, 401, 403].map(|s| classify("c", &api(s, None)).class);
        assert!(person.iter().all(|c| c.needs_a_person()));
        let by_itself = [404, 429, 500].map(|s| classify("c", &api(s, None)).class);
        assert!(by_itself.iter().all(|c| !c.needs_a_person()));
    }

    #[test]
    fn transport_failures_say_whether_a_create_may_have_happened() {
        let t = |kind| ChromaError::Transport {
            kind,
            message: "slow".into(),
        };
        let timeout = classify("c", &t(TransportKind::Timeout));
        assert_eq!(timeout.class, Class::Timeout);
        assert!(
            !timeout.nothing_created,
            "a timed-out create may have happened"
        );
        let refused = classify("c", &t(TransportKind::Connect));
        assert_eq!(refused.class, Class::ConnectionFailed);
        assert!(refused.nothing_created, "the request never left");
        let garbled = ChromaError::Decode {
            status: 201,
            message: "eof".into(),
        };
        assert!(!classify("c", &garbled).nothing_created);
    }

    #[test]
    fn retry_after_is_honoured_and_backoff_grows_to_a_cap() {
        let f = classify("c", &api(429, Some(30)));
        assert_eq!(backoff(f.retry, 1, 1.0), Some(Duration::from_secs(30)));
        let soon = Retry::Soon { not_before: None };
        assert_eq!(backoff(soon, 1, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(backoff(soon, 4, 1.0), Some(Duration::from_secs(8)));
        assert_eq!(backoff(soon, 40, 1.0), Some(SOON_MAX));
        assert_eq!(backoff(Retry::Slow, 1, 1.0), Some(SLOW_BASE));
        assert_eq!(backoff(Retry::OnChange, 3, 1.0), None);
        assert_eq!(backoff(soon, 2, 1.2), Some(Duration::from_millis(2400)));
    }
}
