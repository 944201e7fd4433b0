//! Pure decisions: how a failed Chroma call shows in status and when to try again.

use super::Reason;
use super::status::State;
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

/// What a failed call means for the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub state: State,
    pub retry: Retry,
    /// True when the call certainly did not create anything, so a create-pending mark can be
    /// cleared. False when a create may have happened (a 5xx, a timeout, a lost answer).
    pub nothing_created: bool,
}

/// Sorts a failed call. `action` names what was tried, for the message.
pub fn classify(action: &str, error: &ChromaError) -> Failure {
    let last_error = |status: Option<u16>, error: Option<&String>, message: &str| LastError {
        http_status: status,
        error: error.cloned(),
        message: message.to_owned(),
    };
    match error {
        ChromaError::Api {
            status,
            error,
            message,
            retry_after,
        } => {
            let recorded = Some(last_error(Some(*status), error.as_ref(), message));
            let text = format!("{action}: Chroma Sync answered {status}: {message}");
            let stalled = |reason| State::Stalled {
                reason,
                message: text.clone(),
                error: recorded.clone(),
            };
            let reconciling = |reason| State::Reconciling {
                reason,
                message: text.clone(),
                error: recorded.clone(),
            };
            let (state, retry, nothing_created) = match status {
                400 | 405..=408 | 410..=428 | 430..=499 => {
                    (stalled(Reason::InvalidSpec), Retry::OnChange, true)
                }
                401 => (stalled(Reason::Unauthorized), Retry::Slow, true),
                403 => (stalled(Reason::Forbidden), Retry::Slow, true),
                404 => (reconciling(Reason::DatabaseNotFound), Retry::Slow, true),
                409 => (stalled(Reason::SourceExists), Retry::OnChange, true),
                429 => (
                    reconciling(Reason::RateLimited),
                    Retry::Soon {
                        not_before: *retry_after,
                    },
                    true,
                ),
                _ => (
                    reconciling(Reason::ServerError),
                    Retry::Soon {
                        not_before: *retry_after,
                    },
                    false,
                ),
            };
            Failure {
                state,
                retry,
                nothing_created,
            }
        }
        ChromaError::Transport { kind, message } => {
            let (reason, nothing_created) = match kind {
                TransportKind::Timeout => (Reason::Timeout, false),
                // The request never left: the connection was not made.
                TransportKind::Connect => (Reason::ConnectionFailed, true),
                TransportKind::Other => (Reason::ConnectionFailed, false),
            };
            Failure {
                state: State::Reconciling {
                    reason,
                    message: format!("{action}: {kind}: {message}"),
                    error: Some(last_error(None, None, message)),
                },
                retry: Retry::Soon { not_before: None },
                nothing_created,
            }
        }
        ChromaError::Decode { status, message } => Failure {
            state: State::Reconciling {
                reason: Reason::InvalidResponse,
                message: format!("{action}: unreadable answer ({status}): {message}"),
                error: Some(last_error(Some(*status), None, message)),
            },
            retry: Retry::Soon { not_before: None },
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
    fn the_reason_table() {
        let cases = [
            (400, Reason::InvalidSpec, Retry::OnChange, true),
            (401, Reason::Unauthorized, Retry::Slow, true),
            (403, Reason::Forbidden, Retry::Slow, true),
            (404, Reason::DatabaseNotFound, Retry::Slow, true),
            (409, Reason::SourceExists, Retry::OnChange, true),
            (
                429,
                Reason::RateLimited,
                Retry::Soon { not_before: None },
                true,
            ),
            (
                500,
                Reason::ServerError,
                Retry::Soon { not_before: None },
                false,
            ),
            (
                503,
                Reason::ServerError,
                Retry::Soon { not_before: None },
                false,
            ),
        ];
        for (status, reason, retry, nothing_created) in cases {
            let f = classify("create", &api(status, None));
            assert_eq!(f.state.reason(), reason, "{status}");
            assert_eq!(f.retry, retry, "{status}");
            assert_eq!(f.nothing_created, nothing_created, "{status}");
        }
    }

    #[test]
    fn stalled_and_reconciling_are_where_the_issue_puts_them() {
        assert!(matches!(
            classify("c", &api(409, None)).state,
            State::Stalled { .. }
        ));
        assert!(matches!(
            classify("c", &api(404, None)).state,
            State::Reconciling { .. }
        ));
        let t = ChromaError::Transport {
            kind: TransportKind::Timeout,
            message: "slow".into(),
        };
        let f = classify("c", &t);
        assert_eq!(f.state.reason(), Reason::Timeout);
        assert!(!f.nothing_created, "a timed-out create may have happened");
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
