//! What a connection check's outcome means: the pure decision, apart from its IO.

use super::Reason;
use crate::chroma::ChromaError;
use crate::crd::connection::ConnectionStatus;
use crate::kernel::conditions::{READY, RECONCILING, STALLED, condition};
use crate::kernel::failure::{Class, classify};
use std::time::Duration;

/// A connection's `limits` over the operator's own (a limit the connection leaves unset keeps the
/// operator's flag).
pub fn apply_limits(
    into: &mut crate::chroma::limit::Limits,
    from: &crate::crd::connection::Limits,
) {
    if let Some(rate) = from.calls_per_second {
        into.calls_per_second = Some(f64::from(rate));
    }
    if let Some(burst) = from.burst {
        into.burst = u32::try_from(burst).unwrap_or(1).max(1);
    }
    if let Some(in_flight) = from.calls_in_flight {
        into.in_flight = usize::try_from(in_flight).unwrap_or(1).max(1);
    }
}

/// Failures that may pass by themselves that a Ready connection rides out before it says so.
pub const TRANSIENT_FAILURES_TOLERATED: u32 = 2;

/// `outcome` after `failures` consecutive transient failures of a connection that `was_ready`:
/// kept quiet (status as it was, checked again soon) while the tolerance lasts. Returns the
/// count for next time.
pub fn damped(outcome: Outcome, was_ready: bool, failures: u32) -> (Outcome, u32) {
    let transient = !outcome.ready && !outcome.stalled;
    if !transient {
        return (outcome, 0);
    }
    let failures = failures + 1;
    if was_ready && failures <= TRANSIENT_FAILURES_TOLERATED {
        let quiet = Outcome {
            keep_status: true,
            ..outcome
        };
        return (quiet, failures);
    }
    (outcome, failures)
}

/// How soon a connection that failed for a reason that may pass is checked again.
pub const RETRY_SOON: Duration = Duration::from_secs(15);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ready: bool,
    /// A person must act (else the operator tries again by itself).
    pub stalled: bool,
    pub reason: Reason,
    pub message: String,
    /// The status says what it said: a 429 on the check is about the limit, not the connection.
    pub keep_status: bool,
}

impl Outcome {
    pub fn stalled(reason: Reason, message: String) -> Self {
        Self {
            ready: false,
            stalled: true,
            reason,
            message,
            keep_status: false,
        }
    }

    pub fn waiting(reason: Reason, message: String) -> Self {
        Self {
            stalled: false,
            ..Self::stalled(reason, message)
        }
    }

    /// When to check again: a Ready or stalled connection at the interval (a stalled one's
    /// Secret wakes it sooner), one that may pass by itself soon.
    pub fn again_in(&self, interval: Duration) -> Duration {
        if self.ready || self.stalled {
            interval
        } else {
            RETRY_SOON.min(interval)
        }
    }
}

/// The status that says what a check found at `generation`: `Ready` always, `Reconciling` or
/// `Stalled` only while true (as every kind of the operator writes them).
pub fn status_of(
    previous: &ConnectionStatus,
    generation: i64,
    outcome: &Outcome,
    now: jiff::Timestamp,
) -> ConnectionStatus {
    let at = (generation, now);
    let (reason, message) = (outcome.reason.as_str(), outcome.message.as_str());
    let was = &previous.conditions;
    let mut conditions = vec![condition(was, READY, outcome.ready, reason, message, at)];
    if !outcome.ready {
        let abnormal = if outcome.stalled {
            STALLED
        } else {
            RECONCILING
        };
        conditions.push(condition(was, abnormal, true, reason, message, at));
    }
    ConnectionStatus {
        observed_generation: Some(generation),
        conditions,
    }
}

/// What the authenticated call's result says about the connection to `url`.
pub fn outcome_of(url: &str, result: Result<(), ChromaError>) -> Outcome {
    let error = match result {
        Ok(()) => {
            return Outcome {
                ready: true,
                stalled: false,
                reason: Reason::Connected,
                message: format!("an authenticated call to {url} succeeded"),
                keep_status: false,
            };
        }
        Err(error) => error,
    };
    let failure = classify("checking the connection", &error);
    let message = failure.message;
    match failure.class {
        Class::Unauthorized => Outcome::stalled(Reason::Unauthorized, message),
        Class::Forbidden => Outcome::stalled(Reason::Forbidden, message),
        // The path is the published one: a 404 or 4xx means the URL is not Chroma Sync's.
        Class::Invalid | Class::NotFound | Class::Conflict => {
            Outcome::stalled(Reason::InvalidUrl, message)
        }
        Class::RateLimited => Outcome {
            keep_status: true,
            ..Outcome::waiting(Reason::RateLimited, message)
        },
        Class::ServerError => Outcome::waiting(Reason::ServerError, message),
        Class::Timeout => Outcome::waiting(Reason::Timeout, message),
        Class::ConnectionFailed if is_tls(&message) => Outcome::stalled(Reason::TlsFailed, message),
        Class::ConnectionFailed => Outcome::waiting(Reason::Unreachable, message),
        Class::InvalidResponse => Outcome::waiting(Reason::InvalidResponse, message),
    }
}

/// Whether a transport error is about TLS (a certificate the operator does not trust, a
/// handshake refused): a person must fix the CA bundle or the URL.
fn is_tls(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|word| message.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::TransportKind;

    fn api(status: u16) -> ChromaError {
        ChromaError::Api {
            status,
            error: None,
            message: "no".into(),
            retry_after: None,
        }
    }

    #[test]
    fn every_answer_names_its_reason() {
        let url = "https://sync.example";
        let ok = outcome_of(url, Ok(()));
        assert!(ok.ready && !ok.stalled);
        assert_eq!(ok.reason, Reason::Connected);
        let cases = [
            (api(401), Reason::Unauthorized, true),
            (api(403), Reason::Forbidden, true),
            (api(404), Reason::InvalidUrl, true),
            (api(503), Reason::ServerError, false),
            (api(429), Reason::RateLimited, false),
        ];
        for (error, reason, stalled) in cases {
            let outcome = outcome_of(url, Err(error));
            assert_eq!((outcome.reason, outcome.stalled), (reason, stalled));
            assert!(!outcome.ready);
        }
        let refused = ChromaError::Transport {
            kind: TransportKind::Connect,
            message: "connection refused".into(),
        };
        assert_eq!(outcome_of(url, Err(refused)).reason, Reason::Unreachable);
        let untrusted = ChromaError::Transport {
            kind: TransportKind::Connect,
            message: "invalid peer certificate: UnknownIssuer".into(),
        };
        let tls = outcome_of(url, Err(untrusted));
        assert_eq!((tls.reason, tls.stalled), (Reason::TlsFailed, true));
    }

    #[test]
    fn a_ready_connection_rides_out_two_transient_failures_not_a_refusal() {
        let down = || outcome_of("https://x", Err(api(503)));
        let (first, n) = damped(down(), true, 0);
        assert!(first.keep_status && n == 1);
        let (second, n) = damped(down(), true, n);
        assert!(second.keep_status && n == 2);
        let (third, n) = damped(down(), true, n);
        assert!(!third.keep_status && n == 3, "the third says so");
        let (not_ready_before, _) = damped(down(), false, 0);
        assert!(!not_ready_before.keep_status);
        let (refused, n) = damped(outcome_of("https://x", Err(api(401))), true, 1);
        assert!(!refused.keep_status && n == 0, "a refusal is said at once");
        let (ok, n) = damped(outcome_of("https://x", Ok(())), true, 2);
        assert!(ok.ready && n == 0);
    }

    #[test]
    fn a_connections_limits_replace_only_what_it_sets() {
        let mut limits = crate::chroma::limit::Limits {
            calls_per_second: None,
            burst: 1,
            in_flight: 16,
        };
        let declared = crate::crd::connection::Limits {
            calls_per_second: Some(20),
            burst: None,
            calls_in_flight: Some(4),
        };
        apply_limits(&mut limits, &declared);
        assert_eq!(limits.calls_per_second, Some(20.0));
        assert_eq!((limits.burst, limits.in_flight), (1, 4));
    }

    #[test]
    fn a_429_keeps_the_status_and_a_stall_waits_for_the_interval() {
        let limited = outcome_of("https://x", Err(api(429)));
        assert!(limited.keep_status);
        let interval = Duration::from_secs(300);
        assert_eq!(limited.again_in(interval), RETRY_SOON);
        let refused = outcome_of("https://x", Err(api(401)));
        assert_eq!(refused.again_in(interval), interval);
        assert_eq!(outcome_of("https://x", Ok(())).again_in(interval), interval);
    }
}
