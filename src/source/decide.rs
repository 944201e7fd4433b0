//! Pure: what a failed call (sorted by the kernel into a [`Class`]) means for a SyncSource's
//! status.

use super::Reason;
use super::status::State;
use crate::kernel::failure::{Class, Failure};

/// The reason a SyncSource gives for each class of failure.
pub fn reason_of(class: Class) -> Reason {
    match class {
        Class::Invalid => Reason::InvalidSpec,
        Class::Unauthorized => Reason::Unauthorized,
        Class::Forbidden => Reason::Forbidden,
        Class::NotFound => Reason::DatabaseNotFound,
        Class::Conflict => Reason::SourceExists,
        Class::RateLimited => Reason::RateLimited,
        Class::ServerError => Reason::ServerError,
        Class::Timeout => Reason::Timeout,
        Class::ConnectionFailed => Reason::ConnectionFailed,
        Class::InvalidResponse => Reason::InvalidResponse,
    }
}

/// The state a failure leaves the object in: Stalled when only a person can change the
/// outcome, Reconciling while the operator tries again by itself.
pub fn state_of(failure: Failure) -> State {
    let reason = reason_of(failure.class);
    let (message, error) = (failure.message, Some(failure.error));
    if failure.class.needs_a_person() {
        State::Stalled {
            reason,
            message,
            error,
        }
    } else {
        State::Reconciling {
            reason,
            message,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::ChromaError;
    use crate::kernel::failure::classify;

    fn answered(status: u16) -> State {
        let e = ChromaError::Api {
            status,
            error: Some("E".into()),
            message: "m".into(),
            retry_after: None,
        };
        state_of(classify("creating the source", &e))
    }

    #[test]
    fn the_reason_table() {
        let stalled = [
            (400, Reason::InvalidSpec),
            (401, Reason::Unauthorized),
            (403, Reason::Forbidden),
            (409, Reason::SourceExists),
        ];
        for (status, reason) in stalled {
            let state = answered(status);
            assert!(matches!(state, State::Stalled { .. }), "{status}");
            assert_eq!(state.reason(), reason, "{status}");
        }
        let reconciling = [
            (404, Reason::DatabaseNotFound),
            (429, Reason::RateLimited),
            (500, Reason::ServerError),
            (503, Reason::ServerError),
        ];
        for (status, reason) in reconciling {
            let state = answered(status);
            assert!(matches!(state, State::Reconciling { .. }), "{status}");
            assert_eq!(state.reason(), reason, "{status}");
        }
        match answered(409) {
            State::Stalled { message, error, .. } => {
                assert_eq!(message, "creating the source: Chroma Sync answered 409: m");
                assert_eq!(error.and_then(|e| e.http_status), Some(409));
            }
            other => panic!("{other:?}"),
        }
    }
}
